//! Django's signed-data format (`django.core.signing.dumps` / `loads` with a
//! `TimestampSigner`), as `SessionBase.encode` / `decode` use it for `session_data`.
//!
//! ```text
//! [ "." ] base64url(payload) ":" base62(unix seconds) ":" base64url(HMAC-SHA256)
//! ```
//!
//! - `payload` is compact JSON (`separators=(",", ":")`) with Python's `ensure_ascii`:
//!   every character outside printable ASCII is a `\uXXXX` escape (astral characters as
//!   surrogate pairs), so the bytes are pure ASCII. Django decodes them as Latin-1.
//! - The payload is zlib-compressed (default level) only when that saves at least two
//!   bytes; a leading `.` marks a compressed payload and is covered by the signature, so
//!   nothing is inflated before the signature has verified.
//! - The HMAC key is `SHA256(salt + "signer" + SECRET_KEY)` (`salted_hmac`); reading
//!   accepts the current key and every fallback (`SECRET_KEY_FALLBACKS`).
//! - The timestamp is not checked (sessions pass no `max_age`), only parsed.
//!
//! The HMAC, hash, base64 and zlib steps use kept crates (`hmac`, `sha2`, `base64`,
//! `flate2`); only the framing (separators, base62, the ASCII-escaping JSON formatter)
//! is written here, because no crate implements Django's framing.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The salt Django's session engines sign `session_data` with
/// (`"django.contrib.sessions." + "SessionStore"`).
pub const SESSION_SALT: &str = "django.contrib.sessions.SessionStore";

/// The largest payload (after inflating) a signed value may carry, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a signed value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The value lacks the `payload:timestamp:signature` shape.
    #[error("not a Django signed value: {0}")]
    Malformed(&'static str),
    /// The signature matches none of the secret keys: the value was altered, or it was
    /// signed under another `SECRET_KEY` (or another salt).
    #[error(
        "signature does not match any configured secret key (tampered, or signed with another SECRET_KEY)"
    )]
    BadSignature,
    /// The signature verified, but the timestamp is not base62.
    #[error("bad timestamp in a signed value")]
    BadTimestamp,
    /// The signature verified, but the payload is not valid base64url.
    #[error("bad base64 payload: {0}")]
    Base64(String),
    /// The signature verified, but the payload does not inflate.
    #[error("bad zlib payload: {0}")]
    Inflate(String),
    /// The payload is larger than the limit.
    #[error("payload is over the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The payload is not JSON (or not a JSON object where a session needs one).
    #[error("bad JSON payload: {0}")]
    Json(String),
    /// No secret key is configured.
    #[error("no secret key configured")]
    NoKey,
}

/// Signs and verifies values as `django.core.signing` does, for one salt, under a
/// current secret key and older ones still accepted for reading.
#[derive(Clone)]
pub struct Signer {
    /// Derived HMAC keys: the current one first, then the fallbacks.
    keys: Vec<[u8; 32]>,
    max_payload: usize,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("max_payload", &self.max_payload)
            .finish()
    }
}

impl Signer {
    /// A signer for `salt` under `secret_key` (signs and verifies), also verifying with
    /// each of `fallbacks` (Django's `SECRET_KEY_FALLBACKS`).
    pub fn new<S: AsRef<str>>(salt: &str, secret_key: &str, fallbacks: &[S]) -> Self {
        let derive = |secret: &str| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(salt.as_bytes());
            h.update(b"signer");
            h.update(secret.as_bytes());
            h.finalize().into()
        };
        let mut keys = vec![derive(secret_key)];
        keys.extend(fallbacks.iter().map(|k| derive(k.as_ref())));
        Signer {
            keys,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// A signer with the session salt ([`SESSION_SALT`]).
    pub fn sessions<S: AsRef<str>>(secret_key: &str, fallbacks: &[S]) -> Self {
        Signer::new(SESSION_SALT, secret_key, fallbacks)
    }

    /// The same signer with another payload limit.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    fn mac(key: &[u8; 32], value: &[u8]) -> Hmac<Sha256> {
        // A 32-byte key is always accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value);
        mac
    }

    /// `signing.dumps(value, salt, compress=True)` at the Unix time `now_secs`.
    pub fn dumps(&self, value: &Value, now_secs: i64) -> Result<String, SigningError> {
        let payload = to_ascii_json(value)?;
        if payload.len() > self.max_payload {
            return Err(SigningError::TooLarge {
                limit: self.max_payload,
            });
        }
        let mut is_compressed = false;
        let mut data = payload.clone();
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        if z.write_all(&payload).is_ok()
            && let Ok(compressed) = z.finish()
            && compressed.len() + 1 < payload.len()
        {
            data = compressed;
            is_compressed = true;
        }
        let mut b64 = String::with_capacity(data.len() * 4 / 3 + 48);
        if is_compressed {
            b64.push('.');
        }
        URL_SAFE_NO_PAD.encode_string(&data, &mut b64);
        b64.push(':');
        b64.push_str(&base62_encode(now_secs));
        self.sign(b64)
    }

    /// `Signer.sign`: appends `:` and the signature under the current key.
    pub fn sign(&self, mut value: String) -> Result<String, SigningError> {
        let key = self.keys.first().ok_or(SigningError::NoKey)?;
        let tag = Self::mac(key, value.as_bytes()).finalize().into_bytes();
        value.push(':');
        URL_SAFE_NO_PAD.encode_string(tag, &mut value);
        Ok(value)
    }

    /// `Signer.unsign`: the signed part of `signed` when its signature verifies under
    /// any of the keys (compared in constant time).
    pub fn unsign<'a>(&self, signed: &'a str) -> Result<&'a str, SigningError> {
        let (value, sig) = signed
            .rsplit_once(':')
            .ok_or(SigningError::Malformed("no ':' separator"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| SigningError::BadSignature)?;
        for key in &self.keys {
            if Self::mac(key, value.as_bytes()).verify_slice(&sig).is_ok() {
                return Ok(value);
            }
        }
        Err(SigningError::BadSignature)
    }

    /// `signing.loads(signed, salt)` without `max_age`: the JSON value and the
    /// timestamp (Unix seconds) it was signed at.
    pub fn loads(&self, signed: &str) -> Result<(Value, i64), SigningError> {
        let value = self.unsign(signed)?;
        let (b64, ts) = value
            .rsplit_once(':')
            .ok_or(SigningError::Malformed("no timestamp"))?;
        let ts = base62_decode(ts).ok_or(SigningError::BadTimestamp)?;
        let (compressed, b64) = match b64.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, b64),
        };
        let raw = URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|e| SigningError::Base64(e.to_string()))?;
        let payload = if compressed {
            let mut out = Vec::new();
            let limit = u64::try_from(self.max_payload).unwrap_or(u64::MAX);
            ZlibDecoder::new(raw.as_slice())
                .take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| SigningError::Inflate(e.to_string()))?;
            out
        } else {
            raw
        };
        if payload.len() > self.max_payload {
            return Err(SigningError::TooLarge {
                limit: self.max_payload,
            });
        }
        // Django decodes the payload as Latin-1 before `json.loads`.
        let text: String = payload.iter().map(|&b| char::from(b)).collect();
        let v = serde_json::from_str(&text).map_err(|e| SigningError::Json(e.to_string()))?;
        Ok((v, ts))
    }
}

/// `int` to Django's base62 (`0-9A-Za-z`, a leading `-` for negatives).
pub fn base62_encode(n: i64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut v = n.unsigned_abs();
    let mut out = Vec::new();
    while v > 0 {
        out.push(BASE62[(v % 62) as usize]);
        v /= 62;
    }
    if n < 0 {
        out.push(b'-');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Django's base62 back to an integer; `None` for any other character or an overflow.
pub fn base62_decode(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for b in digits.bytes() {
        let d = BASE62.iter().position(|&c| c == b)?;
        v = v.checked_mul(62)?.checked_add(i64::try_from(d).ok()?)?;
    }
    Some(if neg { -v } else { v })
}

/// Python's `json.dumps(v, separators=(",", ":"))` (with `ensure_ascii=True`): compact,
/// and every character outside `' '..='~'` in strings escaped as `\uXXXX`.
pub fn to_ascii_json(v: &Value) -> Result<Vec<u8>, SigningError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    serde::Serialize::serialize(v, &mut ser).map_err(|e| SigningError::Json(e.to_string()))?;
    Ok(out)
}

/// serde_json's compact formatter with Python's `ensure_ascii` escaping.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(writer, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_700_000_000;

    fn signer() -> Signer {
        Signer::sessions::<&str>("test-secret", &[])
    }

    /// reference/django.md §2.5: the value Django 5.2 produces at the frozen time.
    #[test]
    fn django_vector_2_5() {
        let s = signer().dumps(&json!({"user_id": 101}), T).expect("dumps");
        assert_eq!(
            s,
            "eyJ1c2VyX2lkIjoxMDF9:1r31eq:_h3jaZ971_4kGhQPNtIugVb-pQC9VhmGBadPptk5vEo"
        );
        assert_eq!(signer().loads(&s), Ok((json!({"user_id": 101}), T)));
    }

    #[test]
    fn non_ascii_is_escaped_like_python() {
        let s = signer().dumps(&json!({"name": "Zoë"}), T).expect("dumps");
        assert_eq!(
            s,
            "eyJuYW1lIjoiWm9cdTAwZWIifQ:1r31eq:n_uPLpUDISv4gtj2FM54v_J1JkwXIFGQTA6lwzMgaxc"
        );
        let astral = to_ascii_json(&json!("a\u{1F600}\u{7f}\n")).expect("json");
        assert_eq!(astral, br#""a\ud83d\ude00\u007f\n""#.to_vec());
    }

    #[test]
    fn compressed_vector_from_django_verifies_and_inflates() {
        let django = ".eJxFzTEOQEAARNG7TE1iFsvuVUQholBsI9uJuytkRveq_2_s21WRF5z1KG2H5gOFIPTCIIxCFCZhFpKDf9ptOk7X6Tzdpwf0gV4wYX1eJLw3oQ:1r31eq:Ak_Bixg8Jv42dYacT9CTdM2opZ6WWqqP3YAd-9uEU9A";
        let items: Vec<String> = (0..20).map(|i| format!("item-{i}")).collect();
        let expect = json!({ "cart": items });
        assert_eq!(signer().loads(django), Ok((expect.clone(), T)));
        // Ours compresses too (a leading dot) and round-trips.
        let ours = signer().dumps(&expect, T).expect("dumps");
        assert!(ours.starts_with('.'), "{ours}");
        assert_eq!(signer().loads(&ours), Ok((expect, T)));
    }

    #[test]
    fn other_keys_and_tampering_are_refused_fallbacks_accepted() {
        let s = "eyJ1c2VyX2lkIjoxMDF9:1r31eq:_h3jaZ971_4kGhQPNtIugVb-pQC9VhmGBadPptk5vEo";
        let other = Signer::sessions::<&str>("another-secret", &[]);
        assert_eq!(other.loads(s), Err(SigningError::BadSignature));
        let rotated = Signer::sessions("new-secret", &["test-secret"]);
        assert_eq!(rotated.loads(s).map(|v| v.0), Ok(json!({"user_id": 101})));
        // Re-signing uses the current key only.
        let resigned = rotated.dumps(&json!({"user_id": 101}), T).expect("dumps");
        assert_eq!(signer().loads(&resigned), Err(SigningError::BadSignature));
        let tampered = s.replacen("eyJ1c2VyX2lkIjoxMDF9", "eyJ1c2VyX2lkIjoxMDJ9", 1);
        assert_eq!(signer().loads(&tampered), Err(SigningError::BadSignature));
        // The signed-cookie salt is another key.
        let cookie = Signer::new::<&str>(
            "django.contrib.sessions.backends.signed_cookies",
            "test-secret",
            &[],
        );
        assert_eq!(cookie.loads(s), Err(SigningError::BadSignature));
        for bad in ["", "abc", "a:b", "::", "x:1r31eq:!!!!"] {
            assert!(signer().loads(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base62_round_trips() {
        assert_eq!(base62_encode(T), "1r31eq");
        assert_eq!(base62_decode("1r31eq"), Some(T));
        for n in [0, 1, 61, 62, -5, i64::MAX, -i64::MAX] {
            assert_eq!(base62_decode(&base62_encode(n)), Some(n), "{n}");
        }
        assert_eq!(base62_decode("zzzzzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(base62_decode("1_"), None);
    }

    #[test]
    fn zip_bombs_stop_at_the_limit() {
        let big = json!({"x": "a".repeat(10_000)});
        let s = signer().dumps(&big, T).expect("dumps");
        let small = signer().max_payload(1000);
        assert_eq!(small.loads(&s), Err(SigningError::TooLarge { limit: 1000 }));
    }
}
