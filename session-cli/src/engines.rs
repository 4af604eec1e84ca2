//! Configuration loading and store building for the commands, on the registry the
//! program was started with ([`crate::main_with`]).
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
pub async fn build(registry: &EngineRegistry, config: &Config) -> CliResult<Arc<dyn SessionStore>> {
    Ok(registry.build(config).await?)
}

/// Where an operator command's configuration came from, for messages.
fn source_of(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => DEFAULT_CONFIG_FILE.to_owned(),
        None => "no configuration file".to_owned(),
    }
}

/// How an operator picks an engine, naming the engines of `registry`.
fn choose_engine(registry: &EngineRegistry) -> String {
    let engines: Vec<String> = registry
        .known()
        .into_iter()
        .filter(|e| e != IN_PROCESS)
        .collect();
    format!(
        "pass --config FILE (the configuration your application uses), put \
         `engine = \"...\"` in Sessions.toml in the working directory, or set SESSION_ENGINE \
         (one of {}, with its section, e.g. SESSION_<ENGINE>__URL)",
        engines.join(", ")
    )
}

/// The engine that keeps sessions in the application's own process (session-core's
/// convention for its in-memory store).
const IN_PROCESS: &str = "memory";

/// Refuses a configuration that chose no engine, or the in-process `memory` engine.
///
/// An operator command runs in its own process: the application's in-process memory
/// store is out of its reach, and searching an empty one of its own would report
/// "0 sessions" about a store it never saw.
/// A typo at the root (`enigne = "db"`, `SESSION_ENIGNE`) is reported as the typo it
/// is, before its consequence ("no engine configured") could be.
fn require_engine(
    registry: &EngineRegistry,
    config: &Config,
    source: &str,
    command: &str,
) -> CliResult<String> {
    registry.check_root_keys(config)?;
    let engine = config.get::<String>("engine")?.unwrap_or_default();
    let engine = engine.trim();
    if engine.is_empty() {
        return Err(CliError::usage(
            format!("`sessions {command}` needs an engine, and none is configured ({source})"),
            Some(choose_engine(registry)),
        ));
    }
    if engine == IN_PROCESS {
        return Err(in_process(registry, command, IN_PROCESS, source));
    }
    Ok(engine.to_owned())
}

fn in_process(registry: &EngineRegistry, command: &str, engine: &str, source: &str) -> CliError {
    CliError::usage(
        format!(
            "engine {engine} ({source}) keeps sessions inside the application's own process; \
             `sessions {command}` runs in another process and cannot see them"
        ),
        Some(choose_engine(registry)),
    )
}

/// The configuration of an operator command: `path` (or Sessions.toml) <- SESSION_*
/// environment, refused when it names no engine or the in-process `memory` engine.
pub fn load_for(
    registry: &EngineRegistry,
    path: Option<&Path>,
    command: &str,
) -> CliResult<Config> {
    let config = load_with_engine(path, "")?;
    let mut source = source_of(path);
    match std::env::var("SESSION_ENGINE") {
        Ok(engine) => source = format!("{source}, SESSION_ENGINE={engine}"),
        Err(_) => source.push_str(", SESSION_ENGINE unset"),
    }
    require_engine(registry, &config, &source, command)?;
    Ok(config)
}

/// The configuration in the file at `path` as it is: no `SESSION_*` environment
/// overrides (they would apply to both sides of a copy alike), and refused like
/// [`load_for`] when it names no engine or the `memory` engine.
pub fn load_file_only(registry: &EngineRegistry, path: &Path, command: &str) -> CliResult<Config> {
    let config = Config::load_file_only(
        path,
        SessionSettings {
            engine: String::new(),
            ..SessionSettings::default()
        },
    )?;
    require_engine(registry, &config, &path.display().to_string(), command)?;
    Ok(config)
}

/// The store `config` selects, refused when it lives only inside this process (such as a
/// `cache` engine without a server URL).
pub async fn build_for(
    registry: &EngineRegistry,
    config: &Config,
    command: &str,
) -> CliResult<Arc<dyn SessionStore>> {
    let store = build(registry, config).await?;
    let caps = store.capabilities();
    if !caps.durable && !caps.cross_process {
        return Err(in_process(
            registry,
            command,
            store.engine(),
            "its configuration",
        ));
    }
    Ok(store)
}
