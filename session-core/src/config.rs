//! Configuration: defaults, then `Sessions.toml`, then `SESSION_*` environment variables.
//!
//! ```toml
//! engine = "file"          # which backend; see the engine registry
//! codec = "json"           # "bincode" (default) or "json"
//! max_encoded_size = 4194304
//! hash_keys = true         # store SHA-256 of session keys, not the keys (default false)
//!
//! [encryption]             # optional: seal records with XChaCha20-Poly1305
//! keys = ["<base64 of 32 random bytes>", "<an older key, still accepted>"]
//! accept_plaintext = false # true only while migrating a store written without encryption
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
//! `SESSION_EXPIRY__DEFAULT_AGE_SECS=3600`, `SESSION_HASH_KEYS=true`, and
//! `SESSION_ENCRYPTION__KEYS=key1,key2` (a comma-separated list, the encrypting key first).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{
    Codec, CodecKind, DEFAULT_MAX_ENCODED_SIZE, ENCRYPTION_OVERHEAD, EncryptedCodec, EncryptionKey,
    MisconfiguredCodec,
};
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
    /// Store SHA-256 of each session key instead of the key ([`crate::hashed`]), so a
    /// dump of the store cannot be replayed as cookies.
    ///
    /// Off by default, because turning it on is a migration, not a tweak: sessions
    /// stored under plain keys are no longer found (everyone is logged out once), and
    /// the listing tools (`sessions stats`, `sessions copy`) refuse to run through it.
    /// Turn it on for new deployments and wherever dumps, backups or replicas are
    /// readable by more people than the application.
    pub hash_keys: bool,
    /// Encryption of stored records (off unless keys are given).
    pub encryption: EncryptionSettings,
    /// Expiry rules.
    pub expiry: ExpirySettings,
}

/// `[encryption]`: seal stored records with XChaCha20-Poly1305 ([`EncryptedCodec`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSettings {
    /// Base64 of 32-byte keys; the first encrypts, all decrypt. Empty: no encryption.
    /// A single string is split on commas and whitespace (for environment variables).
    #[serde(deserialize_with = "keys_from_list_or_string")]
    pub keys: Vec<String>,
    /// Read records written without encryption (a migration window). Off by default.
    pub accept_plaintext: bool,
}

impl std::fmt::Debug for EncryptionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionSettings")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("accept_plaintext", &self.accept_plaintext)
            .finish()
    }
}

impl EncryptionSettings {
    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The configured keys, parsed; errors name the key by position
    /// (`encryption.keys[1]`) and never contain it.
    pub fn parse_keys(&self) -> Result<Vec<EncryptionKey>> {
        let mut out: Vec<EncryptionKey> = Vec::with_capacity(self.keys.len());
        for (i, text) in self.keys.iter().enumerate() {
            let key = EncryptionKey::from_base64(text)
                .map_err(|msg| Error::config(format!("encryption.keys[{i}]"), msg))?;
            if let Some(j) = out.iter().position(|k| k.id_hex() == key.id_hex()) {
                return Err(Error::config(
                    format!("encryption.keys[{i}]"),
                    format!("repeats encryption.keys[{j}]; list each key once"),
                ));
            }
            out.push(key);
        }
        Ok(out)
    }
}

fn keys_from_list_or_string<'de, D>(d: D) -> std::result::Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct KeysVisitor;

    impl<'de> serde::de::Visitor<'de> for KeysVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of base64 keys, or one string of comma-separated base64 keys")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
            Ok(s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = seq.next_element::<String>()? {
                out.push(k);
            }
            Ok(out)
        }
    }

    d.deserialize_any(KeysVisitor)
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            engine: "memory".into(),
            codec: CodecKind::Bincode,
            max_encoded_size: DEFAULT_MAX_ENCODED_SIZE,
            max_keys: 10_000,
            save_attempts: 64,
            hash_keys: false,
            encryption: EncryptionSettings::default(),
            expiry: ExpirySettings::default(),
        }
    }
}

impl SessionSettings {
    /// The configured codec: [`SessionSettings::try_codec`], or, when the encryption
    /// settings are invalid (which [`Config::settings`] already refuses), a codec that
    /// refuses every record: sessions are never stored unencrypted by mistake.
    pub fn codec(&self) -> std::sync::Arc<dyn Codec> {
        self.try_codec()
            .unwrap_or_else(|e| std::sync::Arc::new(MisconfiguredCodec(e.to_string())))
    }

    /// The configured codec, wrapped in an [`EncryptedCodec`] when encryption keys are
    /// configured; an error names an invalid key.
    pub fn try_codec(&self) -> Result<std::sync::Arc<dyn Codec>> {
        if !self.encryption.is_enabled() {
            return Ok(self.codec.build(self.max_encoded_size));
        }
        let keys = self.encryption.parse_keys()?;
        // The inner limit leaves room for the nonce and tag, so the stored bytes stay
        // within `max_encoded_size` (what backends size their reads by).
        let inner = self.codec.build(
            self.max_encoded_size
                .saturating_sub(ENCRYPTION_OVERHEAD)
                .max(1),
        );
        let codec = EncryptedCodec::new(inner, keys)
            .map_err(|e| Error::config("encryption.keys", e.to_string()))?
            .accept_plaintext(self.encryption.accept_plaintext)
            .max_encoded_size(self.max_encoded_size);
        Ok(std::sync::Arc::new(codec))
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
        if self.encryption.is_enabled() {
            self.encryption.parse_keys()?;
            if self.max_encoded_size <= ENCRYPTION_OVERHEAD {
                return Err(Error::config(
                    "max_encoded_size",
                    format!(
                        "must exceed the {ENCRYPTION_OVERHEAD} bytes encryption adds to each record"
                    ),
                ));
            }
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
    fn defaults_are_the_documented_safe_ones() {
        let s = SessionSettings::default();
        assert_eq!(crate::key::KEY_LEN, 32, "Django's key length, ~165 bits");
        assert_eq!(s.max_encoded_size, DEFAULT_MAX_ENCODED_SIZE);
        assert_eq!(s.max_keys, 10_000);
        // Opt-in protections, off until configured (see `hash_keys` for why) ...
        assert!(!s.hash_keys);
        assert!(!s.encryption.is_enabled());
        // ... and once encryption is on, plaintext is refused unless allowed.
        assert!(!s.encryption.accept_plaintext);
        assert!(!format!("{s:?}").contains("keys: ["), "{s:?}");
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
