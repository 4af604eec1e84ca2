//! # session-tower-sessions
//!
//! Our session stores for applications built on
//! [tower-sessions](https://crates.io/crates/tower-sessions), and on
//! [axum-login](https://crates.io/crates/axum-login) on top of it: [`TowerSessionsStore`]
//! implements tower-sessions' `SessionStore` and `ExpiredDeletion` over any
//! `Arc<dyn session_core::SessionStore>`, so the file, SQL (SQLite, PostgreSQL,
//! MySQL/MariaDB), cache (Redis, Redis Cluster, Memcached, in-process) and `cached_db`
//! engines serve tower-sessions unchanged, chosen in code or by the same
//! `Sessions.toml` / `SESSION_*` configuration as our own middleware
//! ([`TowerSessionsStore::from_config`]; `sessions::tower_sessions::store_from_config`
//! with every compiled-in engine).
//!
//! ## Supported versions
//!
//! tower-sessions **0.14** (`tower-sessions-core` 0.14), the line that axum-login 0.17
//! and 0.18 (its newest release) depend on. The trait is implemented for exactly that
//! `tower-sessions-core`; an application on tower-sessions 0.13 or 0.15 would see a
//! different trait and the compiler says so.
//!
//! ## What each call guarantees
//!
//! - **Ids and keys.** A tower-sessions [`Id`](tower_sessions_core::session::Id) (an
//!   `i128`, 128 random bits) is stored under the key that writes its bits in base 36
//!   ([`id::key_for_id`]): one key per id, no two ids on one key, nothing lost
//!   ([`id`] has the argument). The id still comes from tower-sessions, so these sessions
//!   carry its 128 bits of entropy, not our keys' ~165.
//! - **`create` is atomic.** It is the store's insert-if-absent (`O_EXCL`, a unique SQL
//!   insert, `SET NX`, Memcached `add`); when the id is taken, the adapter mints a new
//!   id, as tower-sessions' contract asks, up to 16 times, and never overwrites.
//! - **`save` never resurrects.** It is the store's update-only path: when the session
//!   was deleted meanwhile (a logout in a concurrent request) or expired, nothing is
//!   written, and `save` fails with a backend error naming what happened
//!   ([`DeletedSession::Fail`], the default: tower-sessions' layer answers that
//!   request with 500 and sets no cookie) or succeeds without writing
//!   ([`DeletedSession::Discard`]). Either way the session stays deleted and the old
//!   cookie finds nothing.
//! - **Lost updates are not prevented.** tower-sessions' record has no version, so the
//!   adapter cannot tell our compare-and-set which version a request read: two
//!   concurrent requests that both change one session keep the later save (as with
//!   every tower-sessions store). Our own middleware (`session-axum`) re-applies each
//!   request's changes instead.
//! - **Expiry** is tower-sessions' choice: the record's `expiry_date` becomes the
//!   session's fixed deadline (to the millisecond, rounded down), and `load` returns
//!   nothing once it passed, even before any cleanup. Our `[expiry]` settings do not
//!   apply here. `delete_expired` runs the engine's own sweep (a no-op where the server
//!   expires keys itself, as Redis and Memcached do).
//! - **Data** is tower-sessions' map of string to JSON value, stored as our session data
//!   with the configured codec (bincode or JSON, encryption and size limits included);
//!   a record over `max_encoded_size` or `max_keys` is an encode error and nothing is
//!   written, corrupt stored bytes a decode error. The `created_at` our tools show
//!   (`sessions show`) is the time of the session's last save: tower-sessions' record
//!   has no creation time.
//!
//! ## Security
//!
//! Session ids are minted by tower-sessions (128 bits from `rand`'s thread-local CSPRNG,
//! seeded by the OS) and travel in its cookie; the adapter never logs an id or a key,
//! only our key's fingerprint. `hash_keys = true` and `[encryption]` in the
//! configuration protect the stored sessions as they do for our own middleware. A
//! cookie naming no live session is never adopted: tower-sessions creates a new
//! session under a new id, and the adapter's `save` cannot write under an id the store
//! does not hold.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::{Router, routing::get};
//! use session_tower_sessions::TowerSessionsStore;
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! async fn visits(session: Session) -> String {
//!     let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
//!     let _ = session.insert("visits", n).await;
//!     format!("visit number {n}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! # let dir = tempfile::tempdir().expect("temp dir");
//! // In code: any of our stores...
//! let file_store = backend_file::FileStore::new(dir.path().join("sessions"))?;
//! let store = TowerSessionsStore::new(Arc::new(file_store));
//!
//! // ...or from the configuration, through the engines a registry knows.
//! let registry = session_core::EngineRegistry::new();
//! backend_file::register(&registry);
//! let path = dir.path().join("by-config").display().to_string();
//! let config = session_core::Config::from_toml(&format!("engine = \"file\"\n[file]\npath = {path:?}\n"));
//! let _configured = TowerSessionsStore::from_config(&config, &registry).await?;
//!
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionManagerLayer::new(store).with_secure(false));
//! # let _ = app;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod id;
mod store;

pub use store::{DeletedSession, TowerSessionsStore};

/// Re-exported so applications name the trait version this crate implements.
pub use tower_sessions_core;

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
