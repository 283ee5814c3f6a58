//! Audit events: one structured line per security-relevant act, on the `audit` target, with
//! the user (when known), the client address and the outcome. Never a secret: callers pass
//! ids and outcomes only, and this module has no parameter that could carry a password,
//! token or code.
use crate::domain::app::Caller;

/// What happened.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Login,
    TwoFactor,
    Logout,
    Revoke,
    Lookup,
    /// A password set by its user (with the current one) or by the admin.
    PasswordChange,
    /// TOTP enrollment begun or confirmed by its user.
    TotpEnrollment,
    TotpDisable,
    RecoveryCodes,
    /// An API key created, revoked, or exchanged for a session (or refused).
    ApiKey,
    /// A caller refused for want of caller credentials (`--require-caller-credentials`).
    Caller,
    /// A user brought in by `user import` (never with their hash).
    Import,
    /// A passkey registered or removed (or refused).
    Passkey,
    /// A passkey sign-in: its outcome (a passkey that finished a two-factor login is a
    /// `TwoFactor` event).
    PasskeyLogin,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::TwoFactor => "two_factor",
            Event::Logout => "logout",
            Event::Revoke => "revoke",
            Event::Lookup => "lookup",
            Event::PasswordChange => "password_change",
            Event::TotpEnrollment => "totp_enrollment",
            Event::TotpDisable => "totp_disable",
            Event::RecoveryCodes => "recovery_codes",
            Event::ApiKey => "api_key",
            Event::Caller => "caller",
            Event::Import => "import",
            Event::Passkey => "passkey",
            Event::PasskeyLogin => "passkey_login",
        }
    }
}

pub fn record(event: Event, outcome: &'static str, user_id: Option<&str>, caller: &Caller) {
    if let Event::Login | Event::TwoFactor | Event::PasskeyLogin = event {
        crate::metrics::login_outcome(event.name(), outcome);
    }
    let client = caller.address.map_or_else(
        || caller.face.name().to_owned(),
        |address| address.to_string(),
    );
    tracing::info!(
        target: "audit",
        event = event.name(),
        outcome,
        user_id = user_id.unwrap_or("-"),
        client = %client,
    );
}
