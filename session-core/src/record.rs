//! The stored unit: session data plus its expiry and version.

use serde_json::Value;

use crate::expiry::{Expiry, ExpirySettings};
use crate::time::Timestamp;

/// Session data: string keys to JSON-model values, ordered by key.
pub type SessionData = serde_json::Map<String, Value>;

/// One session as a store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The application's data.
    pub data: SessionData,
    /// The policy the application asked for (kept so a later save renews it the same way).
    pub expiry: Expiry,
    /// When the session was created (the origin of the absolute timeout).
    pub created_at: Timestamp,
    /// The absolute server-side deadline; a store never returns a record past it.
    pub expires_at: Timestamp,
    /// Bumped by every successful write; the basis of compare-and-set.
    pub version: u64,
    /// What the framework keeps about the session beside the application's data: the
    /// signed-in principal, its auth hash, last seen, and (opt-in) the client. Empty for
    /// anonymous sessions; an empty `meta` is encoded in the original record formats.
    pub meta: SessionMeta,
}

/// The framework's own facts about a session, kept outside [`Record::data`] so the
/// application's keys never collide with them ([`crate::users`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionMeta {
    /// The principal (an application-defined user id) the session is signed in as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The application's auth hash for the principal when the session signed in (Django's
    /// `_auth_user_hash`): a session whose hash no longer matches is flushed on load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_hash: Option<String>,
    /// When a request of this session was last seen (written at most once per touch
    /// interval for a session that is only read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// The client's `User-Agent` at sign-in (opt-in: `track_clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's address at sign-in (opt-in: `track_clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

impl SessionMeta {
    /// Whether nothing is recorded (an anonymous session).
    pub fn is_empty(&self) -> bool {
        self == &SessionMeta::default()
    }
}

impl Record {
    /// A new record created at `now`, version 1, its deadline computed from `settings`.
    pub fn new(
        data: SessionData,
        expiry: Expiry,
        settings: &ExpirySettings,
        now: Timestamp,
    ) -> Self {
        Record {
            data,
            expiry,
            created_at: now,
            expires_at: settings.expires_at(expiry, now, now),
            version: 1,
            meta: SessionMeta::default(),
        }
    }

    /// A record with the given data that expires `ttl_secs` from now; handy in tests and tools.
    pub fn with_ttl(data: SessionData, ttl_secs: i64) -> Self {
        let now = Timestamp::now();
        Record {
            data,
            expiry: Expiry::Default,
            created_at: now,
            expires_at: now.add_secs(ttl_secs),
            version: 1,
            meta: SessionMeta::default(),
        }
    }

    /// The principal the session is signed in as, if any.
    pub fn principal(&self) -> Option<&str> {
        self.meta.principal.as_deref()
    }

    /// Whether the record is past its deadline at `now` (a deadline equal to now counts as past).
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// Milliseconds left at `now` (zero or negative when expired).
    pub fn ttl_millis(&self, now: Timestamp) -> i64 {
        now.millis_until(self.expires_at)
    }
}
