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
        }
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
