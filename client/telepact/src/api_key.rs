//! The service identity's API key: where it comes from and what it must look like.
//!
//! The key is a secret, so it is read from the environment (or given in code), never from a
//! command-line argument, and no message here ever includes it. Checking its shape up
//! front turns a pasted session token or a stray quote into an error at start-up instead of
//! a refusal of every request.
use crate::error::{Error, Result};

/// The environment variable the adapter and the roles CLI read the API key from when none
/// is given in code.
pub const API_KEY_ENV: &str = "ST_PETER_API_KEY";

const PREFIX: &str = "stk_";
/// st-peter refuses longer keys outright (INVALID_ARGUMENT); real ones are 47 bytes.
const MAX_BYTES: usize = 256;

/// `key` without surrounding whitespace (a key read from a file often ends in a newline),
/// if it looks like a st-peter API key: `stk_` and base64url characters.
pub fn check_api_key(key: &str) -> Result<String> {
    checked(key, "the api key")
}

/// The key in [`API_KEY_ENV`], checked; `None` when it is unset or empty.
pub fn api_key_from_env() -> Result<Option<String>> {
    match std::env::var(API_KEY_ENV) {
        Ok(key) if key.trim().is_empty() => Ok(None),
        Ok(key) => checked(&key, API_KEY_ENV).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::InvalidApiKey(format!("{API_KEY_ENV} is not UTF-8")))
        }
    }
}

/// The key given, else the one in [`API_KEY_ENV`], else none.
pub fn api_key_or_env(given: Option<&str>) -> Result<Option<String>> {
    match given {
        Some(key) => check_api_key(key).map(Some),
        None => api_key_from_env(),
    }
}

/// `source` names where the key came from; the key itself is never in the message.
fn checked(key: &str, source: &str) -> Result<String> {
    let key = key.trim();
    let refuse = |why: &str| Err(Error::InvalidApiKey(format!("{source} {why}")));
    if key.is_empty() {
        return refuse("is empty");
    }
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return refuse("does not start with stk_ (keys come from `st-peter service key create`)");
    };
    if key.len() > MAX_BYTES {
        return refuse("is longer than any st-peter API key");
    }
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return refuse("is not stk_ followed by base64url characters");
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "stk_q2Vx9ABCdefGHIjklMNOpqrSTUvwxYZ0123456789-_";

    #[test]
    fn a_well_formed_key_passes_without_surrounding_whitespace() {
        assert_eq!(check_api_key(KEY).unwrap(), KEY);
        assert_eq!(check_api_key(&format!(" {KEY}\n")).unwrap(), KEY);
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let long = format!("stk_{}", "a".repeat(300));
        let session_token = format!("stp_{}", "S3cr3t".repeat(7));
        for bad in [
            "",
            "  \n",
            "stk_",
            "stk_a b",
            "stk_\"quoted\"",
            long.as_str(),
            session_token.as_str(),
        ] {
            let error = check_api_key(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("invalid API key: the api key "),
                "{error}"
            );
            if bad.len() > 8 {
                assert!(!error.contains(&bad[4..]), "{error} echoes the key");
            }
        }
    }
}
