//! Configuration: defaults, then `Sessions.toml`, then `SESSION_*` environment variables.
//!
//! ```toml
//! engine = "file"          # which backend; see the engine registry
//! codec = "json"           # "bincode" (default) or "json"
//! max_encoded_size = 4194304
//!
//! [expiry]
//! default_age_secs = 1209600
//! expire_at_browser_close = false
//! absolute_timeout_secs = 86400
//!
//! [file]                   # each engine reads its own section
//! path = "/var/lib/myapp/sessions"
//! ```
//!
//! Environment variables override the file: `SESSION_ENGINE=db`, `SESSION_CODEC=json`,
//! and nested keys with a double underscore: `SESSION_DB__URL=postgres://...`,
//! `SESSION_EXPIRY__DEFAULT_AGE_SECS=3600`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecKind, DEFAULT_MAX_ENCODED_SIZE};
use crate::error::{Error, Result};
use crate::expiry::ExpirySettings;

/// The configuration file read when no path is given.
pub const DEFAULT_CONFIG_FILE: &str = "Sessions.toml";

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "SESSION_";

/// Settings shared by every engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// The engine's registered name.
    pub engine: String,
    /// How records are encoded.
    pub codec: CodecKind,
    /// Largest encoded session accepted, in bytes.
    pub max_encoded_size: usize,
    /// Most keys one session may hold.
    pub max_keys: usize,
    /// How many times a save re-applies its changes after version conflicts.
    pub save_attempts: u32,
    /// Expiry rules.
    pub expiry: ExpirySettings,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            engine: "memory".into(),
            codec: CodecKind::Bincode,
            max_encoded_size: DEFAULT_MAX_ENCODED_SIZE,
            max_keys: 10_000,
            save_attempts: 64,
            expiry: ExpirySettings::default(),
        }
    }
}

impl SessionSettings {
    /// The configured codec.
    pub fn codec(&self) -> std::sync::Arc<dyn Codec> {
        self.codec.build(self.max_encoded_size)
    }

    /// Checks values serde cannot: positive sizes and ages.
    pub fn validate(&self) -> Result<()> {
        if self.engine.trim().is_empty() {
            return Err(Error::config(
                "engine",
                "must name an engine, e.g. \"memory\"",
            ));
        }
        if self.max_encoded_size == 0 {
            return Err(Error::config("max_encoded_size", "must be greater than 0"));
        }
        if self.save_attempts == 0 {
            return Err(Error::config("save_attempts", "must be at least 1"));
        }
        if self.expiry.default_age_secs <= 0 {
            return Err(Error::config(
                "expiry.default_age_secs",
                "must be a positive number of seconds",
            ));
        }
        if matches!(self.expiry.absolute_timeout_secs, Some(a) if a <= 0) {
            return Err(Error::config(
                "expiry.absolute_timeout_secs",
                "must be a positive number of seconds, or absent",
            ));
        }
        Ok(())
    }
}

/// A layered configuration: one engine configuration at its root.
///
/// Engines read their own section with [`Config::section`]; composite engines (such as
/// `cached_db`) find complete nested engine configurations with [`Config::nested`].
#[derive(Clone, Debug)]
pub struct Config {
    figment: Figment,
}

impl Config {
    /// Defaults <- the TOML file (`path`, or `Sessions.toml` in the working directory
    /// when it exists) <- `SESSION_*` environment variables.
    ///
    /// An explicitly given path that does not exist is an error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_with_defaults(path, SessionSettings::default())
    }

    /// Like [`Config::load`], with other defaults underneath (a tool whose natural
    /// default engine is not `memory`, say).
    pub fn load_with_defaults(path: Option<&Path>, defaults: SessionSettings) -> Result<Self> {
        let file: PathBuf = match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(Error::Config {
                        key: None,
                        message: format!(
                            "config file {} does not exist or is not a file",
                            p.display()
                        ),
                    });
                }
                p.to_path_buf()
            }
            None => PathBuf::from(DEFAULT_CONFIG_FILE),
        };
        Ok(Self::from_figment(
            Figment::from(Serialized::defaults(defaults))
                .merge(Toml::file(file))
                .merge(env_provider()),
        ))
    }

    /// Defaults <- the given TOML text (no file, no environment).
    pub fn from_toml(toml: &str) -> Self {
        Self::from_figment(
            Figment::from(Serialized::defaults(SessionSettings::default()))
                .merge(Toml::string(toml)),
        )
    }

    /// Defaults <- the given TOML text <- `SESSION_*` environment variables.
    pub fn from_toml_and_env(toml: &str) -> Self {
        Self::from_figment(
            Figment::from(Serialized::defaults(SessionSettings::default()))
                .merge(Toml::string(toml))
                .merge(env_provider()),
        )
    }

    /// Wraps any figment (whose root is an engine configuration).
    pub fn from_figment(figment: Figment) -> Self {
        Config { figment }
    }

    /// The underlying figment.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// This configuration with `key` set to `value` (highest precedence).
    pub fn with<T: Serialize>(self, key: &str, value: T) -> Self {
        Config {
            figment: self.figment.merge(Serialized::default(key, value)),
        }
    }

    /// The shared settings at the root, validated.
    pub fn settings(&self) -> Result<SessionSettings> {
        let s: SessionSettings = self.figment.extract()?;
        s.validate()?;
        Ok(s)
    }

    /// Engine-specific options under `key`, or `T::default()` when the section is absent.
    pub fn section<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        if self.figment.contains(key) {
            self.figment.clone().focus(key).extract().map_err(|e| {
                let mut err = Error::from(e);
                if let Error::Config { key: k, .. } = &mut err {
                    *k = Some(match k.take() {
                        Some(inner) => format!("{key}.{inner}"),
                        None => key.to_owned(),
                    });
                }
                err
            })
        } else {
            Ok(T::default())
        }
    }

    /// The complete engine configuration nested under `key` (e.g. `cached_db.cache`),
    /// whose `engine` defaults to `default_engine`.
    pub fn nested(&self, key: &str, default_engine: &str) -> Config {
        let inner = self.figment.clone().focus(key);
        let mut figment = Figment::from(Serialized::defaults(SessionSettings {
            engine: default_engine.to_owned(),
            ..SessionSettings::default()
        }));
        figment = figment.merge(inner);
        Config { figment }
    }
}

fn env_provider() -> Env {
    // `SESSION_MANAGER` and similar desktop variables are not ours: only known roots pass.
    Env::prefixed(ENV_PREFIX).split("__")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct FileSection {
        path: Option<String>,
        fsync: Option<bool>,
    }

    #[test]
    fn defaults() {
        let s = Config::from_toml("").settings().expect("settings");
        assert_eq!(s, SessionSettings::default());
        assert_eq!(s.expiry.default_age_secs, 1_209_600);
    }

    #[test]
    fn file_then_env_overrides() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "Sessions.toml",
                r#"
                engine = "file"
                codec = "json"
                [expiry]
                default_age_secs = 60
                [file]
                path = "/srv/sessions"
                "#,
            )?;
            let cfg = Config::load(None).expect("load");
            let s = cfg.settings().expect("settings");
            assert_eq!(s.engine, "file");
            assert_eq!(s.codec, CodecKind::Json);
            assert_eq!(s.expiry.default_age_secs, 60);
            let f: FileSection = cfg.section("file").expect("file section");
            assert_eq!(f.path.as_deref(), Some("/srv/sessions"));

            jail.set_env("SESSION_ENGINE", "db");
            jail.set_env("SESSION_EXPIRY__DEFAULT_AGE_SECS", "120");
            jail.set_env("SESSION_FILE__PATH", "/elsewhere");
            let cfg = Config::load(None).expect("load");
            let s = cfg.settings().expect("settings");
            assert_eq!(s.engine, "db");
            assert_eq!(s.codec, CodecKind::Json, "file value kept");
            assert_eq!(s.expiry.default_age_secs, 120);
            let f: FileSection = cfg.section("file").expect("file section");
            assert_eq!(f.path.as_deref(), Some("/elsewhere"));
            Ok(())
        });
    }

    #[test]
    fn explicit_path_and_missing_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "engine = \"cache\"")?;
            let s = Config::load(Some(Path::new("custom.toml")))
                .expect("load")
                .settings()
                .expect("settings");
            assert_eq!(s.engine, "cache");
            let err = Config::load(Some(Path::new("nope.toml"))).expect_err("missing");
            assert!(err.to_string().contains("nope.toml"), "{err}");
            // No Sessions.toml at all is fine: defaults apply.
            assert_eq!(
                Config::load(None)
                    .expect("load")
                    .settings()
                    .expect("s")
                    .engine,
                "memory"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_toml("[expiry]\ndefault_age_secs = \"soon\"")
            .settings()
            .expect_err("bad type");
        match &err {
            Error::Config { key, .. } => {
                assert_eq!(key.as_deref(), Some("expiry.default_age_secs"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = Config::from_toml("codec = \"xml\"")
            .settings()
            .expect_err("codec");
        assert!(
            matches!(&err, Error::Config { key: Some(k), .. } if k == "codec"),
            "{err}"
        );
        let err = Config::from_toml("[expiry]\ndefault_age_secs = 0")
            .settings()
            .expect_err("zero age");
        assert!(err.to_string().contains("expiry.default_age_secs"), "{err}");
        let err = Config::from_toml("[expiry]\nbogus = 1")
            .settings()
            .expect_err("unknown");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = Config::from_toml("[file]\npath = 5")
            .section::<FileSection>("file")
            .expect_err("bad section");
        assert!(
            matches!(&err, Error::Config { key: Some(k), .. } if k == "file.path"),
            "{err}"
        );
    }

    #[test]
    fn nested_configs() {
        let cfg = Config::from_toml(
            r#"
            engine = "cached_db"
            [cached_db.cache]
            engine = "memory"
            [cached_db.db]
            [cached_db.db.db]
            url = "sqlite://x.db"
            "#,
        );
        let cache = cfg.nested("cached_db.cache", "cache");
        assert_eq!(cache.settings().expect("s").engine, "memory");
        let db = cfg.nested("cached_db.db", "db");
        assert_eq!(db.settings().expect("s").engine, "db");
        #[derive(Debug, Default, Deserialize)]
        struct DbSection {
            url: String,
        }
        assert_eq!(
            db.section::<DbSection>("db").expect("db").url,
            "sqlite://x.db"
        );
    }
}
