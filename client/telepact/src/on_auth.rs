//! The hook: `@auth_` in, identity headers out (or a refusal).
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use st_peter_client::{Client, LoginOutcome};

use crate::api_key::api_key_or_env;
use crate::error::{Error, Result};
use crate::roles::{RolesStore, check_header_key};

/// Telepact request headers, as JSON.
pub type Headers = serde_json::Map<String, Value>;

/// The header Telepact carries credentials in; its value is the schema's `union.Auth_`.
pub const AUTH_HEADER: &str = "@auth_";

/// A Telepact server's `on_auth` backed by st-peter and a local roles table.
///
/// On success [`OnAuth::on_auth`] returns *every* owned header: the user's value where
/// their row has one, JSON `null` where it does not. Telepact merges the result into the
/// request headers, so no client-sent value of an owned key can survive; a request that
/// carries an owned key at all is refused outright, as a forgery.
#[derive(Debug, Clone)]
pub struct OnAuth {
    client: Client,
    store: RolesStore,
    configured: BTreeSet<String>,
}

/// The credentials of one request, parsed from `@auth_`.
enum Credentials {
    Session { token: String },
    Password { username: String, password: String },
}

impl OnAuth {
    pub fn new(client: Client, store: RolesStore) -> Self {
        Self {
            client,
            store,
            configured: BTreeSet::new(),
        }
    }

    /// A client for `target` with default settings (the revocation feed on, 5 minutes
    /// subscribed, 5 s not) and the roles file at `roles_db`; for other cache settings give
    /// [`OnAuth::new`] a client of your own. Runs as a service account when
    /// [`API_KEY_ENV`](crate::API_KEY_ENV) (`ST_PETER_API_KEY`) holds its API key (see
    /// [`OnAuth::connect_with_api_key`]). Must be called inside a Tokio runtime.
    pub async fn connect(target: &str, roles_db: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with_api_key(target, roles_db, None).await
    }

    /// [`OnAuth::connect`] as the service account whose API key (`stk_...`, from
    /// `st-peter service key create`) is `api_key`; `None` reads `ST_PETER_API_KEY` (unset:
    /// no service identity). The client then exchanges the key for a short-lived token of
    /// the account, refreshes it before it expires, and sends it as the caller's
    /// credentials with every verification and the revocation feed, as a st-peter started
    /// with `--require-caller-credentials` demands. A malformed key is refused here.
    pub async fn connect_with_api_key(
        target: &str,
        roles_db: impl AsRef<Path>,
        api_key: Option<&str>,
    ) -> Result<Self> {
        let mut builder = Client::builder(target);
        if let Some(key) = api_key_or_env(api_key)? {
            builder = builder.api_key(key);
        }
        Ok(Self::new(
            builder.build()?,
            RolesStore::open(roles_db).await?,
        ))
    }

    /// Header keys the adapter owns even before any row defines them (say `@station`
    /// when no station is granted yet). Keys granted through the store are owned anyway.
    pub fn owned_headers<I, S>(mut self, keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for key in keys {
            let key = key.into();
            check_header_key(&key)?;
            self.configured.insert(key);
        }
        Ok(self)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn store(&self) -> &RolesStore {
        &self.store
    }

    /// Every header key this adapter sets: the configured ones and every key ever granted.
    /// From memory (see [`RolesStore::owned_headers`]), so it is safe to call on an event
    /// loop's thread for every request.
    pub fn owned(&self) -> BTreeSet<String> {
        let mut owned = BTreeSet::clone(&self.store.owned_headers());
        owned.extend(self.configured.iter().cloned());
        owned
    }

    /// Verifies the request's `@auth_` with st-peter and returns the identity headers of
    /// the user, or refuses. Refuses when st-peter cannot be asked (a verification cached
    /// by the client within its fallback TTL is still honoured).
    pub async fn on_auth(&self, headers: &Headers) -> Result<Headers> {
        let credentials = Credentials::parse(headers.get(AUTH_HEADER).ok_or(Error::MissingAuth)?)?;
        let owned = self.owned();
        if let Some(forged) = owned.iter().find(|key| headers.contains_key(*key)) {
            return Err(Error::ForgedHeader(forged.clone()));
        }
        let user_id = self.authenticate(credentials).await?;
        let row = self
            .store
            .headers_of(&user_id)
            .await?
            .ok_or(Error::NoIdentity { user_id })?;
        let mut identity: Headers = owned.into_iter().map(|key| (key, Value::Null)).collect();
        for (key, value) in row {
            identity.insert(key, Value::String(value));
        }
        Ok(identity)
    }

    /// The st-peter `user_id` the credentials belong to.
    async fn authenticate(&self, credentials: Credentials) -> Result<String> {
        match credentials {
            Credentials::Session { token } => {
                Ok(self.client.verify_token(&token).await?.user.user_id)
            }
            Credentials::Password { username, password } => {
                match self.client.login(&username, &password).await? {
                    LoginOutcome::Authenticated(session) => {
                        // The request is answered on this one login; the session it made is
                        // of no further use, so end it rather than leave it live for a day.
                        let client = self.client.clone();
                        tokio::spawn(async move {
                            let _ = client.logout(&session.token).await;
                        });
                        Ok(session.user.user_id)
                    }
                    LoginOutcome::TwoFactor(_) => Err(Error::TwoFactorRequired),
                    LoginOutcome::Failed(_) => Err(Error::LoginRefused),
                }
            }
        }
    }
}

impl Credentials {
    fn parse(auth: &Value) -> Result<Self> {
        let malformed = |why: &str| Error::MalformedAuth(why.to_owned());
        let union = auth
            .as_object()
            .ok_or_else(|| malformed("must be an object"))?;
        let mut variants = union.iter();
        let (Some((variant, fields)), None) = (variants.next(), variants.next()) else {
            return Err(malformed("must hold exactly one variant"));
        };
        let fields = fields
            .as_object()
            .ok_or_else(|| malformed("variant must be an object"))?;
        let field = |name: &str| -> Result<String> {
            match fields.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(Error::MalformedAuth(format!(
                    "{variant}.{name} must be a non-empty string"
                ))),
            }
        };
        match variant.as_str() {
            "Session" => Ok(Credentials::Session {
                token: field("token")?,
            }),
            "Password" => Ok(Credentials::Password {
                username: field("username")?,
                password: field("password")?,
            }),
            other => Err(Error::MalformedAuth(format!(
                "unknown variant {other:?} (expected Session or Password)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_both_variants_and_refuses_the_rest() {
        let session = Credentials::parse(&json!({"Session": {"token": "stp_x"}})).unwrap();
        assert!(matches!(session, Credentials::Session { token } if token == "stp_x"));
        let password =
            Credentials::parse(&json!({"Password": {"username": "u", "password": "p"}})).unwrap();
        assert!(
            matches!(password, Credentials::Password { username, password } if username == "u" && password == "p")
        );
        for bad in [
            json!("stp_x"),
            json!({}),
            json!({"Session": {"token": ""}}),
            json!({"Session": {"token": 7}}),
            json!({"Password": {"username": "u"}}),
            json!({"Session": {"token": "a"}, "Password": {"username": "u", "password": "p"}}),
            json!({"Bearer": {"token": "a"}}),
        ] {
            assert!(
                matches!(Credentials::parse(&bad), Err(Error::MalformedAuth(_))),
                "{bad}"
            );
        }
    }
}
