//! Keycloak's password credentials, as `kc.sh export` writes them, turned into the
//! equivalent hash st-peter stores: Keycloak keeps the hash and salt apart, in base64,
//! with the algorithm and its parameters in a second JSON document.
use base64::Engine as _;

use crate::secrets::stored_hash::{HashError, StoredHash, decode_b64, malformed};

/// A Keycloak `CredentialRepresentation` of type `password`, as `kc.sh export` writes it:
/// `secretData` and `credentialData` are JSON documents inside strings.
#[derive(Debug, serde::Deserialize)]
pub struct KeycloakCredential {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "secretData")]
    pub secret_data: String,
    #[serde(rename = "credentialData")]
    pub credential_data: String,
}

#[derive(serde::Deserialize)]
struct KeycloakSecret {
    value: String,
    salt: String,
}

#[derive(serde::Deserialize)]
struct KeycloakData {
    #[serde(rename = "hashIterations")]
    hash_iterations: u32,
    algorithm: String,
    #[serde(rename = "additionalParameters", default)]
    additional: std::collections::HashMap<String, Vec<String>>,
}

impl KeycloakCredential {
    /// The equivalent hash in a form st-peter stores: PHC `$pbkdf2-sha256$i=..,l=..$..$..`
    /// (or sha512) for Keycloak's PBKDF2, `$argon2id$v=19$m=..,t=..,p=..$..$..` (or i, d) for
    /// its argon2. Checked against [`Bounds`].
    pub fn to_stored(&self) -> Result<String, HashError> {
        const SCHEME: &str = "keycloak";
        if self.kind != "password" {
            return Err(malformed(SCHEME, "type must be \"password\""));
        }
        // serde's messages could quote the secret: say only what is wrong.
        let secret: KeycloakSecret = serde_json::from_str(&self.secret_data)
            .map_err(|_| malformed(SCHEME, "secretData is not {\"value\":..,\"salt\":..}"))?;
        let data: KeycloakData = serde_json::from_str(&self.credential_data).map_err(|_| {
            malformed(
                SCHEME,
                "credentialData is not {\"hashIterations\":..,\"algorithm\":..}",
            )
        })?;
        let salt = decode_b64(SCHEME, "salt", &secret.salt)?;
        let hash = decode_b64(SCHEME, "value", &secret.value)?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let stored = match data.algorithm.as_str() {
            "pbkdf2-sha256" | "pbkdf2-sha512" => format!(
                "${}$i={},l={}${}${}",
                data.algorithm,
                data.hash_iterations,
                hash.len(),
                b64.encode(&salt),
                b64.encode(&hash)
            ),
            "argon2" => {
                let one = |name: &str, default: &str| -> String {
                    data.additional
                        .get(name)
                        .and_then(|values| values.first())
                        .map_or_else(|| default.to_owned(), Clone::clone)
                };
                // Keycloak's defaults where a parameter is absent.
                let kind = match one("type", "id").as_str() {
                    "id" => "argon2id",
                    "i" => "argon2i",
                    "d" => "argon2d",
                    _ => return Err(malformed(SCHEME, "argon2 type must be id, i or d")),
                };
                let version = match one("version", "1.3").as_str() {
                    "1.3" => 19,
                    "1.0" => 16,
                    _ => return Err(malformed(SCHEME, "argon2 version must be 1.3 or 1.0")),
                };
                let memory: u32 = one("memory", "7168")
                    .parse()
                    .map_err(|_| malformed(SCHEME, "argon2 memory is not a number"))?;
                let parallelism: u32 = one("parallelism", "1")
                    .parse()
                    .map_err(|_| malformed(SCHEME, "argon2 parallelism is not a number"))?;
                let length: usize = one("hashLength", "32")
                    .parse()
                    .map_err(|_| malformed(SCHEME, "argon2 hashLength is not a number"))?;
                if length != hash.len() {
                    return Err(malformed(
                        SCHEME,
                        "argon2 hashLength does not match the value's length",
                    ));
                }
                format!(
                    "${kind}$v={version}$m={memory},t={},p={parallelism}${}${}",
                    data.hash_iterations,
                    b64.encode(&salt),
                    b64.encode(&hash)
                )
            }
            _ => {
                return Err(malformed(
                    SCHEME,
                    "algorithm must be pbkdf2-sha256, pbkdf2-sha512 or argon2",
                ));
            }
        };
        StoredHash::parse(&stored)?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(kind: &str, algorithm: &str, extra: &str) -> KeycloakCredential {
        KeycloakCredential {
            kind: kind.into(),
            secret_data: r#"{"value":"c2VjcmV0LWhhc2gtdmFsdWUtMzItYnl0ZXMtbG9uZyE=","salt":"c2FsdHNhbHRzYWx0c2FsdA=="}"#.into(),
            credential_data: format!(
                r#"{{"hashIterations":27500,"algorithm":"{algorithm}","additionalParameters":{{{extra}}}}}"#
            ),
        }
    }

    #[test]
    fn pbkdf2_and_argon2_become_phc_strings() {
        let stored = credential("password", "pbkdf2-sha256", "")
            .to_stored()
            .unwrap();
        assert_eq!(
            stored,
            "$pbkdf2-sha256$i=27500,l=32$c2FsdHNhbHRzYWx0c2FsdA$c2VjcmV0LWhhc2gtdmFsdWUtMzItYnl0ZXMtbG9uZyE"
        );
        let mut argon2 = credential(
            "password",
            "argon2",
            r#""type":["i"],"version":["1.0"],"memory":["7168"],"parallelism":["2"],"hashLength":["32"]"#,
        );
        argon2.credential_data = argon2.credential_data.replace("27500", "5");
        assert!(
            argon2
                .to_stored()
                .unwrap()
                .starts_with("$argon2i$v=16$m=7168,t=5,p=2$c2FsdHNhbHRzYWx0c2FsdA$")
        );
    }

    #[test]
    fn other_credentials_are_refused_without_quoting_the_secret() {
        for (credential, reason) in [
            (
                credential("otp", "pbkdf2-sha256", ""),
                "type must be \"password\"",
            ),
            (credential("password", "pbkdf2", ""), "algorithm must be"),
            (
                credential("password", "argon2", r#""hashLength":["64"]"#),
                "hashLength does not match",
            ),
        ] {
            let message = credential.to_stored().unwrap_err().to_string();
            assert!(message.contains(reason), "{message}");
            assert!(!message.contains("c2VjcmV0"), "{message}");
        }
    }
}
