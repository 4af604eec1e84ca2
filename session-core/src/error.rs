//! The one error type of the framework. Backend failures keep their cause as `source`.

use std::time::Duration;

use crate::codec::CodecError;
use crate::key::KeyError;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a session operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist, or it expired, or it was deleted meanwhile
    /// (for example by a logout in a concurrent request). Never reported for an outage.
    #[error(
        "session not found: it expired or was deleted (perhaps by a logout in a concurrent request)"
    )]
    NotFound,

    /// A compare-and-set write found another version than the one it expected.
    #[error("session version conflict: expected version {expected}, the store holds {found}")]
    Conflict {
        /// The version the writer based its change on.
        expected: u64,
        /// The version the store holds now.
        found: u64,
    },

    /// A save kept conflicting with concurrent writers and gave up.
    #[error(
        "session save still conflicted after {attempts} attempts; concurrent writers kept winning"
    )]
    ConflictRetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
    },

    /// Every freshly minted key was already taken: the store is probably misbehaving.
    #[error(
        "could not mint an unused session key in {attempts} attempts; is the store answering correctly?"
    )]
    KeyCollision {
        /// How many keys were tried.
        attempts: u32,
    },

    /// A malformed session key.
    #[error("invalid session key: {0}")]
    InvalidKey(#[from] KeyError),

    /// Stored bytes could not be encoded or decoded.
    #[error("session codec error: {0}")]
    Codec(#[from] CodecError),

    /// A session value could not be converted to or from the requested type.
    #[error("session value {key:?} could not be converted: {source}")]
    Value {
        /// The session data key.
        key: String,
        /// What serde said.
        source: serde_json::Error,
    },

    /// A principal given to [`crate::Session::login`] or a [`crate::users::UserIndex`]
    /// is empty, longer than [`crate::users::MAX_PRINCIPAL_LEN`] bytes, or holds control
    /// characters.
    #[error(
        "invalid principal ({len} bytes): a principal is 1 to 256 bytes without control characters"
    )]
    InvalidPrincipal {
        /// Its length in bytes.
        len: usize,
    },

    /// A user-index operation on a session that is not signed in
    /// ([`crate::Session::login`]).
    #[error("the session is not signed in")]
    NotSignedIn,

    /// A limit on session size was exceeded.
    #[error("session limit exceeded: {0}")]
    Limit(String),

    /// Invalid configuration.
    #[error("invalid session configuration{}: {message}", key.as_ref().map(|k| format!(" at `{k}`")).unwrap_or_default())]
    Config {
        /// The offending configuration key, when known (e.g. `db.url`).
        key: Option<String>,
        /// What is wrong and what to do.
        message: String,
    },

    /// The configured engine is not registered.
    #[error("unknown session engine {name:?}; known engines: {}", known.join(", "))]
    UnknownEngine {
        /// The requested name.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },

    /// The store does not support this operation.
    #[error("the {engine} session store does not support {operation}")]
    Unsupported {
        /// The engine name.
        engine: String,
        /// The operation.
        operation: &'static str,
    },

    /// The backend did not answer in time.
    #[error("the {engine} session store did not answer within {after:?}")]
    Timeout {
        /// The engine name.
        engine: String,
        /// The configured timeout.
        after: Duration,
    },

    /// The backend failed (connection refused, I/O error, SQL error, ...).
    #[error("the {engine} session store failed: {source}")]
    Backend {
        /// The engine name.
        engine: String,
        /// The client library's error.
        source: BoxError,
    },
}

impl Error {
    /// A backend failure of `engine`.
    pub fn backend(engine: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            engine: engine.into(),
            source: source.into(),
        }
    }

    /// A configuration error at `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An unsupported operation.
    pub fn unsupported(engine: impl Into<String>, operation: &'static str) -> Self {
        Error::Unsupported {
            engine: engine.into(),
            operation,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound)
    }

    /// Whether this is [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether the failure is the store's infrastructure (outage, timeout), not the session.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Backend { .. } | Error::Timeout { .. })
    }
}
