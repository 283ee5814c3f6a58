//! `user import`: users brought in from another system, one JSON object a line, with the
//! password hash they had there. The hash is checked as it is at login and replaced by an
//! argon2id one at the first good login (`sessions.rs`, `needs_rehash`).
//!
//! A line is validated whole (identifiers as `user add` checks them, roles, the hash's
//! format and cost bounds) before anything is written, then written in one transaction: a
//! bad line never leaves half a user. A handle that exists already is left alone, so a
//! re-run of the same file changes nothing.
use serde_json::{Map, Value};

use crate::domain::accounts::{check_display_name, check_role};
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::audit::{self, Event};
use crate::domain::identifier;
use crate::error::{Error, Result, invalid};
use crate::secrets::keycloak_credential::KeycloakCredential;
use crate::secrets::stored_hash::StoredHash;
use crate::store::NewUser;

/// The fields a line may have.
const FIELDS: [&str; 7] = [
    "handle",
    "email",
    "phone",
    "display_name",
    "roles",
    "disabled",
    "password_hash",
];
/// A line longer than this is refused unread (a Keycloak credential is well under 2 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
const MAX_ROLES: usize = 100;

/// What became of one line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    Imported {
        user: UserView,
        roles: Vec<String>,
    },
    /// A user with this handle exists: left as it is.
    AlreadyPresent {
        handle: String,
    },
}

impl StPeter {
    /// Validates one line of an import file and, if it is sound, stores its user with
    /// roles and hash in one transaction. Errors name the field; none quotes the hash.
    pub async fn import_line(&self, line: &str) -> Result<ImportOutcome> {
        if line.len() > MAX_LINE_BYTES {
            return Err(invalid(
                "line",
                format!("longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        // serde_json's syntax errors give a position, never the text.
        let object: Map<String, Value> = match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(invalid("line", "must be a JSON object")),
            Err(error) => {
                return Err(invalid("line", format!("not JSON: {error}")));
            }
        };
        if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(invalid(
                "line",
                format!("unknown field {unknown:?} (fields: {})", FIELDS.join(", ")),
            ));
        }
        let handle = match object.get("handle") {
            Some(Value::String(handle)) => identifier::normalize_handle(handle)?,
            Some(_) => return Err(invalid("handle", "must be a string")),
            None => return Err(invalid("handle", "is required")),
        };
        let email = text(&object, "email")?
            .map(identifier::normalize_email)
            .transpose()?;
        let phone = text(&object, "phone")?
            .map(identifier::normalize_phone)
            .transpose()?;
        let display_name = check_display_name(text(&object, "display_name")?.map(str::to_owned))?;
        let roles = roles(&object)?;
        let disabled = match object.get("disabled") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(disabled)) => *disabled,
            Some(_) => return Err(invalid("disabled", "must be true or false")),
        };
        let password_hash = password_hash(object.get("password_hash"))?;

        let user = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            handle,
            email,
            phone,
            display_name,
            password_hash,
            kind: UserKind::Human,
            created_at: self.now(),
        };
        if !self.store.import_user(&user, disabled, &roles).await? {
            return Ok(ImportOutcome::AlreadyPresent {
                handle: user.handle,
            });
        }
        audit::record(Event::Import, "imported", Some(&user.id), &Caller::CLI);
        let user = UserView {
            user_id: user.id,
            handle: user.handle,
            email: user.email,
            phone: user.phone,
            display_name: user.display_name,
            disabled,
            kind: user.kind,
        };
        Ok(ImportOutcome::Imported { user, roles })
    }
}

/// An optional string field.
fn text<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// Roles as `user role grant` checks them, without repeats.
fn roles(object: &Map<String, Value>) -> Result<Vec<String>> {
    let values = match object.get("roles") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(values)) => values,
        Some(_) => return Err(invalid("roles", "must be a list of strings")),
    };
    if values.len() > MAX_ROLES {
        return Err(invalid("roles", format!("at most {MAX_ROLES}")));
    }
    let mut roles = Vec::new();
    for value in values {
        let Value::String(role) = value else {
            return Err(invalid("roles", "must be a list of strings"));
        };
        let role = check_role(role).map_err(|error| match error {
            Error::InvalidArgument { reason, .. } => invalid("roles", reason),
            other => other,
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

/// The hash to store: a supported string within the bounds, or a Keycloak credential
/// turned into its equivalent; empty (no password login) when absent.
fn password_hash(value: Option<&Value>) -> Result<String> {
    let refused =
        |error: crate::secrets::stored_hash::HashError| invalid("password_hash", error.to_string());
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(stored)) => {
            StoredHash::parse(stored).map_err(refused)?;
            Ok(stored.clone())
        }
        Some(object @ Value::Object(_)) => {
            // serde's messages can quote a value: name only the shape expected.
            let credential: KeycloakCredential =
                serde_json::from_value(object.clone()).map_err(|_| {
                    invalid(
                        "password_hash",
                        "an object must be a Keycloak credential: {\"type\":\"password\", \
                         \"secretData\":\"..\",\"credentialData\":\"..\"}",
                    )
                })?;
            credential.to_stored().map_err(refused)
        }
        Some(_) => Err(invalid(
            "password_hash",
            "must be a string or a Keycloak credential object",
        )),
    }
}
