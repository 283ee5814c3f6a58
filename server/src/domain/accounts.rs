//! Users and their platform roles: creating, finding, disabling, granting, and the
//! actor-checked `LookupUser` that consuming services use to grant local roles.
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::audit::{self, Event};
use crate::domain::identifier;
use crate::domain::service_accounts::LOOKUP_ROLE;
use crate::domain::sessions::check_token_size;
use crate::error::{Error, Result, invalid};
use crate::secrets::password_strength;
use crate::store::{NewUser, RevokeSessions, UserRecord};

const MAX_DISPLAY_NAME_CHARS: usize = 128;
const MAX_ROLE_CHARS: usize = 64;

/// A user to create, as an administrator typed it.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub handle: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: Option<String>,
    pub password: String,
}

impl StPeter {
    /// Validates every field before hashing, then inserts the user in one statement.
    pub async fn create_user(&self, account: NewAccount) -> Result<UserView> {
        let handle = identifier::normalize_handle(&account.handle)?;
        let email = account
            .email
            .as_deref()
            .map(identifier::normalize_email)
            .transpose()?;
        let phone = account
            .phone
            .as_deref()
            .map(identifier::normalize_phone)
            .transpose()?;
        let display_name = check_display_name(account.display_name)?;
        let context = strings_of(&handle, email.as_deref(), phone.as_deref(), &display_name);
        let password_hash = self
            .new_password_hash("password", &account.password, &context, None)
            .await?;
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
        self.insert_user(user).await
    }

    /// Inserts a user who is valid and whose secrets are ready; answers them as callers see
    /// them.
    pub(crate) async fn insert_user(&self, user: NewUser) -> Result<UserView> {
        self.store.create_user(&user).await?;
        Ok(UserView {
            user_id: user.id,
            handle: user.handle,
            email: user.email,
            phone: user.phone,
            display_name: user.display_name,
            disabled: false,
            kind: user.kind,
        })
    }

    /// Sets a user's password on an administrator's word (no current password), with the
    /// same strength rule as every new password; optionally revokes all their sessions.
    /// Returns how many sessions were revoked.
    pub async fn set_password(
        &self,
        identifier: &str,
        new_password: &str,
        revoke_sessions: bool,
    ) -> Result<u64> {
        let user = self.find_person(identifier).await?;
        let hash = self
            .new_password_hash("password", new_password, &user_context(&user), None)
            .await?;
        let revoke = revoke_sessions.then_some(RevokeSessions {
            user_id: &user.owner.id,
            except: None,
        });
        let revoked = self
            .store
            .change_password(&user.owner.id, &hash, revoke, self.now())
            .await?;
        if revoked > 0 {
            self.changed_user(&user.owner.id);
        }
        audit::record(
            Event::PasswordChange,
            "set",
            Some(&user.owner.id),
            &Caller::CLI,
        );
        Ok(revoked)
    }

    /// Checks a new password in `field` for length and strength (with the user's own
    /// strings as context), then hashes it, within the caller's deadline if any.
    pub(crate) async fn new_password_hash(
        &self,
        field: &'static str,
        new_password: &str,
        context: &[&str],
        deadline: Option<std::time::Instant>,
    ) -> Result<String> {
        self.check_new_password(field, new_password, context)?;
        self.passwords.admit(deadline)?.hash(new_password).await
    }

    /// The rule every new password meets: long enough and, by zxcvbn's estimate with the
    /// user's own strings as context, at least `Settings::min_password_score`.
    pub(crate) fn check_new_password(
        &self,
        field: &'static str,
        new_password: &str,
        context: &[&str],
    ) -> Result<()> {
        password_strength::check(
            field,
            new_password,
            context,
            self.settings.min_password_score,
        )
    }

    pub async fn list_users(&self) -> Result<Vec<(UserView, Vec<String>)>> {
        let mut listed = Vec::new();
        for user in self.store.list_users().await? {
            let roles = self.store.roles(&user.owner.id).await?;
            listed.push((UserView::from(&user), roles));
        }
        Ok(listed)
    }

    /// Finds a user by user_id, email, phone or handle (admin use).
    pub async fn find_user(&self, identifier: &str) -> Result<UserRecord> {
        let found = if uuid::Uuid::parse_str(identifier.trim()).is_ok() {
            self.store
                .find_user_by_id(&identifier.trim().to_lowercase())
                .await?
        } else {
            let parsed = identifier::parse("identifier", identifier)?;
            self.store.find_user(&parsed).await?
        };
        found.ok_or_else(|| Error::NotFound(format!("user {:?}", identifier.trim())))
    }

    /// Finds a person (admin use): a service account has no password and no TOTP, so the
    /// commands that set those refuse it.
    pub(crate) async fn find_person(&self, identifier: &str) -> Result<UserRecord> {
        let user = self.find_user(identifier).await?;
        if user.owner.kind == UserKind::Service {
            return Err(Error::FailedPrecondition(format!(
                "{} is a service account: it has no password and no TOTP, and authenticates \
                 with API keys (st-peter service key create)",
                user.owner.handle
            )));
        }
        Ok(user)
    }

    /// Disabling revokes the user's sessions at once; enabling does not bring them back.
    pub async fn set_disabled(&self, identifier: &str, disabled: bool) -> Result<UserView> {
        let mut user = self.find_user(identifier).await?;
        let changed = self
            .store
            .set_disabled(&user.owner.id, disabled, self.now())
            .await?;
        if changed && disabled {
            self.changed_user(&user.owner.id);
        }
        user.owner.disabled = disabled;
        Ok(UserView::from(&user))
    }

    /// Returns whether the role was newly granted.
    pub async fn grant_role(&self, identifier: &str, role: &str) -> Result<bool> {
        let role = check_role(role)?;
        let user = self.find_user(identifier).await?;
        let granted = self
            .store
            .grant_role(&user.owner.id, &role, self.now())
            .await?;
        if granted {
            self.changed_user(&user.owner.id);
        }
        Ok(granted)
    }

    /// Returns whether the user had the role.
    pub async fn revoke_role(&self, identifier: &str, role: &str) -> Result<bool> {
        let role = check_role(role)?;
        let user = self.find_user(identifier).await?;
        let revoked = self
            .store
            .revoke_role(&user.owner.id, &role, self.now())
            .await?;
        if revoked {
            self.changed_user(&user.owner.id);
        }
        Ok(revoked)
    }

    /// Resolves an identifier for an actor whose token must be valid and their own.
    pub async fn lookup_user(
        &self,
        caller: &Caller,
        actor_id: &str,
        actor_token: &str,
        identifier: &str,
    ) -> Result<UserView> {
        if actor_id.is_empty() {
            return Err(invalid("actor_id", "must not be empty"));
        }
        let actor_id = uuid::Uuid::parse_str(actor_id)
            .map_err(|_| invalid("actor_id", "must be a user_id (a UUID)"))?
            .to_string();
        check_token_size("actor_token", actor_token)?;
        let identifier = identifier::parse("identifier", identifier)?;
        let actor = match self.verify_token(actor_token).await {
            Ok(actor) => actor,
            Err(Error::Unauthenticated(_)) | Err(Error::InvalidArgument { .. }) => {
                audit::record(Event::Lookup, "unauthenticated", None, caller);
                return Err(Error::Unauthenticated("actor_token is not valid"));
            }
            Err(other) => return Err(other),
        };
        if actor.user.user_id != actor_id {
            audit::record(Event::Lookup, "unauthenticated", None, caller);
            return Err(Error::Unauthenticated(
                "actor_token does not belong to actor_id",
            ));
        }
        if actor.user.kind == UserKind::Service && !actor.roles.iter().any(|r| r == LOOKUP_ROLE) {
            audit::record(Event::Lookup, "forbidden", Some(&actor_id), caller);
            return Err(Error::PermissionDenied(format!(
                "actor: a service account looks users up only with the platform role \
                 {LOOKUP_ROLE} (st-peter user role grant NAME {LOOKUP_ROLE})"
            )));
        }
        if let Err(wait) = self
            .throttles
            .lookup_actor
            .check(&actor_id, self.now())
            .await?
        {
            audit::record(Event::Lookup, "throttled", Some(&actor_id), caller);
            return Err(Error::RateLimited(wait));
        }
        let Some(user) = self.store.find_user(&identifier).await? else {
            audit::record(Event::Lookup, "not_found", Some(&actor_id), caller);
            return Err(Error::NotFound("user".into()));
        };
        audit::record(Event::Lookup, "found", Some(&actor_id), caller);
        Ok(UserView::from(&user))
    }
}

/// A user's own strings, which a new password must not be built from.
pub(crate) fn user_context(user: &UserRecord) -> Vec<&str> {
    let owner = &user.owner;
    strings_of(
        &owner.handle,
        owner.email.as_deref(),
        owner.phone.as_deref(),
        &owner.display_name,
    )
}

fn strings_of<'a>(
    handle: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    display_name: &'a str,
) -> Vec<&'a str> {
    [Some(handle), email, phone, Some(display_name)]
        .into_iter()
        .flatten()
        .filter(|value| !value.is_empty())
        .collect()
}

/// A display name as given: trimmed, bounded, printable.
pub(crate) fn check_display_name(display_name: Option<String>) -> Result<String> {
    let display_name = display_name.unwrap_or_default().trim().to_owned();
    if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(invalid(
            "display_name",
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    if display_name.chars().any(char::is_control) {
        return Err(invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(display_name)
}

/// A short printable name a person gives a thing (an API key, a passkey) to tell it apart
/// in lists: trimmed, 1 to `max_chars` characters, no control characters.
pub(crate) fn check_short_name(name: &str, max_chars: usize) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(invalid(
            "name",
            format!("must be at most {max_chars} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Roles are short names such as `admin` or `billing:read`.
pub(crate) fn check_role(role: &str) -> Result<String> {
    let role = role.trim();
    if role.is_empty() {
        return Err(invalid("role", "must not be empty"));
    }
    if role.chars().count() > MAX_ROLE_CHARS {
        return Err(invalid(
            "role",
            format!("must be at most {MAX_ROLE_CHARS} characters"),
        ));
    }
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'))
    {
        return Err(invalid(
            "role",
            "may hold only letters, digits, ':', '.', '_' and '-'",
        ));
    }
    Ok(role.to_owned())
}
