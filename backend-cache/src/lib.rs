//! # backend-cache
//!
//! Session stores on caches, Django's `cache` engine: records live in memory and are
//! never written to disk.
//!
//! - [`MemoryStore`] (engine `memory`): in-process, on a `quick_cache` cache, bounded in
//!   size with a scan-resistant eviction policy (sessions read again are kept before
//!   new ones); expired sessions are never read and are freed by `clear_expired` (the
//!   background cleanup) or by the bound. For one process and for tests; sessions die
//!   with the process.
//! - [`CacheStore`] (engine `cache`, section `cache`): the driver chosen by the scheme of
//!   `cache.url` ([`cache`] lists them): the in-process store (`memory`, the default),
//!   [`RedisStore`] on one Redis server (`redis://`, `rediss://`) or a Redis Cluster
//!   (`redis+cluster://h1:p1,h2:p2` or `cache.urls`), and [`MemcachedStore`]
//!   (`memcache://`). Records carry a native TTL equal to their remaining age, `create`
//!   is `SET NX`/`add`, `update` is compare-and-set on the version (a Lua script on
//!   Redis, `gets`/`cas` on Memcached) and never resurrects a deleted session.
//!
//! ```
//! use std::sync::Arc;
//! use backend_cache::MemoryStore;
//! use session_core::{Session, SessionSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let store = Arc::new(MemoryStore::new());
//! let settings = Arc::new(SessionSettings::default());
//! let session = Session::new(store.clone(), settings.clone(), None);
//! session.insert("cart", &vec!["apple", "pear"]).await?;
//! session.save().await?;
//!
//! // The next request comes back with the key from the cookie.
//! let again = Session::new(store, settings, session.key());
//! assert_eq!(again.get::<Vec<String>>("cart").await?.unwrap().len(), 2);
//! # Ok(()) }
//! ```
//!
//! From configuration, the same way for every driver:
//!
//! ```no_run
//! use session_core::{Config, EngineRegistry};
//!
//! # async fn demo() -> session_core::Result<()> {
//! let registry = EngineRegistry::new();
//! backend_cache::register(&registry);
//! let store = registry
//!     .build(&Config::from_toml(
//!         r#"
//!         engine = "cache"
//!         [cache]
//!         url = "redis://127.0.0.1:6379"
//!         key_prefix = "myapp:session:"
//!         command_timeout_ms = 500
//!         "#,
//!     ))
//!     .await?;
//! assert_eq!(store.engine(), "redis");
//! # Ok(()) }
//! ```
//!
//! The engines build their stores with [`CacheConfig::build`]`(&settings)` and
//! [`MemoryConfig::build`]`(&settings)`, the same constructor every backend crate has
//! (see "Constructors" in `docs/BACKENDS.md`); [`CacheStore::connect`] stays as the
//! lower-level one (no timeout layer, no size limit on the in-process driver).
//!
//! ## Every session of a user
//!
//! [`MemoryStore`] and [`RedisStore`] (standalone and Cluster) implement
//! [`session_core::UserIndex`]: `store.user_index()` lists, counts and ends the live
//! sessions of a principal, at a cost proportional to that principal's sessions
//! (`Session::user_sessions`, `Session::end_other_sessions`). Each keeps a per-principal
//! set written before the record and pruned when listed; [`memory`] and [`redis`]
//! describe how. [`MemcachedStore`] keeps no index, since Memcached cannot enumerate
//! keys: its `user_index()` is `None`, and the handle's calls give
//! [`session_core::Error::Unsupported`]. An application that shows "your devices" picks
//! Redis, the memory engine or a database engine instead.
//!
//! ## Stored format
//!
//! Redis and Memcached hold each session as one value: a fixed 42-byte ASCII header
//! with the authoritative version and deadline, then the codec's bytes (bincode or JSON,
//! as configured):
//!
//! ```text
//! v00000000000000000007e00000001767225600000<codec bytes...>
//!  ^ version, 20 digits ^ expires_at (Unix ms), 20 digits
//! ```
//!
//! One value per session keeps `create` a plain `SET NX PX` (or `add`) and `load` a plain
//! `GET`; the fixed-width header lets `touch` rewrite the deadline in place (`SETRANGE`
//! on Redis) and lets the Redis scripts compare versions without decoding anything. The
//! value's server-side expiry is always the record's remaining age; a record whose
//! deadline has passed is never written as "no expiry".
//!
//! ## Failure behaviour
//!
//! Every Redis or Memcached operation is bounded by `cache.command_timeout_ms`: a server
//! that is down or stalled gives [`session_core::Error::Backend`] or
//! [`session_core::Error::Timeout`], never a hang, and the same store serves again once
//! the server is back (Redis: the connection manager reconnects; Memcached: the pool
//! drops dead connections and dials anew). A cache may evict live sessions under memory
//! pressure (`Capabilities::may_evict`): put `cached_db` in front of a database when
//! sessions must survive that.
//!
//! ## Cargo features
//!
//! | feature | default | what it compiles |
//! |---|---|---|
//! | `redis` | yes | [`RedisStore`] on one Redis server (`redis://`) |
//! | `cluster` | yes | Redis Cluster (`redis+cluster://`, `cache.urls`); implies `redis` |
//! | `memcached` | yes | [`MemcachedStore`] (`memcache://`) |
//! | `tls` | no | `rediss://` (rustls with the ring provider); implies `redis` |
//!
//! The in-process [`MemoryStore`] is always there. With `default-features = false` and
//! only the features an application needs, the rest (the `redis` crate among them) is
//! not compiled; a configured URL for a driver that is not compiled in is a
//! configuration error at `cache.url`, found when the configuration is validated, that
//! names the feature to enable.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
#[cfg(any(feature = "redis", feature = "memcached"))]
mod envelope;
#[cfg(feature = "memcached")]
pub mod memcached;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

pub use cache::{CacheConfig, CacheStore, CacheTarget};
#[cfg(feature = "memcached")]
pub use memcached::MemcachedStore;
pub use memory::{MemoryConfig, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use session_core::EngineRegistry;

/// Registers this crate's engines: `memory` and `cache`.
pub fn register(registry: &EngineRegistry) {
    memory::register(registry);
    cache::register(registry);
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
