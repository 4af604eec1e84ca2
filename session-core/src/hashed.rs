//! Session keys hashed at rest: a wrapper store that never hands the real key to the backend.
//!
//! A session key is a bearer credential. If a store keeps it as-is, anyone who reads a
//! database dump, a Redis `SCAN`, a backup of the session directory or a replica can
//! replay every live session by sending the key back as a cookie. Rack closed that hole
//! after CVE-2019-16782 by storing a hash of the session id; [`HashedKeys`] does the same
//! for any [`SessionStore`], in one place: every key is mapped to a *derived key* before
//! the wrapped store sees it, and the derived key is all the backend ever stores.
//!
//! The derived key is the SHA-256 digest of the key, written as 32 base-36 digits
//! (`[a-z0-9]`, the same shape as a session key), so every backend stores it unchanged,
//! lookups stay a single O(1) get, and nothing about a backend changes. 32 base-36 digits
//! keep ~165 bits of the digest: collisions between derived keys are as unlikely as
//! between random keys, and the digest cannot be turned back into the key. No secret
//! (pepper) is involved, so there is no key to rotate or lose: the session keys carry
//! 165 bits of OS randomness, which makes guessing them from a hash hopeless anyway.
//!
//! [`SessionStore::create`] still returns the *original* key, which goes to the cookie:
//! the trait's default `create` mints keys and calls this wrapper's
//! [`SessionStore::insert_new`], which stores under the derived key.
//!
//! What hashing gives up, by design:
//! - [`SessionStore::list`] returns derived keys, which are not usable as session keys
//!   through the wrapper. The wrapper therefore does not claim the `listing`
//!   [`Capabilities`] flag, and tools that need usable keys (`sessions copy`) refuse
//!   with an "unsupported" error instead of reporting nonsense. Maintenance
//!   ([`SessionStore::maintenance`]) is forwarded: `sessions stats` counts what the inner
//!   store holds under derived keys (counts and sizes do not need the keys), and
//!   `sessions stats` on an engine without maintenance refuses as above. To move hashed
//!   sessions between stores, copy them with `hash_keys = false` on both sides: the
//!   derived keys are valid keys, so the records move verbatim, and a destination that
//!   turns `hash_keys` back on serves them to the original cookies.
//! - Turning hashing on (or off) in place logs everyone out: records written under plain
//!   keys are not found under derived keys, and expire as usual. To turn it on without
//!   that, copy into a new namespace: `sessions copy --from plain.toml --to hashed.toml`
//!   (another directory, table or prefix, `hash_keys = true` in the destination) reads
//!   the original keys from the plain store and the destination stores their derived
//!   keys; then point the application at the destination.
//! - Backends log the fingerprint of the key they see, which is the derived key's: to
//!   match a backend log line with a middleware one, compare against
//!   `derive_key(&key).fingerprint()`.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::hashed::{HashedKeys, derive_key};
//! use session_core::SessionKey;
//!
//! let key = SessionKey::generate().unwrap();
//! let stored = derive_key(&key);
//! assert_ne!(stored, key);
//! assert_eq!(stored, derive_key(&key), "deterministic: lookups stay O(1)");
//! assert!(SessionKey::parse(stored.as_str()).is_ok(), "a valid key for every backend");
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::users::{UserIndex, UserSession, index_of};

use crate::error::Result;
use crate::key::{KEY_ALPHABET, KEY_LEN, SessionKey};
use crate::lazy::LazyRecord;
use crate::record::Record;
use crate::store::{Capabilities, Inserted, RawAccess, SessionStore};
use crate::time::Timestamp;

/// The key a hashing store keeps for `key`: SHA-256 of the key, as 32 base-36 digits.
///
/// Deterministic and one-way; the result is itself a valid [`SessionKey`].
pub fn derive_key(key: &SessionKey) -> SessionKey {
    let digest: [u8; 32] = Sha256::digest(key.as_str().as_bytes()).into();
    SessionKey::from_derived(base36_digits(digest))
}

/// The lowest [`KEY_LEN`] base-36 digits of a big-endian 256-bit number, most
/// significant first: the digest reduced modulo 36^32 (≈ 2^165).
fn base36_digits(mut n: [u8; 32]) -> String {
    let mut digits = [0u8; KEY_LEN];
    for slot in digits.iter_mut().rev() {
        // Long division of the whole number by 36; the remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            // cur < 36 * 256, so the quotient fits in a byte.
            *byte = (cur / 36) as u8;
            rem = cur % 36;
        }
        *slot = KEY_ALPHABET[rem as usize];
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// A store wrapper that keeps [`derive_key`] of every key instead of the key itself.
///
/// Built by [`crate::EngineRegistry::build`] when `hash_keys = true`, or directly:
///
/// ```
/// # use std::sync::Arc;
/// # use session_core::{SessionStore, hashed::HashedKeys};
/// # fn wrap(inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
/// Arc::new(HashedKeys::new(inner))
/// # }
/// ```
pub struct HashedKeys {
    inner: Arc<dyn SessionStore>,
    engine: String,
}

impl HashedKeys {
    /// Wraps `inner`: from now on it only ever sees derived keys.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        let engine = format!("{} (hashed keys)", inner.engine());
        HashedKeys { inner, engine }
    }

    /// The wrapped store, which holds records under derived keys.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }
}

impl fmt::Debug for HashedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashedKeys")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl SessionStore for HashedKeys {
    fn engine(&self) -> &str {
        &self.engine
    }

    fn capabilities(&self) -> Capabilities {
        // Listing yields derived keys, which cannot be used as session keys through this
        // wrapper: claiming `listing` would let tools treat them as if they could.
        let mut caps = self.inner.capabilities();
        caps.listing = false;
        caps
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.inner.insert_new(&derive_key(key), record).await
    }

    // `create` is the trait's default: it mints original keys and calls `insert_new`
    // above, so the caller gets the original key and the store the derived one.

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(&derive_key(key)).await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.inner.load_lazy(&derive_key(key)).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.inner
            .update(&derive_key(key), record, expected_version)
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(&derive_key(key)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.inner.touch(&derive_key(key), expires_at).await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.inner.exists(&derive_key(key)).await
    }

    async fn clear_expired(&self) -> Result<u64> {
        self.inner.clear_expired().await
    }

    async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }

    /// Derived keys, as the wrapped store holds them (`after` is a derived key too).
    /// They cannot be turned back into session keys; see the module docs.
    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.inner.list(after, limit).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner.raw().map(|_| self as &dyn RawAccess)
    }

    /// The inner store's, unchanged: schema, expiry sweeps and statistics do not depend
    /// on keys (statistics read the derived keys the inner store holds).
    fn maintenance(&self) -> Option<&dyn crate::Maintenance> {
        self.inner.maintenance()
    }

    /// The inner store's index, with the asking session's key derived like every other
    /// key: listings name the derived keys, and [`UserSession::id`] is the id of the
    /// derived key.
    fn user_index(&self) -> Option<&dyn UserIndex> {
        self.inner.user_index().map(|_| self as &dyn UserIndex)
    }
}

#[async_trait]
impl UserIndex for HashedKeys {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        let index = index_of(self.inner.as_ref())?;
        index
            .sessions_of(principal, current.map(derive_key).as_ref())
            .await
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        index_of(self.inner.as_ref())?
            .end_session(principal, id)
            .await
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        let index = index_of(self.inner.as_ref())?;
        index
            .end_sessions(principal, keep.map(derive_key).as_ref())
            .await
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        index_of(self.inner.as_ref())?.count_of(principal).await
    }
}

/// Raw access by *original* key, mapped like every other operation.
#[async_trait]
impl RawAccess for HashedKeys {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        match self.inner.raw() {
            Some(raw) => raw.put_raw(&derive_key(key), bytes, expires_at).await,
            None => Err(crate::Error::unsupported(self.engine(), "raw access")),
        }
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        match self.inner.raw() {
            Some(raw) => raw.get_raw(&derive_key(key)).await,
            None => Err(crate::Error::unsupported(self.engine(), "raw access")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn derived_keys_are_valid_deterministic_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..2_000 {
            let k = SessionKey::generate().expect("rng");
            let d = derive_key(&k);
            assert!(SessionKey::parse(d.as_str()).is_ok());
            assert_eq!(d, derive_key(&k));
            assert_ne!(d, k);
            assert!(seen.insert(d), "derived-key collision");
        }
    }

    #[test]
    fn base36_matches_a_reference_conversion() {
        // Zero is all 'a' (digit 0); one is 31 'a's then 'b'; 36 is "...ba".
        assert_eq!(base36_digits([0; 32]), "a".repeat(32));
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(base36_digits(one), format!("{}b", "a".repeat(31)));
        let mut n36 = [0u8; 32];
        n36[31] = 36;
        assert_eq!(base36_digits(n36), format!("{}ba", "a".repeat(30)));
        // 2^256 - 1 mod 36^32, checked against u128 arithmetic on the low digits:
        // the last digit is (2^256 - 1) mod 36 = 15 ('p').
        assert!(base36_digits([0xff; 32]).ends_with('p'));
    }

    #[test]
    fn known_vector_is_stable() {
        // A change here silently logs out every user of a hashed store: keep it fixed.
        let k = SessionKey::parse("abcdefghijklmnopqrstuvwxyz012345").expect("key");
        let d = derive_key(&k);
        assert_eq!(d.as_str().len(), KEY_LEN);
        assert_eq!(d.as_str(), KNOWN_DERIVED);
    }

    // Computed independently: int(sha256(key)) mod 36^32 in base 36 over [a-z0-9].
    const KNOWN_DERIVED: &str = "mdy660pgm9jvx23eyhtdyw1c47g64qja";
}
