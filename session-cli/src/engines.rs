//! The composition root: every built-in engine registered, configs loaded.

use std::path::Path;
use std::sync::Arc;

use session_core::{Config, EngineRegistry, SessionSettings, SessionStore};

use crate::fmt::CliResult;

/// A registry with every built-in engine.
pub fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_file::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    session_axum::register(&registry);
    registry
}

/// The configuration: `path` (or Sessions.toml) <- SESSION_* environment.
pub fn load(path: Option<&Path>) -> CliResult<Config> {
    Ok(Config::load(path)?)
}

/// Like [`load`], with `engine` as the default engine.
pub fn load_with_engine(path: Option<&Path>, engine: &str) -> CliResult<Config> {
    Ok(Config::load_with_defaults(
        path,
        SessionSettings {
            engine: engine.to_owned(),
            ..SessionSettings::default()
        },
    )?)
}

/// The store `config` selects.
pub async fn build(config: &Config) -> CliResult<Arc<dyn SessionStore>> {
    Ok(registry().build(config).await?)
}
