//! The replay seal: `hookrelay replay` signs the relay headers it writes on an
//! event topic, so the relay can tell them from headers a producer forged.
//!
//! The seal is HMAC-SHA256 under `replay.key` over the sealed headers (names
//! and values, length-prefixed so no two lists read alike) and the SHA-256 of
//! the record value: it cannot be moved to another value or another origin.
//! A leaf: hop uses it to write and to check, it uses nothing of the crate.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Domain separation: a seal is never valid as any other HMAC under the same key.
const CONTEXT: &[u8] = b"hookrelay-replay-seal-v1";

/// The shortest accepted `replay.key`, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The `replay.key`. Debug never shows it.
#[derive(Clone)]
pub struct ReplayKey(Vec<u8>);

impl std::fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayKey(<redacted>)")
    }
}

impl ReplayKey {
    pub fn new(key: &str) -> ReplayKey {
        ReplayKey(key.as_bytes().to_vec())
    }

    fn mac(&self, fields: &[(&str, &[u8])], value: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(CONTEXT);
        for (name, field) in fields {
            for part in [name.as_bytes(), field] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part);
            }
        }
        mac.update(&Sha256::digest(value));
        mac
    }

    /// The seal of `fields` (in order) and `value`, base64.
    pub fn seal(&self, fields: &[(&str, &[u8])], value: &[u8]) -> String {
        STANDARD.encode(self.mac(fields, value).finalize().into_bytes())
    }

    /// True when `seal` is this key's seal of `fields` and `value` (compared in constant time).
    pub fn verify(&self, fields: &[(&str, &[u8])], value: &[u8], seal: &str) -> bool {
        STANDARD.decode(seal.trim()).is_ok_and(|tag| self.mac(fields, value).verify_slice(&tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_holds_only_for_its_key_fields_and_value() {
        let key = ReplayKey::new("0123456789abcdef-replay");
        let fields: &[(&str, &[u8])] = &[("hookrelay-origin-topic", b"orders"), ("hookrelay-origin-offset", b"41")];
        let seal = key.seal(fields, b"{\"payload\":1}");
        assert!(key.verify(fields, b"{\"payload\":1}", &seal));
        assert!(!key.verify(fields, b"{\"payload\":2}", &seal), "another value");
        let moved: &[(&str, &[u8])] = &[("hookrelay-origin-topic", b"orders"), ("hookrelay-origin-offset", b"42")];
        assert!(!key.verify(moved, b"{\"payload\":1}", &seal), "another origin");
        // Length prefixes: moving bytes between a name and a value changes the seal.
        let shifted: &[(&str, &[u8])] = &[("hookrelay-origin-topi", b"corders"), ("hookrelay-origin-offset", b"41")];
        assert!(!key.verify(shifted, b"{\"payload\":1}", &seal));
        assert!(!ReplayKey::new("another key of 16+").verify(fields, b"{\"payload\":1}", &seal), "another key");
        assert!(!key.verify(fields, b"{\"payload\":1}", "not base64!"));
        assert_eq!(format!("{key:?}"), "ReplayKey(<redacted>)");
    }
}
