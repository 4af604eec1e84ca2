//! The stored form of a record in Redis and Memcached: a fixed 42-byte ASCII header
//! carrying the authoritative version and deadline, then the codec's bytes.
//!
//! ```text
//! v00000000000000000007e00000001767225600000<codec bytes...>
//! ^ version, 20 digits  ^ expires_at (Unix ms), 20 digits
//! ```
//!
//! Why a header in front of the blob rather than a Redis hash: the whole record stays one
//! string, so `create` is a plain `SET NX PX`, `load` a plain `GET` (the same commands a
//! raw client sends), and `touch` rewrites the deadline in place with `SETRANGE` without
//! sending the data again. The fields are fixed-width decimal so the Lua scripts in
//! [`crate::redis`] can read and rewrite them with `string.sub` and `SETRANGE`.
//! The header's fields win over the ones inside the codec's bytes: `touch` and `update`
//! change them without re-encoding.

use session_core::{CodecError, LazyRecord, Record, Timestamp};

/// Length of the header in bytes.
pub(crate) const HEADER_LEN: usize = 42;
/// Byte offset of the deadline's digits (what `touch` rewrites).
pub(crate) const EXPIRES_OFFSET: usize = 22;
const DIGITS: usize = 20;

/// Appends the 20-digit, zero-padded decimal form of `n`.
pub(crate) fn push_digits(out: &mut Vec<u8>, n: u64) {
    let mut buf = [b'0'; DIGITS];
    let mut n = n;
    let mut i = DIGITS;
    while n > 0 && i > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf);
}

/// The deadline as header digits; deadlines before 1970 never reach a store (they are
/// already expired), so clamping at zero is only a guard.
pub(crate) fn deadline_digits(expires_at: Timestamp) -> u64 {
    u64::try_from(expires_at.as_unix_millis()).unwrap_or(0)
}

/// Header followed by `payload`.
pub(crate) fn wrap(version: u64, expires_at: Timestamp, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(b'v');
    push_digits(&mut out, version);
    out.push(b'e');
    push_digits(&mut out, deadline_digits(expires_at));
    out.extend_from_slice(payload);
    out
}

/// The deadline field alone, as `touch` writes it.
pub(crate) fn deadline_field(expires_at: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(DIGITS);
    push_digits(&mut out, deadline_digits(expires_at));
    out
}

fn parse_digits(b: &[u8]) -> Option<u64> {
    if b.len() != DIGITS || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A parsed stored value: header fields and the codec's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    /// The authoritative version.
    pub version: u64,
    /// The authoritative deadline.
    pub expires_at: Timestamp,
    /// The codec's bytes.
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits a stored value; a value that does not start with a valid header is corrupt.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::Truncated(format!(
                "stored value is {} bytes, shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let (header, payload) = bytes.split_at(HEADER_LEN);
        let bad = || CodecError::Corrupt("stored value has no valid cache header".into());
        if header[0] != b'v' || header[EXPIRES_OFFSET - 1] != b'e' {
            return Err(bad());
        }
        let version = parse_digits(&header[1..EXPIRES_OFFSET - 1]).ok_or_else(bad)?;
        let expires = parse_digits(&header[EXPIRES_OFFSET..]).ok_or_else(bad)?;
        let expires = i64::try_from(expires).map_err(|_| bad())?;
        Ok(Envelope {
            version,
            expires_at: Timestamp::from_unix_millis(expires),
            payload,
        })
    }

    /// Whether the record is live at `now`.
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    /// Decodes the payload and overwrites the fields the header is authoritative for.
    pub fn decode(&self, codec: &dyn session_core::Codec) -> Result<Record, CodecError> {
        let mut record = codec.decode(self.payload)?;
        record.version = self.version;
        record.expires_at = self.expires_at;
        Ok(record)
    }

    /// [`Envelope::decode`], the data left encoded until it is read
    /// ([`session_core::lazy`]): the payload is copied once, not decoded.
    #[cfg(feature = "memcached")]
    pub fn decode_lazy(&self, codec: &dyn session_core::Codec) -> Result<LazyRecord, CodecError> {
        let mut record = codec.decode_lazy(self.payload.to_vec().into())?;
        record.version = self.version;
        record.expires_at = self.expires_at;
        Ok(record)
    }
}

/// A whole stored value, owned, whose header was found valid: a lazy decode keeps its
/// buffer for the record's data instead of copying the payload out of it.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct StoredValue {
    version: u64,
    expires_at: Timestamp,
    bytes: Vec<u8>,
}

#[cfg(feature = "redis")]
impl StoredValue {
    /// `bytes` with its header checked, as [`Envelope::parse`] checks it.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, CodecError> {
        let Envelope {
            version,
            expires_at,
            ..
        } = Envelope::parse(&bytes)?;
        Ok(StoredValue {
            version,
            expires_at,
            bytes,
        })
    }

    /// The value's header fields and payload.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            version: self.version,
            expires_at: self.expires_at,
            payload: &self.bytes[HEADER_LEN..],
        }
    }

    /// The record, its data left encoded until it is read ([`session_core::lazy`]) and
    /// kept in this value's buffer: nothing is copied.
    pub fn decode_lazy(self, codec: &dyn session_core::Codec) -> Result<LazyRecord, CodecError> {
        let len = self.bytes.len();
        let payload = session_core::EncodedBytes::from(self.bytes)
            .slice(HEADER_LEN..len)
            .ok_or_else(|| CodecError::Truncated("stored value shorter than its header".into()))?;
        let mut record = codec.decode_lazy(payload)?;
        record.version = self.version;
        record.expires_at = self.expires_at;
        Ok(record)
    }
}

/// Milliseconds from `now` until `expires_at`, or `None` when the deadline has passed
/// (such a record must never be written as "no expiry").
pub(crate) fn ttl_millis(expires_at: Timestamp, now: Timestamp) -> Option<u64> {
    let ms = now.millis_until(expires_at);
    u64::try_from(ms).ok().filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let t = Timestamp::from_unix_millis(1_767_225_600_123);
        let bytes = wrap(7, t, b"payload");
        assert_eq!(
            &bytes[..HEADER_LEN],
            b"v00000000000000000007e00000001767225600123"
        );
        let env = Envelope::parse(&bytes).expect("parse");
        assert_eq!(env.version, 7);
        assert_eq!(env.expires_at, t);
        assert_eq!(env.payload, b"payload");
        let later = Timestamp::from_unix_millis(1_800_000_000_000);
        let mut touched = bytes.clone();
        touched[EXPIRES_OFFSET..HEADER_LEN].copy_from_slice(&deadline_field(later));
        assert_eq!(Envelope::parse(&touched).expect("parse").expires_at, later);
        assert_eq!(
            Envelope::parse(&wrap(u64::MAX, t, b""))
                .expect("max")
                .version,
            u64::MAX
        );
    }

    #[test]
    fn garbage_is_a_codec_error() {
        for bad in [
            &b""[..],
            b"v0000",
            b"x00000000000000000007e00000001767225600123",
            b"v0000000000000000000xe00000001767225600123",
            b"v00000000000000000007e9999999999999999999x",
            b"v00000000000000000007e99999999999999999999",
        ] {
            assert!(Envelope::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_of_past_deadlines_is_none() {
        let now = Timestamp::from_unix_millis(10_000);
        assert_eq!(ttl_millis(now.add_secs(1), now), Some(1000));
        assert_eq!(ttl_millis(now, now), None);
        assert_eq!(ttl_millis(now.add_secs(-1), now), None);
    }
}
