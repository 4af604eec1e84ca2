//! The composition root: every built-in engine registered, configs loaded.
//!
//! Operator commands (everything but `demo`) load their configuration through
//! [`load_for`] / [`load_file_only`] and build their store through [`build_for`]: those
//! refuse a configuration that names no engine, and an engine whose sessions live only
//! inside the application's process, instead of reporting on an empty store of their own.

use std::path::Path;
use std::sync::Arc;

use session_core::config::DEFAULT_CONFIG_FILE;
use session_core::{Config, EngineRegistry, SessionSettings, SessionStore};

use crate::fmt::{CliError, CliResult};

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

/// The configuration at `path` (or Sessions.toml) with `SESSION_*` overrides, with
/// `engine` as the default engine.
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

/// Where an operator command's configuration came from, for messages.
fn source_of(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => DEFAULT_CONFIG_FILE.to_owned(),
        None => "no configuration file".to_owned(),
    }
}

/// How an operator picks an engine.
const CHOOSE_ENGINE: &str = "pass --config FILE (the configuration your application uses), put \
    `engine = \"...\"` in Sessions.toml in the working directory, or set SESSION_ENGINE \
    (file, db, cache or cached_db, with their sections, e.g. SESSION_DB__URL)";

/// Refuses a configuration that chose no engine, or the in-process `memory` engine.
///
/// An operator command runs in its own process: the application's in-process memory
/// store is out of its reach, and searching an empty one of its own would report
/// "0 sessions" about a store it never saw.
/// A typo at the root (`enigne = "db"`, `SESSION_ENIGNE`) is reported as the typo it
/// is, before its consequence ("no engine configured") could be.
fn require_engine(config: &Config, source: &str, command: &str) -> CliResult<String> {
    let engines = registry().known();
    let mut allowed: Vec<&str> = session_core::config::SETTINGS_KEYS.to_vec();
    allowed.extend(session_core::config::FRAMEWORK_SECTIONS);
    allowed.extend(engines.iter().map(String::as_str));
    config.check_keys(&allowed)?;
    let engine = config
        .figment()
        .extract_inner::<String>("engine")
        .unwrap_or_default();
    let engine = engine.trim();
    if engine.is_empty() {
        return Err(CliError::usage(
            format!("`sessions {command}` needs an engine, and none is configured ({source})"),
            Some(CHOOSE_ENGINE.to_owned()),
        ));
    }
    if engine == "memory" {
        return Err(in_process(command, "memory", source));
    }
    Ok(engine.to_owned())
}

fn in_process(command: &str, engine: &str, source: &str) -> CliError {
    CliError::usage(
        format!(
            "engine {engine} ({source}) keeps sessions inside the application's own process; \
             `sessions {command}` runs in another process and cannot see them"
        ),
        Some(CHOOSE_ENGINE.to_owned()),
    )
}

/// The configuration of an operator command: `path` (or Sessions.toml) <- SESSION_*
/// environment, refused when it names no engine or the in-process `memory` engine.
pub fn load_for(path: Option<&Path>, command: &str) -> CliResult<Config> {
    let config = load_with_engine(path, "")?;
    let mut source = source_of(path);
    match std::env::var("SESSION_ENGINE") {
        Ok(engine) => source = format!("{source}, SESSION_ENGINE={engine}"),
        Err(_) => source.push_str(", SESSION_ENGINE unset"),
    }
    require_engine(&config, &source, command)?;
    Ok(config)
}

/// The configuration in the file at `path` as it is: no `SESSION_*` environment
/// overrides (they would apply to both sides of a copy alike), and refused like
/// [`load_for`] when it names no engine or the `memory` engine.
pub fn load_file_only(path: &Path, command: &str) -> CliResult<Config> {
    let config = Config::load_file_only(
        path,
        SessionSettings {
            engine: String::new(),
            ..SessionSettings::default()
        },
    )?;
    require_engine(&config, &path.display().to_string(), command)?;
    Ok(config)
}

/// The store `config` selects, refused when it lives only inside this process (such as a
/// `cache` engine without a server URL).
pub async fn build_for(config: &Config, command: &str) -> CliResult<Arc<dyn SessionStore>> {
    let store = build(config).await?;
    let caps = store.capabilities();
    if !caps.durable && !caps.cross_process {
        return Err(in_process(command, store.engine(), "its configuration"));
    }
    Ok(store)
}

/// The file store `config` selects, built directly (rather than through the registry) so
/// that a command can use what only the file engine offers, such as
/// [`backend_file::FileStore::sweep`]'s report of the entries it skipped. `None` for any
/// other engine.
pub fn file_store(config: &Config) -> CliResult<Option<backend_file::FileStore>> {
    let settings = config.settings()?;
    if settings.engine != "file" {
        return Ok(None);
    }
    let section: backend_file::FileConfig = config.section("file")?;
    Ok(Some(backend_file::FileStore::from_config(
        &section,
        settings.codec(),
        settings.max_encoded_size,
    )?))
}
