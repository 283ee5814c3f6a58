//! The key that seals TOTP secrets at rest (XChaCha20-Poly1305), so a copy of the database
//! alone does not let anyone mint a user's codes.
//!
//! Each sealed secret is `version || nonce || ciphertext+tag`, with the user's id as the
//! associated data: a sealed secret moved to another user's row does not open. The database
//! keeps one sealed check value; a server started with another key refuses to start rather
//! than fail every two-factor login later.
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::{Error, Result};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const FORMAT_VERSION: u8 = 1;
/// The associated data and plaintext of the database's key check value.
/// The name the check value is stored under (`key_checks` table).
pub const CHECK_NAME: &str = "totp";
const CHECK_AAD: &[u8] = b"st-peter totp key check";
const CHECK_PLAINTEXT: &[u8] = b"st-peter";

/// A 256-bit key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct TotpKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpKey(<redacted>)")
    }
}

impl TotpKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEY_BYTES {
            return Err(Error::Config(format!(
                "TOTP key: must be {KEY_BYTES} bytes (base64 in a file or ST_PETER_TOTP_KEY), got {}",
                bytes.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| Error::Config("TOTP key: not a usable key".into()))?;
        Ok(Self { cipher })
    }

    /// A fresh random key (tests, and the first start of the embedded default).
    pub fn generate() -> Self {
        Self::from_bytes(&random_key()).expect("32 random bytes are a key")
    }

    /// The key in base64, as it is kept in a key file or the environment.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| Error::Config(format!("TOTP key: not base64: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// Reads a key file (base64, one line).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("TOTP key file {}: {e}", path.display())))?;
        Self::from_base64(&text)
            .map_err(|e| Error::Config(format!("TOTP key file {}: {e}", path.display())))
    }

    /// Reads the key file, creating it with a new key and `0600` permissions when it does not
    /// exist yet (the embedded default's first start). True when this call created it.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool)> {
        let key = random_key();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                let written = file
                    .write_all(format!("{}\n", STANDARD.encode(key)).as_bytes())
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    let _ = std::fs::remove_file(path);
                    return Err(Error::Config(format!(
                        "TOTP key file {}: {e}",
                        path.display()
                    )));
                }
                tracing::info!(path = %path.display(), "created a new TOTP key file");
                Ok((Self::from_bytes(&key)?, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::from_file(path)?, false))
            }
            Err(e) => Err(Error::Config(format!(
                "TOTP key file {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn seal(&self, user_id: &str, secret: &[u8]) -> Result<Vec<u8>> {
        self.seal_with(user_id.as_bytes(), secret)
    }

    pub fn open(&self, user_id: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_with(user_id.as_bytes(), sealed).ok_or_else(|| {
            Error::Internal("a stored TOTP secret does not open with the TOTP key".into())
        })
    }

    /// A sealed check value: stored by the first key to meet a database, so a server
    /// started later with another key can tell (see `startup`).
    pub fn check_value(&self) -> Result<Vec<u8>> {
        self.seal_with(CHECK_AAD, CHECK_PLAINTEXT)
    }

    /// Whether `stored` is a check value sealed with this key.
    pub fn opens_check_value(&self, stored: &[u8]) -> bool {
        self.open_with(CHECK_AAD, stored)
            .is_some_and(|plain| plain == CHECK_PLAINTEXT)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Internal("sealing a TOTP secret failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != FORMAT_VERSION || rest.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

fn random_key() -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// Where the embedded default keeps its key: beside the SQLite file, as `FILE.totp-key`.
/// `None` for a database that is not a local file.
pub fn default_key_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(format!("{path}.totp-key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let key = TotpKey::generate();
        let sealed = key.seal("user-a", b"secret").unwrap();
        assert_eq!(key.open("user-a", &sealed).unwrap(), b"secret");
        assert!(key.open("user-b", &sealed).is_err());
        assert!(TotpKey::generate().open("user-a", &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn tampered_or_short_blobs_do_not_open() {
        let key = TotpKey::generate();
        let mut sealed = key.seal("u", b"secret").unwrap();
        *sealed.last_mut().unwrap() ^= 1;
        assert!(key.open("u", &sealed).is_err());
        assert!(key.open("u", &[]).is_err());
        assert!(key.open("u", &[FORMAT_VERSION, 1, 2]).is_err());
    }

    #[test]
    fn key_text_must_be_32_bytes_of_base64() {
        assert!(TotpKey::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(TotpKey::from_base64(&STANDARD.encode([7u8; 16])).is_err());
        assert!(TotpKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.totp-key");
        let (first, created) = TotpKey::load_or_create_file(&path).unwrap();
        let (second, created_again) = TotpKey::load_or_create_file(&path).unwrap();
        assert!(created && !created_again);
        let sealed = first.seal("u", b"x").unwrap();
        assert_eq!(second.open("u", &sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn default_key_file_sits_beside_sqlite_files() {
        assert_eq!(
            default_key_file("sqlite://st-peter.db"),
            Some(PathBuf::from("st-peter.db.totp-key"))
        );
        assert_eq!(
            default_key_file("sqlite:///var/lib/st.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/st.db.totp-key"))
        );
        assert_eq!(default_key_file("sqlite::memory:"), None);
        assert_eq!(default_key_file("postgres://db/auth"), None);
    }
}
