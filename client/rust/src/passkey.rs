//! Passkeys (WebAuthn): the JSON st-peter and the browser exchange, passed through as it is
//! under types of its own so that options and credentials cannot be swapped, and the
//! passkeys an account lists.
use std::fmt;
use std::time::SystemTime;

use st_peter_proto::auth::v1 as pb;

use crate::model::system_time;

/// What st-peter answers for the browser: the WebAuthn options as JSON, under a
/// `publicKey` key, binary fields base64url. [`Client::begin_passkey_login`]'s are for
/// `navigator.credentials.get`, [`Account::begin_passkey_registration`]'s for
/// `navigator.credentials.create`. Send it to the page as it is; there,
/// `JSON.parse(options).publicKey` goes to `PublicKeyCredential.parseRequestOptionsFromJSON`
/// (or `parseCreationOptionsFromJSON`) where the browser has it, or has its `challenge`,
/// `user.id` and credential ids decoded from base64url. Only st-peter's answers make one.
///
/// [`Client::begin_passkey_login`]: crate::Client::begin_passkey_login
/// [`Account::begin_passkey_registration`]: crate::Account::begin_passkey_registration
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyOptionsJson(String);

impl PasskeyOptionsJson {
    pub(crate) fn new(json: String) -> Self {
        Self(json)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for PasskeyOptionsJson {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PasskeyOptionsJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The browser's answer: the `PublicKeyCredential` that `navigator.credentials.create` or
/// `.get` resolved to, as JSON (what its `toJSON()` gives), for
/// [`Account::finish_passkey_registration`] and [`Client::finish_passkey_login`]. Made from
/// the page's JSON with [`PasskeyCredentialJson::new`] (or `From<String>`); passed through
/// unchanged: st-peter checks it, and answers [`Error::InvalidArgument`] naming
/// `credential_json` when it is malformed.
///
/// [`Client::finish_passkey_login`]: crate::Client::finish_passkey_login
/// [`Account::finish_passkey_registration`]: crate::Account::finish_passkey_registration
/// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyCredentialJson(String);

impl PasskeyCredentialJson {
    /// The credential's JSON as the page sent it.
    pub fn new(json: impl Into<String>) -> Self {
        Self(json.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for PasskeyCredentialJson {
    fn from(json: String) -> Self {
        Self(json)
    }
}

impl From<&str> for PasskeyCredentialJson {
    fn from(json: &str) -> Self {
        Self(json.to_owned())
    }
}

impl AsRef<str> for PasskeyCredentialJson {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PasskeyCredentialJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who [`Client::begin_passkey_login`](crate::Client::begin_passkey_login) is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PasskeyLogin {
    /// A discoverable sign-in: the browser offers any passkey it keeps for the site, and
    /// the passkey tells who it is.
    #[default]
    Discoverable,
    /// The user with this email, phone or handle: the options name their passkeys.
    Identifier(String),
    /// The `two_factor_id` of a login that answered
    /// [`LoginOutcome::TwoFactor`](crate::LoginOutcome::TwoFactor) with
    /// [`TwoFactorMethod::Passkey`](crate::TwoFactorMethod::Passkey) among its methods: the
    /// assertion completes that login, no password again.
    TwoFactor(String),
}

/// A passkey sign-in waiting for the browser, from
/// [`Client::begin_passkey_login`](crate::Client::begin_passkey_login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyLoginChallenge {
    /// Goes back with the browser's answer to `finish_passkey_login` (`stw_` and 43
    /// characters); single-use, it lives about two minutes.
    pub challenge_id: String,
    /// For `navigator.credentials.get`.
    pub options_json: PasskeyOptionsJson,
}

impl From<pb::BeginPasskeyLoginResponse> for PasskeyLoginChallenge {
    fn from(response: pb::BeginPasskeyLoginResponse) -> Self {
        Self {
            challenge_id: response.challenge_id,
            options_json: PasskeyOptionsJson::new(response.options_json),
        }
    }
}

/// A passkey registration waiting for the browser, from
/// [`Account::begin_passkey_registration`](crate::Account::begin_passkey_registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRegistration {
    /// Goes back with the browser's answer to `finish_passkey_registration` (`stw_` and 43
    /// characters); single-use, it lives about five minutes.
    pub registration_id: String,
    /// For `navigator.credentials.create`.
    pub options_json: PasskeyOptionsJson,
}

impl From<pb::BeginPasskeyRegistrationResponse> for PasskeyRegistration {
    fn from(response: pb::BeginPasskeyRegistrationResponse) -> Self {
        Self {
            registration_id: response.registration_id,
            options_json: PasskeyOptionsJson::new(response.options_json),
        }
    }
}

/// One of the user's passkeys, from
/// [`Account::list_passkeys`](crate::Account::list_passkeys) or
/// [`Account::finish_passkey_registration`](crate::Account::finish_passkey_registration).
/// Neither its key nor its credential id leaves st-peter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// Names the passkey for `remove_passkey`: a UUID.
    pub passkey_id: String,
    /// The name given at registration ("work laptop").
    pub name: String,
    /// When it was registered.
    pub created_at: SystemTime,
    /// When it last signed the user in; `None` when never.
    pub last_used_at: Option<SystemTime>,
}

impl From<pb::Passkey> for Passkey {
    fn from(passkey: pb::Passkey) -> Self {
        Self {
            passkey_id: passkey.passkey_id,
            name: passkey.name,
            created_at: system_time(passkey.created_at),
            last_used_at: passkey.last_used_at.map(|at| system_time(Some(at))),
        }
    }
}
