//! A software WebAuthn authenticator with the browser in front of it, for tests: it takes
//! the options JSON st-peter hands out (`{"publicKey": {...}}`, binary fields base64url)
//! and answers what a browser's `PublicKeyCredential.toJSON()` gives, as a platform passkey
//! would: P-256 keys (ES256), "none" attestation, a zero AAGUID, every credential
//! discoverable (it keeps the user handle), a signature counter starting at 0.
//!
//! It reads the options as plain JSON (not through webauthn-rs's types) so that tests also
//! check the field names a browser reads. It plays the browser's part too: the RP ID must be
//! the origin's host or a parent of it, and the client data carries the origin given.
//!
//! Knobs for negative tests: [`SoftAuthenticator::set_user_verifying`] (answers without the
//! UV flag instead of refusing), any origin, and [`Clone`] (a cloned authenticator: the same
//! keys, each copy counting on its own from then on).
use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_cbor_2::Value as Cbor;
use serde_json::{Value as Json, json};

/// COSE algorithm ES256 (ECDSA with P-256 and SHA-256).
const ES256: i64 = -7;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// A software authenticator holding any number of credentials. See the module docs.
#[derive(Clone)]
pub struct SoftAuthenticator {
    credentials: Vec<Credential>,
    user_verifying: bool,
}

#[derive(Clone)]
struct Credential {
    id: Vec<u8>,
    rp_id: String,
    user_handle: Vec<u8>,
    key: PKey<Private>,
    counter: u32,
}

impl Default for SoftAuthenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftAuthenticator {
    /// An authenticator with no credentials that verifies its user.
    pub fn new() -> Self {
        Self {
            credentials: Vec::new(),
            user_verifying: true,
        }
    }

    /// With `false`, answers carry user presence but not the UV flag, whatever the options
    /// ask (a real authenticator would refuse; this one lets the server's check be tested).
    pub fn set_user_verifying(&mut self, verifying: bool) {
        self.user_verifying = verifying;
    }

    /// The ids (base64url) of the credentials held, oldest first.
    pub fn credential_ids(&self) -> Vec<String> {
        self.credentials
            .iter()
            .map(|c| URL_SAFE_NO_PAD.encode(&c.id))
            .collect()
    }

    /// `navigator.credentials.create({publicKey})` on a page of `origin`: makes a
    /// discoverable credential and answers the attestation as `toJSON()` gives it.
    pub fn create(&mut self, options_json: &str, origin: &str) -> Result<String> {
        let options: Json = serde_json::from_str(options_json).context("options_json")?;
        let options = options
            .get("publicKey")
            .context("options_json has no publicKey")?;
        let rp_id = match options.pointer("/rp/id").and_then(Json::as_str) {
            Some(id) => id.to_owned(),
            None => origin_host(origin)?,
        };
        check_rp_id(&rp_id, origin)?;
        let challenge = b64_field(options, "challenge")?;
        let user_handle = b64_field(options, "user/id")?;
        ensure!(
            (1..=64).contains(&user_handle.len()),
            "TypeError: user.id must be 1 to 64 bytes, not {}",
            user_handle.len()
        );
        let es256 = options
            .get("pubKeyCredParams")
            .and_then(Json::as_array)
            .context("TypeError: no pubKeyCredParams")?
            .iter()
            .any(|p| p["type"] == "public-key" && p["alg"].as_i64() == Some(ES256));
        ensure!(
            es256,
            "NotSupportedError: pubKeyCredParams do not offer ES256"
        );
        for excluded in descriptors(options, "excludeCredentials")? {
            if self
                .credentials
                .iter()
                .any(|c| c.rp_id == rp_id && c.id == excluded)
            {
                bail!("InvalidStateError: this authenticator already holds an excluded credential");
            }
        }

        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let ec_key = EcKey::generate(&group)?;
        let (mut x, mut y, mut ctx) = (BigNum::new()?, BigNum::new()?, BigNumContext::new()?);
        ec_key
            .public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
        let cose_key = Cbor::Map(BTreeMap::from([
            (Cbor::Integer(1), Cbor::Integer(2)),            // kty: EC2
            (Cbor::Integer(3), Cbor::Integer(ES256.into())), // alg
            (Cbor::Integer(-1), Cbor::Integer(1)),           // crv: P-256
            (Cbor::Integer(-2), Cbor::Bytes(x.to_vec_padded(32)?)),
            (Cbor::Integer(-3), Cbor::Bytes(y.to_vec_padded(32)?)),
        ]));
        let key = PKey::from_ec_key(ec_key)?;
        let id = [
            *uuid::Uuid::new_v4().as_bytes(),
            *uuid::Uuid::new_v4().as_bytes(),
        ]
        .concat();

        let mut auth_data = auth_data_head(&rp_id, self.flags(FLAG_AT), 0)?;
        auth_data.extend_from_slice(&[0; 16]); // AAGUID
        auth_data.extend_from_slice(&u16::try_from(id.len())?.to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&serde_cbor_2::to_vec(&cose_key)?);
        let attestation_object = Cbor::Map(BTreeMap::from([
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(BTreeMap::new())),
            (
                Cbor::Text("authData".into()),
                Cbor::Bytes(auth_data.clone()),
            ),
        ]));
        let client_data = client_data_json("webauthn.create", &challenge, origin);
        let wants_cred_props = options.pointer("/extensions/credProps") == Some(&json!(true));
        let extension_results = if wants_cred_props {
            json!({"credProps": {"rk": true}})
        } else {
            json!({})
        };
        let answer = json!({
            "id": URL_SAFE_NO_PAD.encode(&id),
            "rawId": URL_SAFE_NO_PAD.encode(&id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": URL_SAFE_NO_PAD.encode(&client_data),
                "attestationObject":
                    URL_SAFE_NO_PAD.encode(serde_cbor_2::to_vec(&attestation_object)?),
                "authenticatorData": URL_SAFE_NO_PAD.encode(&auth_data),
                "transports": ["internal", "hybrid"],
                "publicKey": URL_SAFE_NO_PAD.encode(key.public_key_to_der()?),
                "publicKeyAlgorithm": ES256,
            },
            "clientExtensionResults": extension_results,
        });
        self.credentials.push(Credential {
            id,
            rp_id,
            user_handle,
            key,
            counter: 0,
        });
        Ok(answer.to_string())
    }

    /// `navigator.credentials.get({publicKey})` on a page of `origin`: with
    /// `allowCredentials`, one of those; with none, the newest discoverable credential for
    /// the RP ID. Counts the signature counter up by one and answers the assertion (with
    /// the user handle) as `toJSON()` gives it.
    pub fn get(&mut self, options_json: &str, origin: &str) -> Result<String> {
        let options: Json = serde_json::from_str(options_json).context("options_json")?;
        let options = options
            .get("publicKey")
            .context("options_json has no publicKey")?;
        let rp_id = match options.get("rpId").and_then(Json::as_str) {
            Some(id) => id.to_owned(),
            None => origin_host(origin)?,
        };
        check_rp_id(&rp_id, origin)?;
        let challenge = b64_field(options, "challenge")?;
        let allowed = descriptors(options, "allowCredentials")?;
        let flags = self.flags(0);
        let credential = self
            .credentials
            .iter_mut()
            .rev()
            .find(|c| c.rp_id == rp_id && (allowed.is_empty() || allowed.contains(&c.id)))
            .ok_or_else(|| anyhow!("NotAllowedError: no credential for {rp_id} here"))?;
        credential.counter += 1;

        let auth_data = auth_data_head(&rp_id, flags, credential.counter)?;
        let client_data = client_data_json("webauthn.get", &challenge, origin);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&hash(MessageDigest::sha256(), &client_data)?);
        let signature =
            Signer::new(MessageDigest::sha256(), &credential.key)?.sign_oneshot_to_vec(&signed)?;
        let answer = json!({
            "id": URL_SAFE_NO_PAD.encode(&credential.id),
            "rawId": URL_SAFE_NO_PAD.encode(&credential.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": URL_SAFE_NO_PAD.encode(&client_data),
                "authenticatorData": URL_SAFE_NO_PAD.encode(&auth_data),
                "signature": URL_SAFE_NO_PAD.encode(&signature),
                "userHandle": URL_SAFE_NO_PAD.encode(&credential.user_handle),
            },
            "clientExtensionResults": {},
        });
        Ok(answer.to_string())
    }

    /// UP, UV unless switched off, and `extra`.
    fn flags(&self, extra: u8) -> u8 {
        FLAG_UP | extra | if self.user_verifying { FLAG_UV } else { 0 }
    }
}

/// The fixed start of authenticator data: rpIdHash, flags, signature counter.
fn auth_data_head(rp_id: &str, flags: u8, counter: u32) -> Result<Vec<u8>> {
    let mut data = hash(MessageDigest::sha256(), rp_id.as_bytes())?.to_vec();
    data.push(flags);
    data.extend_from_slice(&counter.to_be_bytes());
    Ok(data)
}

/// The client data a browser signs over: the challenge re-encoded base64url, as browsers do.
fn client_data_json(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    json!({
        "type": kind,
        "challenge": URL_SAFE_NO_PAD.encode(challenge),
        "origin": origin,
        "crossOrigin": false,
    })
    .to_string()
    .into_bytes()
}

/// A base64url field at a `/`-separated path under the options.
fn b64_field(options: &Json, path: &str) -> Result<Vec<u8>> {
    let text = options
        .pointer(&format!("/{path}"))
        .and_then(Json::as_str)
        .with_context(|| format!("TypeError: no {path} string in the options"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .with_context(|| format!("TypeError: {path} is not base64url"))
}

/// The ids of a list of PublicKeyCredentialDescriptors (absent: none).
fn descriptors(options: &Json, field: &str) -> Result<Vec<Vec<u8>>> {
    let Some(list) = options.get(field) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .with_context(|| format!("TypeError: {field} is not a list"))?;
    list.iter()
        .map(|d| {
            ensure!(d["type"] == "public-key", "TypeError: {field} entry type");
            b64_field(d, "id")
        })
        .collect()
}

fn origin_host(origin: &str) -> Result<String> {
    let url = url::Url::parse(origin).with_context(|| format!("origin {origin:?}"))?;
    let secure = url.scheme() == "https"
        || (url.scheme() == "http" && url.host_str().is_some_and(is_localhost));
    ensure!(secure, "SecurityError: {origin} is not a secure context");
    url.host_str()
        .map(str::to_owned)
        .with_context(|| format!("origin {origin:?} has no host"))
}

fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// A browser's check: the RP ID is the origin's host or a parent domain of it.
fn check_rp_id(rp_id: &str, origin: &str) -> Result<()> {
    let host = origin_host(origin)?;
    ensure!(
        host == rp_id || host.ends_with(&format!(".{rp_id}")),
        "SecurityError: RP ID {rp_id:?} is not the host of {origin} or a parent of it"
    );
    Ok(())
}
