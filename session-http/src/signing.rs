//! Cookie-value signing: HMAC-SHA256 with a list of keys, so keys can be rotated.
//!
//! The first key signs; any key verifies, so an operator rotates by putting a new key
//! first and dropping the old one once the cookies it signed have expired. Each use
//! (the session-key cookie, the cookie engine's data) and each cookie name is bound
//! into the MAC, so a signature minted for one can never be replayed as the other.
//! Verification goes through `hmac`'s constant-time comparison.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Length of a tag in unpadded base64url.
pub(crate) const TAG_B64_LEN: usize = 43;

/// What a signature is for: part of the signed message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// The cookie holds a session key.
    SessionKey,
    /// The cookie holds the whole session (the `cookie` engine).
    SessionData,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        // The labels name the crate the rules first lived in; they are part of every
        // signed cookie, so changing them would log every signed-in user out.
        match self {
            Purpose::SessionKey => b"session-axum/session-key/v1",
            Purpose::SessionData => b"session-axum/session-data/v1",
        }
    }
}

/// Signs with the first key, verifies with any.
#[derive(Clone)]
pub(crate) struct Signer {
    /// HMAC states already keyed: cloning one is cheaper than re-keying per request.
    keys: Vec<HmacSha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer(<{} keys redacted>)", self.keys.len())
    }
}

impl Signer {
    /// A signer over `keys`, or `None` when the list is empty.
    pub(crate) fn new(keys: &[String]) -> Option<Self> {
        let keys: Vec<HmacSha256> = keys
            .iter()
            .filter_map(|k| HmacSha256::new_from_slice(k.as_bytes()).ok())
            .collect();
        (!keys.is_empty()).then_some(Signer { keys })
    }

    fn mac(base: &HmacSha256, purpose: Purpose, cookie_name: &str, value: &str) -> HmacSha256 {
        let mut mac = base.clone();
        // Length-prefixed fields: no two (name, value) pairs produce the same message.
        mac.update(purpose.label());
        mac.update(&(cookie_name.len() as u64).to_be_bytes());
        mac.update(cookie_name.as_bytes());
        mac.update(value.as_bytes());
        mac
    }

    /// The base64url tag of `value` under the first key.
    pub(crate) fn sign(&self, purpose: Purpose, cookie_name: &str, value: &str) -> String {
        // `new` guarantees at least one key.
        let Some(first) = self.keys.first() else {
            return String::new();
        };
        let tag = Self::mac(first, purpose, cookie_name, value).finalize();
        URL_SAFE_NO_PAD.encode(tag.into_bytes())
    }

    /// Whether `tag` (base64url) signs `value` under any of the keys, compared in
    /// constant time.
    pub(crate) fn verify(
        &self,
        purpose: Purpose,
        cookie_name: &str,
        value: &str,
        tag: &str,
    ) -> bool {
        if tag.len() != TAG_B64_LEN {
            return false;
        }
        let mut raw = [0u8; TAG_LEN + 2];
        let Ok(n) = URL_SAFE_NO_PAD.decode_slice(tag, &mut raw) else {
            return false;
        };
        if n != TAG_LEN {
            return false;
        }
        self.keys.iter().any(|k| {
            Self::mac(k, purpose, cookie_name, value)
                .verify_slice(&raw[..TAG_LEN])
                .is_ok()
        })
    }

    /// `value.tag`.
    pub(crate) fn seal(&self, purpose: Purpose, cookie_name: &str, value: &str) -> String {
        let tag = self.sign(purpose, cookie_name, value);
        let mut out = String::with_capacity(value.len() + 1 + tag.len());
        out.push_str(value);
        out.push('.');
        out.push_str(&tag);
        out
    }

    /// The value inside `sealed` (`value.tag`) when its tag verifies.
    pub(crate) fn open<'a>(
        &self,
        purpose: Purpose,
        cookie_name: &str,
        sealed: &'a str,
    ) -> Option<&'a str> {
        let (value, tag) = sealed.rsplit_once('.')?;
        self.verify(purpose, cookie_name, value, tag)
            .then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old-key-old-key-old-key-old-key-old-key!";
    const NEW: &str = "new-key-new-key-new-key-new-key-new-key!";

    #[test]
    fn sign_with_first_verify_with_any() {
        let old = Signer::new(&[OLD.into()]).expect("one key");
        let rotated = Signer::new(&[NEW.into(), OLD.into()]).expect("two keys");
        let new_only = Signer::new(&[NEW.into()]).expect("one key");
        let sealed = old.seal(Purpose::SessionKey, "sessionid", "abc");
        assert_eq!(
            rotated.open(Purpose::SessionKey, "sessionid", &sealed),
            Some("abc")
        );
        assert_eq!(
            new_only.open(Purpose::SessionKey, "sessionid", &sealed),
            None
        );
        // The rotated signer signs with the new key.
        let resealed = rotated.seal(Purpose::SessionKey, "sessionid", "abc");
        assert_eq!(
            new_only.open(Purpose::SessionKey, "sessionid", &resealed),
            Some("abc")
        );
        assert_eq!(old.open(Purpose::SessionKey, "sessionid", &resealed), None);
    }

    #[test]
    fn tags_are_bound_to_purpose_name_and_value() {
        let s = Signer::new(&[NEW.into()]).expect("key");
        let sealed = s.seal(Purpose::SessionKey, "sessionid", "abc");
        assert_eq!(s.open(Purpose::SessionData, "sessionid", &sealed), None);
        assert_eq!(s.open(Purpose::SessionKey, "other", &sealed), None);
        let (_, tag) = sealed.rsplit_once('.').expect("dot");
        assert_eq!(tag.len(), TAG_B64_LEN);
        assert!(!s.verify(Purpose::SessionKey, "sessionid", "abd", tag));
        assert_eq!(s.open(Purpose::SessionKey, "sessionid", "abc"), None);
        assert_eq!(s.open(Purpose::SessionKey, "sessionid", "abc.!!!"), None);
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(s.open(Purpose::SessionKey, "sessionid", &flipped), None);
        assert!(Signer::new(&[]).is_none());
        assert!(!format!("{s:?}").contains("new-key"));
    }
}
