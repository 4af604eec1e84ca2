//! Every session of a user: the optional per-principal index.
//!
//! A session signed in with [`crate::Session::login`] carries its principal (an
//! application-defined user id string) in [`SessionMeta`], outside the application's
//! data. A store that keeps an index from principals to their live sessions implements
//! [`UserIndex`], and callers discover it from any `dyn SessionStore` with
//! [`SessionStore::user_index`], the way [`crate::Maintenance`] is found:
//!
//! ```
//! # use session_core::SessionStore;
//! # async fn run(store: &dyn SessionStore) -> session_core::Result<()> {
//! match store.user_index() {
//!     Some(index) => {
//!         for s in index.sessions_of("alice", None).await? {
//!             println!("{} last seen {:?}", s.id, s.meta.last_seen);
//!         }
//!         let ended = index.end_sessions("alice", None).await?;
//!         println!("signed alice out of {ended} sessions");
//!     }
//!     None => println!("engine {} keeps no per-user index", store.engine()),
//! }
//! # Ok(()) }
//! ```
//!
//! What every implementation promises (the conformance suite's `users` cases check it):
//!
//! - [`UserIndex::sessions_of`] returns the principal's **live** sessions only (never an
//!   expired, deleted or re-bound one), at a cost proportional to that principal's
//!   sessions, not to the store's size;
//! - ending a session deletes its record with [`SessionStore::delete`]'s semantics, so a
//!   request of that session still in flight cannot write it back (updates are never
//!   upserts: the same no-resurrection rule as logout);
//! - the index may hold stale entries (a crash between the record write and the index
//!   write, an expired record) but never misses a live session: engines add the index
//!   entry before the record and prune stale entries when they list.
//!
//! Sessions are named to the outside by [`UserSession::id`], a non-reversible digest of
//! the stored key: a "your devices" page shows and posts ids, never keys.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::key::SessionKey;
use crate::record::{Record, SessionMeta};
use crate::store::SessionStore;
use crate::time::Timestamp;

/// Longest principal accepted (bytes). Principals are user ids, not documents.
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// One live session of a principal, as a "your devices" page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserSession {
    /// A stable public name of the session: 32 hex digits of SHA-256 of the stored key.
    /// Safe to render and to post back ([`UserIndex::end_session`]).
    pub id: String,
    /// The key the store holds the session under (the derived key when keys are hashed
    /// at rest). A bearer secret: never render it to a page.
    pub stored_key: SessionKey,
    /// Whether this is the session of the request that asked (see
    /// [`UserIndex::sessions_of`]).
    pub current: bool,
    /// When the session was created.
    pub created_at: Timestamp,
    /// The stored deadline.
    pub expires_at: Timestamp,
    /// Principal, last seen, client.
    pub meta: SessionMeta,
}

impl UserSession {
    /// The entry for `record` stored under `stored_key`; `current` when `stored_key` is
    /// `current`.
    pub fn from_record(
        stored_key: SessionKey,
        record: &Record,
        current: Option<&SessionKey>,
    ) -> Self {
        UserSession {
            id: session_id(&stored_key),
            current: current == Some(&stored_key),
            stored_key,
            created_at: record.created_at,
            expires_at: record.expires_at,
            meta: record.meta.clone(),
        }
    }
}

/// The public id of the session stored under `stored_key` ([`UserSession::id`]).
pub fn session_id(stored_key: &SessionKey) -> String {
    let digest = Sha256::digest(stored_key.as_str().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `store`'s user index, or [`crate::Error::Unsupported`] naming its engine: what a
/// caller that needs one, and a wrapper that forwards one, call.
pub fn index_of(store: &dyn SessionStore) -> Result<&dyn UserIndex> {
    store
        .user_index()
        .ok_or_else(|| crate::Error::unsupported(store.engine(), "listing a user's sessions"))
}

/// Sorts a listing oldest first (ties by [`UserSession::id`]), the order
/// [`UserIndex::sessions_of`] promises.
pub fn sort_oldest_first(sessions: &mut [UserSession]) {
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}

/// Checks a principal before it reaches a store: non-empty, at most
/// [`MAX_PRINCIPAL_LEN`] bytes, no control characters.
pub fn validate_principal(principal: &str) -> Result<()> {
    if principal.is_empty()
        || principal.len() > MAX_PRINCIPAL_LEN
        || principal.chars().any(char::is_control)
    {
        return Err(crate::Error::InvalidPrincipal {
            len: principal.len(),
        });
    }
    Ok(())
}

/// The index from principals to their live sessions: an optional capability of a store
/// ([`SessionStore::user_index`]).
///
/// [`SessionStore::user_index`]: crate::SessionStore::user_index
#[async_trait]
pub trait UserIndex: Send + Sync {
    /// The live sessions of `principal`, oldest first. The entry stored under `current`
    /// (the asking session's key; a wrapper that stores derived keys, such as
    /// [`crate::HashedKeys`], derives it before forwarding) has [`UserSession::current`]
    /// set.
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>>;

    /// Ends the session of `principal` whose [`UserSession::id`] is `id`. `Ok(false)`
    /// when the principal has no live session with that id.
    async fn end_session(&self, principal: &str, id: &str) -> Result<bool>;

    /// Ends every live session of `principal` except the one stored under `keep`, and
    /// returns how many it ended.
    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64>;

    /// How many live sessions `principal` has.
    async fn count_of(&self, principal: &str) -> Result<u64> {
        Ok(self.sessions_of(principal, None).await?.len() as u64)
    }
}

/// The application's view of a principal's credentials: the auth hash a session
/// recorded at [`crate::Session::login`] must still equal [`AuthCheck::auth_hash`] when
/// the session is loaded, or the session is flushed (Django's
/// `update_session_auth_hash` / `_auth_user_hash`: changing the password ends every
/// session signed in with the old one, except those the app re-hashes).
///
/// Any `Fn(String) -> impl Future<Output = Result<Option<String>>>` is one:
///
/// ```
/// use std::sync::Arc;
/// use session_core::users::{AuthCheck, auth_check_fn};
///
/// let check: Arc<dyn AuthCheck> = auth_check_fn(|principal: String| async move {
///     // Look the user up; `None` when the user no longer exists.
///     Ok(Some(format!("hash-of-{principal}-password")))
/// });
/// # let _ = check;
/// ```
#[async_trait]
pub trait AuthCheck: Send + Sync {
    /// The principal's current auth hash; `None` when the principal no longer exists
    /// (its sessions are flushed).
    async fn auth_hash(&self, principal: &str) -> Result<Option<String>>;
}

struct FnAuthCheck<F>(F);

#[async_trait]
impl<F, Fut> AuthCheck for FnAuthCheck<F>
where
    F: Fn(String) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<Option<String>>> + Send,
{
    async fn auth_hash(&self, principal: &str) -> Result<Option<String>> {
        (self.0)(principal.to_owned()).await
    }
}

/// An [`AuthCheck`] from an async closure.
pub fn auth_check_fn<F, Fut>(f: F) -> std::sync::Arc<dyn AuthCheck>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<String>>> + Send + 'static,
{
    std::sync::Arc::new(FnAuthCheck(f))
}
