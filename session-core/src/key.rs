//! Session keys: minted from the OS CSPRNG, validated before any I/O, redacted in `Debug`.
//!
//! A key is exactly [`KEY_LEN`] characters of `[a-z0-9]` (Django's alphabet, ~165 bits).
//! Because parsing checks length and alphabet first, a key can never smuggle a path
//! separator, a SQL fragment, a Redis glob or a NUL byte into a backend.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Number of characters in a session key.
pub const KEY_LEN: usize = 32;

/// The characters a key is made of: lowercase ASCII letters and digits (36 symbols).
pub const KEY_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a string is not a session key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The string was empty.
    #[error("session key is empty")]
    Empty,
    /// The string had the wrong length.
    #[error("session key has length {0}, expected {KEY_LEN}")]
    Length(usize),
    /// The string held a character outside `[a-z0-9]`.
    #[error("session key contains a character outside [a-z0-9] at byte {0}")]
    Character(usize),
    /// The operating system's random source failed.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

/// A validated session key.
///
/// `Debug` never prints the key; use [`SessionKey::fingerprint`] in logs and
/// [`SessionKey::as_str`] only where the key itself is needed (cookie, storage).
/// Cheap to clone: clones share the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(Arc<str>);

/// Bytes fetched from the OS per system call when minting keys.
const POOL_BYTES: usize = 4096;

/// A per-thread buffer of OS random bytes, each handed out once.
struct RandomPool {
    buf: Box<[u8; POOL_BYTES]>,
    /// Next unused byte; `POOL_BYTES` when empty.
    pos: usize,
    /// The process that filled the buffer (a fork must not reuse it).
    pid: u32,
}

impl RandomPool {
    /// Drops the buffer if it was filled by another process (a fork's parent).
    fn check_owner(&mut self) {
        let pid = std::process::id();
        if self.pid != pid {
            self.pos = POOL_BYTES;
            self.pid = pid;
        }
    }

    /// The next `n` unused bytes, fewer when the buffer ends sooner (refilled from the
    /// OS when it is used up). Handed out once; the caller wipes them as it reads them.
    fn take(&mut self, n: usize) -> Result<&mut [u8], KeyError> {
        if self.pos >= POOL_BYTES {
            getrandom::fill(&mut self.buf[..]).map_err(|e| KeyError::Random(e.to_string()))?;
            self.pos = 0;
        }
        let start = self.pos;
        self.pos = (start + n).min(POOL_BYTES);
        Ok(&mut self.buf[start..self.pos])
    }
}

thread_local! {
    static POOL: std::cell::RefCell<RandomPool> = std::cell::RefCell::new(RandomPool {
        buf: Box::new([0; POOL_BYTES]),
        pos: POOL_BYTES,
        pid: 0,
    });
}

impl SessionKey {
    /// Mints a fresh random key from the OS CSPRNG.
    ///
    /// Each character is drawn uniformly from [`KEY_ALPHABET`] by rejection sampling,
    /// so the key carries `32 * log2(36) ≈ 165` bits. The bytes come straight from the
    /// OS (`getrandom`), fetched 4 KiB at a time into a per-thread buffer whose bytes are
    /// each used once and wiped as they are taken: one system call serves about a
    /// hundred keys. A forked child discards the parent's buffer (the process id is
    /// checked), so parent and child never mint the same keys.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; KEY_LEN];
        let mut filled = 0;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.check_owner();
            while filled < KEY_LEN {
                // As many bytes as symbols are missing: each one drawn is used once,
                // accepted or not, and wiped.
                for b in pool.take(KEY_LEN - filled)? {
                    // 252 = 7 * 36: bytes at or above it are rejected so every symbol
                    // is equally likely.
                    if *b < 252 {
                        key[filled] = KEY_ALPHABET[usize::from(*b % 36)];
                        filled += 1;
                    }
                    *b = 0;
                }
            }
            Ok::<_, KeyError>(())
        })?;
        // Every byte is one of the alphabet's ASCII symbols, so this cannot fail.
        let text = std::str::from_utf8(&key).map_err(|e| KeyError::Character(e.valid_up_to()))?;
        Ok(SessionKey(Arc::from(text)))
    }

    /// Validates `s` as a key: exactly [`KEY_LEN`] characters of `[a-z0-9]`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() != KEY_LEN {
            return Err(KeyError::Length(s.len()));
        }
        if let Some(i) = s
            .bytes()
            .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit()))
        {
            return Err(KeyError::Character(i));
        }
        Ok(SessionKey(s.into()))
    }

    /// A key built from characters the caller guarantees are [`KEY_LEN`] of
    /// [`KEY_ALPHABET`] (a derived key, see [`crate::hashed`]).
    pub(crate) fn from_derived(s: String) -> Self {
        debug_assert!(SessionKey::parse(&s).is_ok());
        SessionKey(s.into())
    }

    /// The key itself, for a cookie value or a storage name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible tag for logs: the first 8 hex digits of SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Hex SHA-256 of the key: what stores keep when keys are hashed at rest.
    pub fn sha256_hex(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey(<redacted #{}>)", self.fingerprint())
    }
}

impl std::str::FromStr for SessionKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionKey::parse(s)
    }
}

/// Where a store gets new keys from. The default is [`SessionKey::generate`];
/// tests substitute a generator to force collisions.
pub type KeyGenerator = dyn Fn() -> Result<SessionKey, KeyError> + Send + Sync;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_keys_are_valid_and_unique() {
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            let k = SessionKey::generate().expect("rng");
            assert_eq!(k.as_str().len(), KEY_LEN);
            assert!(SessionKey::parse(k.as_str()).is_ok());
            assert!(seen.insert(k), "duplicate key generated");
        }
    }

    #[test]
    fn generated_keys_use_the_whole_alphabet() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.extend(SessionKey::generate().expect("rng").as_str().bytes());
        }
        assert_eq!(seen.len(), 36);
    }

    #[test]
    fn generated_symbols_are_uniform_and_used_bytes_are_wiped() {
        let mut counts = [0u64; 36];
        for _ in 0..100_000 {
            for b in SessionKey::generate().expect("rng").as_str().bytes() {
                let i = KEY_ALPHABET.iter().position(|&a| a == b).expect("alphabet");
                counts[i] += 1;
            }
            POOL.with(|pool| {
                let pool = pool.borrow();
                assert!(
                    pool.buf[..pool.pos].iter().all(|&b| b == 0),
                    "a byte handed out was left in the pool"
                );
            });
        }
        // Pearson's chi-squared over 36 symbols (35 degrees of freedom, mean 35,
        // standard deviation 8.4): a uniform draw stays below 35 + 7 sd except about
        // once in 10^9 runs. Taking `byte % 36` without the rejection would favour four
        // symbols by 8/7 and score in the thousands over 3.2 million symbols.
        let n: u64 = counts.iter().sum();
        let expected = n as f64 / 36.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 35.0 + 7.0 * 8.4, "chi-squared {chi2:.1}: {counts:?}");
    }

    #[test]
    fn rejections() {
        let ok = "abcdefghijklmnopqrstuvwxyz012345";
        assert!(SessionKey::parse(ok).is_ok());
        assert_eq!(SessionKey::parse(""), Err(KeyError::Empty));
        assert_eq!(SessionKey::parse("abc"), Err(KeyError::Length(3)));
        assert_eq!(SessionKey::parse(&ok[..31]), Err(KeyError::Length(31)));
        assert_eq!(
            SessionKey::parse(&format!("{ok}a")),
            Err(KeyError::Length(33))
        );
        let cases = [
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
            "abcdefghijklmnopqrstuvwxyz01234/",
            "../../../../../../../etc/passwd0",
            "abcdefghijklmnopqrstuvwxyz0123\\4",
            "abcdefghijklmnopqrstuvwxyz0123\u{0}4",
            "abcdefghijklmnopqrstuvwxyz01234*",
            "abcdefghijklmnopqrstuvwxyz0123 4",
            "abcdefghijklmnopqrstuvwxyz01234.",
            "abcdefghijklmnopqrstuvwxyz0123'4",
        ];
        for c in cases {
            assert!(
                matches!(SessionKey::parse(c), Err(KeyError::Character(_))),
                "{c:?}"
            );
        }
        // Non-ASCII: 31 ASCII bytes + a two-byte char is 33 bytes; a 30 + 2-byte char is 32.
        let non_ascii = "abcdefghijklmnopqrstuvwxyz0123é";
        assert_eq!(non_ascii.len(), 32);
        assert!(matches!(
            SessionKey::parse(non_ascii),
            Err(KeyError::Character(30))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let k = SessionKey::generate().expect("rng");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(k.as_str()));
        assert!(dbg.contains(&k.fingerprint()));
        assert_eq!(k.fingerprint().len(), 8);
    }
}
