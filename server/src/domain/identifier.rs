//! Handles, emails and phones: how they are validated when a user is created and how a
//! login identifier is read. Each has one normalized form, stored and compared.
use crate::error::{Result, invalid};

/// Longest identifier accepted on the wire (an email's limit with room to spare).
pub const MAX_IDENTIFIER_BYTES: usize = 320;
const MAX_HANDLE_CHARS: usize = 64;
const MAX_EMAIL_BYTES: usize = 254;

/// What a login or lookup identifier names, in normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Email(String),
    Phone(String),
    Handle(String),
}

impl Identifier {
    /// One string per identifier, for keying throttles.
    pub fn key(&self) -> String {
        match self {
            Identifier::Email(email) => format!("email:{email}"),
            Identifier::Phone(phone) => format!("phone:{phone}"),
            Identifier::Handle(handle) => format!("handle:{handle}"),
        }
    }
}

/// Reads an identifier sent by a caller. Only emptiness, size and control characters are
/// errors: any other string is classified by shape and simply matches nobody if it is odd.
pub fn parse(field: &'static str, raw: &str) -> Result<Identifier> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if raw.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_IDENTIFIER_BYTES} bytes"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(if trimmed.contains('@') {
        Identifier::Email(trimmed.to_lowercase())
    } else if trimmed.starts_with('+') {
        Identifier::Phone(strip_phone_punctuation(trimmed))
    } else {
        Identifier::Handle(trimmed.to_lowercase())
    })
}

/// Validates a new handle: 1–64 of `a-z 0-9 . _ -`, starting with a letter.
pub fn normalize_handle(raw: &str) -> Result<String> {
    let handle = raw.trim().to_lowercase();
    if handle.is_empty() {
        return Err(invalid("handle", "must not be empty"));
    }
    if handle.chars().count() > MAX_HANDLE_CHARS {
        return Err(invalid(
            "handle",
            format!("must be at most {MAX_HANDLE_CHARS} characters"),
        ));
    }
    if !handle.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("handle", "must start with a letter"));
    }
    if !handle
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            "handle",
            "may hold only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(handle)
}

/// Validates a new email: one `@`, a local part, a dotted domain, no spaces; lowercased.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    if email.len() > MAX_EMAIL_BYTES {
        return Err(invalid(
            "email",
            format!("must be at most {MAX_EMAIL_BYTES} bytes"),
        ));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(invalid("email", "must look like name@example.com"));
    }
    Ok(email)
}

/// Validates a new phone: E.164, a `+` and 8–15 digits; spaces, dashes, dots and
/// parentheses are dropped.
pub fn normalize_phone(raw: &str) -> Result<String> {
    let phone = strip_phone_punctuation(raw.trim());
    let digits = phone.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "phone",
            "must be in E.164 form: '+' and 8 to 15 digits, e.g. +15551234567",
        ));
    }
    Ok(phone)
}

fn strip_phone_punctuation(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_identifiers_are_classified_and_normalized() {
        assert_eq!(
            parse("identifier", " Lead.Baker@Example.COM ").unwrap(),
            Identifier::Email("lead.baker@example.com".into())
        );
        assert_eq!(
            parse("identifier", "+1 (555) 123-4567").unwrap(),
            Identifier::Phone("+15551234567".into())
        );
        assert_eq!(
            parse("identifier", "Lead-Baker").unwrap(),
            Identifier::Handle("lead-baker".into())
        );
    }

    #[test]
    fn login_identifier_errors_name_the_field() {
        let err = parse("identifier", "  ").unwrap_err().to_string();
        assert_eq!(err, "identifier: must not be empty");
        let err = parse("identifier", &"a".repeat(321))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("identifier: must be at most"), "{err}");
        assert!(parse("identifier", "a\u{0}b").is_err());
    }

    #[test]
    fn new_values_are_validated() {
        assert_eq!(normalize_handle("Lead-Baker").unwrap(), "lead-baker");
        assert!(normalize_handle("1abc").is_err());
        assert!(normalize_handle("a b").is_err());
        assert_eq!(normalize_email("A@B.Org").unwrap(), "a@b.org");
        assert!(normalize_email("nobody").is_err());
        assert!(normalize_email("a@b").is_err());
        assert_eq!(
            normalize_phone("+44 20 7946 0958").unwrap(),
            "+442079460958"
        );
        assert!(normalize_phone("5551234567").is_err());
        assert!(normalize_phone("+12").is_err());
    }
}
