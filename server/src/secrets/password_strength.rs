//! How strong a new password must be: long enough (`password::check_new`) and hard enough
//! to guess by zxcvbn's estimate, which knows common passwords, dictionary words, names,
//! keyboard patterns, dates, repeats and l33t substitutions, and is told the user's own
//! handle and email so a password built from them scores low.
use crate::error::{Result, invalid};
use crate::secrets::password;

/// zxcvbn's scale: 0 (too guessable) to 4 (very unguessable).
pub const MAX_SCORE: u8 = 4;
/// The default minimum: 3, "safely unguessable" (about 10^10 guesses), zxcvbn's advice for
/// passwords that guard accounts.
pub const DEFAULT_MIN_SCORE: u8 = 3;

/// zxcvbn's work grows with the length; past this many characters the rest of a password
/// only adds to its strength, so the estimate looks at this prefix (as the JavaScript
/// original advises) and a 1 KiB password cannot make a request slow.
const ESTIMATED_CHARS: usize = 100;

/// Refuses a new password in `field` that is too short or long, or scores below
/// `min_score`, saying why in zxcvbn's words. `user_inputs` are the user's own strings.
pub fn check(field: &'static str, new: &str, user_inputs: &[&str], min_score: u8) -> Result<()> {
    password::check_new(field, new)?;
    if min_score == 0 {
        return Ok(());
    }
    let prefix: String = new.chars().take(ESTIMATED_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&prefix, user_inputs);
    let score = u8::from(estimate.score());
    if score >= min_score {
        return Ok(());
    }
    let mut reason =
        format!("is too easy to guess (strength {score} of {MAX_SCORE}, needs {min_score})");
    if let Some(feedback) = estimate.feedback() {
        let advice: Vec<String> = feedback
            .warning()
            .map(|warning| warning.to_string())
            .into_iter()
            .chain(feedback.suggestions().iter().map(ToString::to_string))
            .collect();
        if !advice.is_empty() {
            reason.push_str(": ");
            reason.push_str(&advice.join(" "));
        }
    }
    Err(invalid(field, reason))
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_MIN_SCORE, check};

    #[test]
    fn passphrases_pass_and_common_or_personal_passwords_are_refused_with_a_reason() {
        let user = ["lead-baker", "lead@bakery.example"];
        for strong in [
            "knock knock, who goes there",
            "open sesame, said Ali Baba",
            "correct horse battery staple",
        ] {
            check("new_password", strong, &user, DEFAULT_MIN_SCORE).unwrap();
        }
        let common = check("new_password", "password1", &user, DEFAULT_MIN_SCORE)
            .unwrap_err()
            .to_string();
        assert!(
            common.starts_with("new_password: is too easy to guess"),
            "{common}"
        );
        assert!(common.contains("common password"), "{common}");
        // Strong on its own, weak for this user: it is their handle.
        check("new_password", "lead-baker", &[], 2).unwrap();
        let personal = check("new_password", "lead-baker", &user, 2).unwrap_err();
        assert!(personal.to_string().contains("too easy"), "{personal}");
    }

    #[test]
    fn length_comes_first_and_score_zero_turns_the_estimate_off() {
        let short = check("password", "kx7$", &[], 0).unwrap_err().to_string();
        assert_eq!(short, "password: must be at least 8 characters");
        check("password", "password", &[], 0).unwrap();
        check("password", &"a".repeat(1024), &[], 0).unwrap();
        assert!(check("password", &"a".repeat(1024), &[], DEFAULT_MIN_SCORE).is_err());
    }
}
