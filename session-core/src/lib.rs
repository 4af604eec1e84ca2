//! # session-core
//!
//! The contracts of a server-side session framework: Django's `request.session` for Rust.
//! This crate holds what every backend and every application shares:
//!
//! - [`SessionKey`]: 32 characters of `[a-z0-9]` from the OS CSPRNG, validated before
//!   any I/O, redacted in `Debug`;
//! - [`Record`] and [`SessionData`]: JSON-model values with an absolute deadline, the
//!   [`Expiry`] policy the app set, and a version bumped by every write;
//! - [`Codec`]: [`BincodeCodec`] (compact, default) and [`JsonCodec`] (readable), both
//!   versioned and defensive against corrupt input; [`LazyRecord`] ([`lazy`]): a
//!   loaded record whose data is decoded only as far as a request reads it;
//! - [`SessionStore`]: the async, object-safe storage contract (collision-safe create,
//!   no resurrection, compare-and-set) with its [`Capabilities`];
//! - [`Session`]: the per-request handle, lazy (nothing is loaded until the data is
//!   touched, and a read decodes only the value it reads), with Django's
//!   `accessed`/`modified` semantics and conflict re-application;
//! - [`Maintenance`]: the optional capability of stores that have a schema to migrate,
//!   expired records to sweep in batches or statistics to report, discovered from any
//!   `dyn SessionStore` with [`SessionStore::maintenance`];
//! - [`UserIndex`]: the optional per-principal index behind "your devices" pages,
//!   "sign out other devices" and password-change logouts ([`users`]), used through
//!   [`Session::login`] and friends;
//! - [`Config`] and [`EngineRegistry`]: the backend chosen by name at deploy time from
//!   `Sessions.toml` and `SESSION_*` environment variables;
//! - [`StoreLayer`]: wrappers any store can wear (hashed keys, per-call timeouts, your
//!   own), stacked with [`StoreLayers`] or `store.with_layer(...)` and named in the
//!   configuration's `layers` list ([`layer`]);
//! - operations in production: per-call metrics and tracing spans ([`metrics`],
//!   feature `metrics`, on by default), request hooks for framework adapters
//!   ([`hooks`]), lifecycle events ([`events`]) and an opt-in background cleanup
//!   ([`cleanup`]).
//!
//! Backends live in their own crates (`backend-file`, `backend-db`, `backend-cache`,
//! `backend-cached-db`), each exposing a `register` function for the registry.
//!
//! ## Example
//!
//! ```
//! use session_core::{BincodeCodec, Codec, JsonCodec, Record, SessionData, SessionKey};
//!
//! let key = SessionKey::generate().expect("OS randomness");
//! assert_eq!(key.as_str().len(), 32);
//! assert!(SessionKey::parse("../../etc/passwd").is_err());
//! // Debug output never shows the key.
//! assert!(!format!("{key:?}").contains(key.as_str()));
//!
//! let mut data = SessionData::new();
//! data.insert("user_id".into(), 101.into());
//! let record = Record::with_ttl(data, 3600);
//! let bytes = BincodeCodec::default().encode(&record).unwrap();
//! // Either codec reads either format.
//! assert_eq!(JsonCodec::default().decode(&bytes).unwrap(), record);
//! ```
//!
//! ## Security
//!
//! Keys are never adopted from clients: a key the store does not know starts a new
//! session with a freshly minted key. Keys never appear in `Debug` output or logs (logs
//! carry [`SessionKey::fingerprint`]). Nothing decoded from outside can panic the process.
//!
//! Two opt-in protections for data at rest: `hash_keys = true` stores SHA-256 of each
//! key instead of the key ([`hashed`]), so a dump of the store cannot be replayed as
//! cookies; `[encryption] keys = [...]` seals every record with XChaCha20-Poly1305
//! ([`codec::EncryptedCodec`]), with key rotation. Limits (`max_encoded_size`,
//! `max_keys`) are enforced with typed errors.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cleanup;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod expiry;
pub mod hashed;
pub mod hooks;
pub mod key;
pub mod layer;
pub mod lazy;
pub mod maintenance;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod record;
pub mod registry;
pub mod session;
pub mod store;
pub mod time;
pub mod users;

pub use codec::{BincodeCodec, Codec, CodecError, CodecKind, JsonCodec};
pub use config::{Config, EncryptionSettings, SessionSettings};
pub use error::{BoxError, Error, Result};
pub use expiry::{Expiry, ExpirySettings};
pub use hashed::HashedKeys;
pub use key::{KeyError, KeyGenerator, SessionKey};
pub use layer::{StoreLayer, StoreLayerExt, StoreLayers, TimeoutLayer};
pub use lazy::{EncodedBytes, KeyIndex, LazyData, LazyRecord};
pub use maintenance::{ClearReport, Maintenance, SchemaMigration, StoreStats};
pub use record::{Record, SessionData, SessionMeta};
pub use registry::{EngineContext, EngineFactory, EngineRegistry, LayerContext, LayerFactory};
pub use session::{Activity, Session, SessionContext};
pub use store::{
    Capabilities, ImmediateStore, Inserted, RawAccess, SessionStore, StoreCalls, create_with,
};
pub use time::Timestamp;
pub use users::{UserIndex, UserSession};

/// Re-exported so backends implement [`SessionStore`] with the same macro version.
pub use async_trait::async_trait;

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
