//! `st-peter-telepact`: fill the local roles table, resolving people through st-peter's
//! `LookupUser`. The same code runs as the Rust binary and as the Python console script.
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use st_peter_client::{Client, LoginOutcome, User};

use crate::api_key::{API_KEY_ENV, api_key_from_env};
use crate::roles::{IdentityHeaders, RolesStore};

/// The actor's token comes from here only: arguments are visible to every user of the host.
/// So does a service account's API key ([`API_KEY_ENV`]).
pub const ACTOR_TOKEN_ENV: &str = "ST_PETER_ACTOR_TOKEN";

/// The platform role a service account needs to look users up.
const LOOKUP_ROLE: &str = "st-peter:lookup";

#[derive(Debug, Parser)]
#[command(
    name = "st-peter-telepact",
    version,
    about = "Manage the local identity headers a Telepact server gets from st-peter."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Give a user identity headers (replaces their whole row). The user is looked up in
    /// st-peter by a person (--actor-id, token in ST_PETER_ACTOR_TOKEN) or, without
    /// --actor-id, by the service account whose API key is in ST_PETER_API_KEY (it needs
    /// the role st-peter:lookup).
    Grant(Grant),
    /// Remove a user's row; their requests are refused from then on.
    Revoke(Revoke),
    /// Show every row of the roles table.
    List(RolesDb),
    /// Log in to st-peter and print the session token (the password is read from stdin),
    /// e.g. to get the actor token for `grant`, or a token for the Session variant.
    Login(Login),
}

#[derive(Debug, Args)]
pub struct Target {
    /// st-peter's address.
    #[arg(
        long,
        env = "ST_PETER_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RolesDb {
    /// The roles SQLite file (created if missing).
    #[arg(long, env = "ST_PETER_TELEPACT_ROLES_DB")]
    pub roles_db: PathBuf,
}

#[derive(Debug, Args)]
pub struct Grant {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub roles: RolesDb,
    /// Email, handle or phone of the user to grant.
    #[arg(long)]
    pub identifier: String,
    /// A header to set, `@key=value`; repeat for several.
    #[arg(long = "set", value_name = "@KEY=VALUE", required = true, value_parser = parse_assignment)]
    pub headers: Vec<(String, String)>,
    /// The st-peter user_id of the person granting (their token: ST_PETER_ACTOR_TOKEN).
    /// Leave it out to act as the service account in ST_PETER_API_KEY.
    #[arg(long)]
    pub actor_id: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("who").required(true))]
pub struct Revoke {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub roles: RolesDb,
    /// Email, handle or phone, resolved through st-peter (as for grant: --actor-id and
    /// ST_PETER_ACTOR_TOKEN, or the service account in ST_PETER_API_KEY).
    #[arg(long, group = "who")]
    pub identifier: Option<String>,
    /// The user's st-peter user_id, as `list` shows it (no st-peter call).
    #[arg(long, group = "who")]
    pub user_id: Option<String>,
    #[arg(long)]
    pub actor_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct Login {
    #[command(flatten)]
    pub target: Target,
    /// Email, handle or phone.
    #[arg(long)]
    pub identifier: String,
    /// Read the password from the first line of standard input (the only way).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

fn parse_assignment(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not @key=value"))?;
    crate::roles::check_header_key(key).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses `argv` (program name first) and runs it; returns the process exit code.
pub async fn main_with_args<I, T>(argv: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Grant(grant) => {
            let (user, granted_by) =
                lookup(&grant.target, grant.actor_id.as_deref(), &grant.identifier).await?;
            let headers: IdentityHeaders = grant.headers.into_iter().collect();
            let store = RolesStore::open(&grant.roles.roles_db).await?;
            store
                .grant(&user.user_id, &user.handle, &headers, &granted_by)
                .await?;
            let value = serde_json::json!({
                "user_id": user.user_id, "handle": user.handle, "headers": headers,
                "granted_by": granted_by,
            });
            print(json, &value, || {
                format!(
                    "granted {} ({}): {}",
                    user.handle,
                    user.user_id,
                    show(&headers)
                )
            })
        }
        Command::Revoke(revoke) => {
            let user_id = match (revoke.user_id, revoke.identifier) {
                (Some(user_id), _) => user_id,
                (None, Some(identifier)) => {
                    lookup(&revoke.target, revoke.actor_id.as_deref(), &identifier)
                        .await?
                        .0
                        .user_id
                }
                (None, None) => bail!("give --user-id or --identifier"),
            };
            let store = RolesStore::open(&revoke.roles.roles_db).await?;
            let removed = store.revoke(&user_id).await?;
            let value = serde_json::json!({ "user_id": user_id, "revoked": removed });
            print(json, &value, || match removed {
                true => format!("revoked {user_id}"),
                false => format!("{user_id} had no row"),
            })
        }
        Command::List(roles) => {
            let store = RolesStore::open(&roles.roles_db).await?;
            let rows = store.list().await?;
            let value: serde_json::Value = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "user_id": row.user_id, "handle": row.handle, "headers": row.headers,
                        "granted_by": row.granted_by,
                    })
                })
                .collect();
            print(json, &value, || {
                rows.iter()
                    .map(|row| format!("{}\t{}\t{}", row.handle, row.user_id, show(&row.headers)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Login(login) => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let client = client(&login.target, None)?;
            match client.login(&login.identifier, password).await? {
                LoginOutcome::Authenticated(session) => {
                    let value = serde_json::json!({
                        "token": session.token, "user_id": session.user.user_id,
                    });
                    print(json, &value, || session.token.clone())
                }
                LoginOutcome::TwoFactor(_) => {
                    bail!("this user has two-factor login: finish it with another st-peter client")
                }
                LoginOutcome::Failed(failure) => bail!("login refused: {:?}", failure.reason),
            }
        }
    }
}

/// A client of `target`, acting as the service account when there is an API key.
fn client(target: &Target, api_key: Option<&str>) -> anyhow::Result<Client> {
    let mut builder = Client::builder(target.target.clone());
    if let Some(key) = api_key {
        builder = builder.api_key(key);
    }
    Ok(builder.build()?)
}

/// Resolves `identifier` through st-peter's `LookupUser` and says on whose authority (the
/// user_id recorded as `granted_by`). With `--actor-id` the person is the actor (their
/// token in [`ACTOR_TOKEN_ENV`]); a service key, if set, then only supplies the caller
/// credentials a st-peter with `--require-caller-credentials` asks for. Without it the
/// service account of [`API_KEY_ENV`] is the actor.
async fn lookup(
    target: &Target,
    actor_id: Option<&str>,
    identifier: &str,
) -> anyhow::Result<(User, String)> {
    let api_key = api_key_from_env()?;
    let client = client(target, api_key.as_deref())?;
    let looking_up = || format!("looking up {identifier:?}");
    match (actor_id, api_key) {
        (Some(actor_id), api_key) => {
            let token = actor_token()?;
            let user = client
                .lookup_user(actor_id, &token, identifier)
                .await
                .map_err(|e| explain(e, api_key.is_some(), false))
                .with_context(looking_up)?;
            Ok((user, actor_id.to_owned()))
        }
        (None, Some(_)) => {
            // Who the service is, for `granted_by`: the client's exchange, which the lookup
            // then uses too (one exchange per run).
            let service = client
                .service_account()
                .await
                .map_err(|e| explain(e, true, true))
                .with_context(|| format!("acting as the service account in {API_KEY_ENV}"))?;
            let user = client
                .lookup_user_as_service(identifier)
                .await
                .map_err(|e| explain(e, true, true))
                .with_context(|| {
                    format!(
                        "looking up {identifier:?} as the service account {}",
                        service.handle
                    )
                })?;
            Ok((user, service.user_id))
        }
        (None, None) => bail!(
            "give --actor-id (the person's token in {ACTOR_TOKEN_ENV}), or set {API_KEY_ENV} \
             to look users up as a service account"
        ),
    }
}

/// st-peter's refusals of the caller, said so that the fix is plain. `as_service`: the
/// service account is the actor (so a missing role is its own).
fn explain(error: st_peter_client::Error, with_key: bool, as_service: bool) -> anyhow::Error {
    use st_peter_client::Error as E;
    match &error {
        E::ApiKeyRejected(_) => anyhow::anyhow!(
            "st-peter rejected the API key in {API_KEY_ENV}: it is unknown, expired or revoked, \
             or its service account is disabled ({error})"
        ),
        E::PermissionDenied(why) if why.starts_with("caller credentials:") => match with_key {
            false => anyhow::anyhow!(
                "st-peter requires caller credentials: set {API_KEY_ENV} to a service \
                 account's API key ({error})"
            ),
            true => anyhow::anyhow!("st-peter refused the service account as a caller ({error})"),
        },
        E::PermissionDenied(why) if as_service && why.contains(LOOKUP_ROLE) => anyhow::anyhow!(
            "the service account may not look users up: it needs the role {LOOKUP_ROLE} \
             (st-peter user role grant SERVICE {LOOKUP_ROLE}) ({error})"
        ),
        _ => error.into(),
    }
}

fn actor_token() -> anyhow::Result<String> {
    match std::env::var(ACTOR_TOKEN_ENV) {
        Ok(token) if !token.is_empty() => Ok(token),
        _ => bail!("set {ACTOR_TOKEN_ENV} to the actor's st-peter session token"),
    }
}

fn show(headers: &IdentityHeaders) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print(
    json: bool,
    value: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{value}")?;
    } else {
        let text = text();
        if !text.is_empty() {
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}
