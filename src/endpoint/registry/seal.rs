//! `registry.key`: seals each secret field of a registry record (AES-256-GCM,
//! a fresh random nonce per value, the endpoint name and the field as
//! associated data) and authenticates the whole record (HMAC-SHA256 over the
//! name, the write time and the value, sealed fields included), so whoever
//! can write the topic without the key can neither read a secret nor
//! repoint an endpoint, nor move a record or a sealed value to another name.
//!
//! Two keys are derived from `registry.key` (HMAC-SHA256 of a label), so the
//! cipher and the MAC never share a key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

/// Prefix of a sealed value in a record: `sealed:v1:` + base64(nonce || ciphertext || tag).
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Domain separation of the record tag.
const TAG_CONTEXT: &[u8] = b"hookrelay-registry-record-v1";

/// Domain separation of a sealed field's associated data.
const FIELD_CONTEXT: &[u8] = b"hookrelay-registry-field-v1";

const NONCE_BYTES: usize = 12;

/// A sealed value or a record that does not verify under this key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error("{0} is not sealed")]
    NotSealed(String),
    #[error("{0} does not open under registry.key (another key, another name, or altered)")]
    Field(String),
    #[error("the record's tag does not verify under registry.key (another key, another name, or altered)")]
    Tag,
}

/// `registry.key`, split into a cipher key and a MAC key. Debug never shows them.
#[derive(Clone)]
pub struct RegistryKey {
    cipher: Aes256Gcm,
    mac: Vec<u8>,
}

impl std::fmt::Debug for RegistryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryKey(<redacted>)")
    }
}

fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Each part length-prefixed, so that no two lists of parts read alike.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

impl RegistryKey {
    /// From the key's bytes (`RegistryConfig::key_bytes`: at least 32).
    pub fn new(key: &[u8]) -> RegistryKey {
        let cipher_key = derive(key, b"hookrelay-registry-cipher");
        RegistryKey {
            cipher: Aes256Gcm::new_from_slice(&cipher_key).expect("AES-256 takes a 32-byte key"),
            mac: derive(key, b"hookrelay-registry-mac").to_vec(),
        }
    }

    /// Seals `clear`, the value of `field` of endpoint `name`.
    pub fn seal(&self, name: &str, field: &str, clear: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let aad = framed(&[FIELD_CONTEXT, name.as_bytes(), field.as_bytes()]);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear.as_bytes(), aad: &aad })
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens what [`RegistryKey::seal`] made for the same `name` and `field`.
    pub fn open(&self, name: &str, field: &str, sealed: &str) -> Result<String, Unsealed> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| Unsealed::NotSealed(field.to_string()))?;
        let refused = || Unsealed::Field(field.to_string());
        let bytes = STANDARD.decode(body).map_err(|_| refused())?;
        if bytes.len() < NONCE_BYTES {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let aad = framed(&[FIELD_CONTEXT, name.as_bytes(), field.as_bytes()]);
        let clear = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| refused())?;
        String::from_utf8(clear).map_err(|_| refused())
    }

    fn tag_mac(&self, name: &str, at_ms: i64, value: Option<&[u8]>) -> Hmac<sha2::Sha256> {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.mac).expect("HMAC takes keys of any length");
        // A tombstone (None) and an empty value must not share a tag.
        let kind: &[u8] = if value.is_some() { b"put" } else { b"delete" };
        let at = at_ms.to_be_bytes();
        mac.update(&framed(&[TAG_CONTEXT, name.as_bytes(), &at, kind, value.unwrap_or_default()]));
        mac
    }

    /// The tag of a record: its name (key), write time and value (`None` = tombstone), base64.
    pub fn tag(&self, name: &str, at_ms: i64, value: Option<&[u8]>) -> String {
        STANDARD.encode(self.tag_mac(name, at_ms, value).finalize().into_bytes())
    }

    /// Checks a record's tag (in constant time).
    pub fn verify(&self, name: &str, at_ms: i64, value: Option<&[u8]>, tag: &str) -> Result<(), Unsealed> {
        let tag = STANDARD.decode(tag.trim()).map_err(|_| Unsealed::Tag)?;
        self.tag_mac(name, at_ms, value).verify_slice(&tag).map_err(|_| Unsealed::Tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> RegistryKey {
        RegistryKey::new(&[byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_name_and_field() {
        let k = key(1);
        let sealed = k.seal("acme", "secrets[0]", "whsec_c2VjcmV0");
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("c2VjcmV0"), "{sealed}");
        assert_eq!(k.open("acme", "secrets[0]", &sealed).unwrap(), "whsec_c2VjcmV0");
        assert_ne!(sealed, k.seal("acme", "secrets[0]", "whsec_c2VjcmV0"), "a fresh nonce each time");
        assert_eq!(k.open("other", "secrets[0]", &sealed), Err(Unsealed::Field("secrets[0]".into())));
        assert!(k.open("acme", "headers.authorization", &sealed).is_err(), "moved to another field");
        assert!(key(2).open("acme", "secrets[0]", &sealed).is_err(), "another key");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(k.open("acme", "secrets[0]", std::str::from_utf8(&tampered).unwrap()).is_err());
        assert_eq!(k.open("acme", "secrets[0]", "whsec_x"), Err(Unsealed::NotSealed("secrets[0]".into())));
        assert!(k.open("acme", "f", "sealed:v1:AAAA").is_err(), "too short");
    }

    #[test]
    fn a_tag_binds_name_time_and_value() {
        let k = key(1);
        let tag = k.tag("acme", 1000, Some(b"{\"url\":\"https://a.example/\"}"));
        assert!(k.verify("acme", 1000, Some(b"{\"url\":\"https://a.example/\"}"), &tag).is_ok());
        assert!(k.verify("acme", 1000, Some(b"{\"url\":\"https://evil.example/\"}"), &tag).is_err());
        assert!(k.verify("other", 1000, Some(b"{\"url\":\"https://a.example/\"}"), &tag).is_err());
        assert!(k.verify("acme", 1001, Some(b"{\"url\":\"https://a.example/\"}"), &tag).is_err());
        assert!(key(2).verify("acme", 1000, Some(b"{\"url\":\"https://a.example/\"}"), &tag).is_err());
        let delete = k.tag("acme", 1000, None);
        assert!(k.verify("acme", 1000, None, &delete).is_ok());
        assert!(k.verify("acme", 1000, Some(b""), &delete).is_err(), "a tombstone is not an empty value");
        assert!(k.verify("acme", 1000, None, "not base64!").is_err());
    }
}
