//! # sessions
//!
//! The session framework in one dependency. Its cargo features are named after the
//! engines and frameworks an application uses, and each compiles only what it names:
//!
//! | feature | gives |
//! |---|---|
//! | `file` (default) | engine `file` (`sessions::file`, backend-file) |
//! | `memory` | engines `memory` and `cache` with the in-process driver (`sessions::cache`) |
//! | `sqlite`, `postgres`, `mysql` | engine `db` with that database's driver (`sessions::db`) |
//! | `redis`, `cluster`, `memcached` | engine `cache` with that driver (implies `memory`) |
//! | `tls` | `rediss://` (implies `redis`) |
//! | `cached-db` | engine `cached_db` (`sessions::cached_db`; enable its cache and database too) |
//! | `axum` (default) | the middleware and extractor (`sessions::axum`), and engine `cookie` |
//! | `serve` | `sessions::axum::serve`: serving with timeouts (implies `axum`) |
//! | `tower-sessions` | our stores as a tower-sessions 0.14 store, for tower-sessions and axum-login apps (`sessions::tower_sessions`) |
//! | `actix` | the actix-web 4 middleware and extractor (`sessions::actix`), and engine `cookie` |
//! | `full` | all of the above |
//!
//! [`registry()`] registers every engine this build compiled in, and only those; a
//! configuration that selects an engine or a database left out of the build fails
//! validation with a configuration error that names the feature to enable.
//!
//! ```
//! # #[cfg(all(feature = "file", feature = "axum"))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessions::Result<()> {
//! # let dir = tempfile::tempdir().expect("temp dir");
//! # let path = dir.path().join("Sessions.toml");
//! # let sessions_dir = dir.path().join("sessions").display().to_string().replace('\\', "/");
//! # std::fs::write(&path, format!("engine = \"file\"\n[file]\npath = \"{sessions_dir}\"\n")).expect("write");
//! use axum::{Router, routing::get};
//! use sessions::axum::{Session, SessionError};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! let layer = sessions::axum::layer_from_config(&path).await?;
//! let app: Router = Router::new().route("/", get(visits)).layer(layer);
//! # let _ = app;
//! # Ok(()) }
//! # #[cfg(not(all(feature = "file", feature = "axum")))]
//! # fn main() {}
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;

pub use session_core;
pub use session_core::{
    Config, EngineRegistry, Error, Result, Session, SessionSettings, SessionStore,
};

#[cfg(feature = "file")]
pub use backend_file as file;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use backend_db as db;

#[cfg(feature = "memory")]
pub use backend_cache as cache;

#[cfg(feature = "cached-db")]
pub use backend_cached_db as cached_db;

/// Every engine this crate can provide, with the features that compile it in.
const ENGINES: &[(&str, &str)] = &[
    ("file", "the `file` feature"),
    ("db", "one of the `sqlite`, `postgres` and `mysql` features"),
    ("memory", "the `memory` feature"),
    (
        "cache",
        "the `memory` feature (or `redis`, `cluster`, `memcached` for a server)",
    ),
    ("cached_db", "the `cached-db` feature"),
    ("cookie", "the `axum` or `actix` feature"),
];

/// A registry holding every engine compiled into this build (see [`register_all`]).
pub fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    register_all(&registry);
    registry
}

/// Registers every engine compiled into this build on `registry`: `file`, `db`,
/// `memory` and `cache`, `cached_db` and `cookie`, each when its feature is enabled.
pub fn register_all(registry: &EngineRegistry) {
    #[cfg(feature = "file")]
    backend_file::register(registry);
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    backend_db::register(registry);
    #[cfg(feature = "memory")]
    backend_cache::register(registry);
    #[cfg(feature = "cached-db")]
    backend_cached_db::register(registry);
    #[cfg(feature = "axum")]
    session_axum::register(registry);
    #[cfg(feature = "actix")]
    session_actix::register(registry);
    let _ = registry;
}

/// Checks `config` against [`registry()`] without building anything: an engine this
/// crate knows but this build left out is a configuration error at `engine` naming the
/// feature to enable; everything else is [`EngineRegistry::validate`]'s checks (unknown
/// keys, each engine's own options, a database or cache driver not compiled in).
pub fn validate(config: &Config) -> Result<()> {
    validate_with(config, &registry())
}

/// The store `config` selects, built through [`registry()`] after [`validate`].
pub async fn build(config: &Config) -> Result<Arc<dyn SessionStore>> {
    let registry = registry();
    validate_with(config, &registry)?;
    registry.build(config).await
}

fn validate_with(config: &Config, registry: &EngineRegistry) -> Result<()> {
    let engine = config.settings()?.engine;
    if !registry.contains(&engine)
        && let Some((_, features)) = ENGINES.iter().find(|(name, _)| *name == engine)
    {
        return Err(Error::config(
            "engine",
            format!(
                "the `{engine}` engine is not compiled in: enable {features} of the sessions \
                 crate"
            ),
        ));
    }
    registry.validate(config)
}

/// The axum/tower middleware (all of session-axum), and the layer from a configuration
/// file in one call.
#[cfg(feature = "axum")]
pub mod axum {
    use std::path::Path;

    pub use session_axum::*;

    /// The [`SessionLayer`] that the configuration file at `path` (with `SESSION_*`
    /// environment variables over it, see [`crate::Config::load`]) describes, its engine
    /// built from [`crate::registry()`] after [`crate::validate`].
    pub async fn layer_from_config(path: impl AsRef<Path>) -> crate::Result<SessionLayer> {
        let config = crate::Config::load(Some(path.as_ref()))?;
        layer(&config).await
    }

    /// The [`SessionLayer`] an already loaded configuration describes (see
    /// [`layer_from_config`]).
    pub async fn layer(config: &crate::Config) -> crate::Result<SessionLayer> {
        let registry = crate::registry();
        crate::validate_with(config, &registry)?;
        SessionLayer::from_config(config, &registry).await
    }
}

/// Our stores under tower-sessions 0.14 and axum-login (all of session-tower-sessions),
/// and the store from a configuration file in one call.
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions {
    use std::path::Path;

    pub use session_tower_sessions::*;

    /// The [`TowerSessionsStore`] over the store that the configuration file at `path`
    /// (with `SESSION_*` environment variables over it, see [`crate::Config::load`])
    /// describes, built from [`crate::registry()`] after [`crate::validate`]: give it
    /// to `tower_sessions::SessionManagerLayer::new`.
    pub async fn store_from_config(path: impl AsRef<Path>) -> crate::Result<TowerSessionsStore> {
        let config = crate::Config::load(Some(path.as_ref()))?;
        store(&config).await
    }

    /// The [`TowerSessionsStore`] an already loaded configuration describes (see
    /// [`store_from_config`]).
    pub async fn store(config: &crate::Config) -> crate::Result<TowerSessionsStore> {
        let registry = crate::registry();
        crate::validate_with(config, &registry)?;
        TowerSessionsStore::from_config(config, &registry).await
    }
}

/// The actix-web middleware (all of session-actix), and the middleware from a
/// configuration file in one call.
#[cfg(feature = "actix")]
pub mod actix {
    use std::path::Path;

    pub use session_actix::*;

    /// The [`SessionMiddleware`] that the configuration file at `path` (with
    /// `SESSION_*` environment variables over it, see [`crate::Config::load`])
    /// describes, its engine built from [`crate::registry()`] after [`crate::validate`].
    pub async fn middleware_from_config(
        path: impl AsRef<Path>,
    ) -> crate::Result<SessionMiddleware> {
        let config = crate::Config::load(Some(path.as_ref()))?;
        middleware(&config).await
    }

    /// The [`SessionMiddleware`] an already loaded configuration describes (see
    /// [`middleware_from_config`]).
    pub async fn middleware(config: &crate::Config) -> crate::Result<SessionMiddleware> {
        let registry = crate::registry();
        crate::validate_with(config, &registry)?;
        SessionMiddleware::from_config(config, &registry).await
    }
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
