//! # backend-cache
//!
//! Session stores on caches, Django's `cache` engine: records live in memory with a
//! native deadline and are never written to disk.
//!
//! - [`MemoryStore`] (engine `memory`): in-process, on a sharded `dashmap`, bounded in
//!   size with eviction. For one process and for tests; sessions die with the process.
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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod memory;

pub use memory::{MemoryConfig, MemoryStore};

use session_core::EngineRegistry;

/// Registers this crate's engines: `memory`.
pub fn register(registry: &EngineRegistry) {
    memory::register(registry);
}
