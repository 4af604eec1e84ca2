//! Configuration: defaults, then `Sessions.toml`, then `SESSION_*` environment variables.
//!
//! ```toml
//! engine = "file"          # which backend; see the engine registry
//! codec = "json"           # "bincode" (default) or "json"
//! max_encoded_size = 4194304
//! hash_keys = true         # store SHA-256 of session keys, not the keys (default false)
//! layers = ["timeout"]     # store layers, innermost first, each with its own section
//!
//! [timeout]                # the `timeout` layer's options
//! per_call_ms = 2000
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
//! `SESSION_ENCRYPTION__KEYS=key1,key2`.
//!
//! Three rules hold for every key:
//! - **Unknown keys are errors.** A key that no setting, engine or framework section
//!   reads (at the root, in any section, in a nested engine, or as a `SESSION_*`
//!   variable) is refused by [`EngineRegistry::validate`](crate::EngineRegistry::validate)
//!   before anything is built, with its full path, the file and line or the variable it
//!   came from, and the nearest known key (`did you mean `engine`?`). Only
//!   [`FOREIGN_ENV_VARS`] (`SESSION_MANAGER`, set by desktop sessions) are passed over.
//! - **Lists take two spellings.** Every list is a TOML array in the file, and either a
//!   comma-separated string or a TOML array in the environment ([`string_list`]):
//!   `SESSION_ENCRYPTION__KEYS=k1,k2` and `SESSION_ENCRYPTION__KEYS='["k1", "k2"]'`.
//! - **Nested engines take the shape of a top-level one, and the obvious shorthand.**
//!   `[cached_db.cache]` holds `engine` and the engine's section, and the section's keys
//!   may be written directly: `SESSION_CACHED_DB__CACHE__URL=redis://...` is
//!   `[cached_db.cache.cache] url = "redis://..."` ([`Config::nested`]).

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
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
    /// Store layers to wear, by registered name, innermost first
    /// ([`crate::layer`]): `layers = ["timeout"]`, each configured from its own root
    /// section (`[timeout]`). `hash_keys = true` adds the `hash_keys` layer outermost.
    #[serde(deserialize_with = "string_list")]
    pub layers: Vec<String>,
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
    /// A single string is split on commas ([`string_list`], as every list).
    #[serde(deserialize_with = "string_list")]
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

/// Deserializes a list of strings from either a list or one string of comma-separated
/// items (surrounding white space trimmed, empty items dropped).
///
/// Every list in the configuration takes both forms, so a list set from the environment
/// needs no TOML syntax: `SESSION_ENCRYPTION__KEYS=key1,key2` and
/// `SESSION_ENCRYPTION__KEYS='["key1", "key2"]'` mean the same. (An item can therefore
/// not contain a comma in the one-string form; keys and URLs never do.) Use it on a
/// field with `#[serde(deserialize_with = "session_core::config::string_list")]`.
pub fn string_list<'de, D>(d: D) -> std::result::Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ListVisitor;

    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings, or one string of comma-separated items")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
            Ok(s.split(',')
                .map(str::trim)
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

    d.deserialize_any(ListVisitor)
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
            layers: Vec::new(),
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

/// The keys of [`SessionSettings`]: shared by every engine, valid at the root only.
///
/// A unit test keeps this list equal to the struct's fields.
pub const SETTINGS_KEYS: &[&str] = &[
    "engine",
    "codec",
    "max_encoded_size",
    "max_keys",
    "save_attempts",
    "hash_keys",
    "layers",
    "encryption",
    "expiry",
];

/// Root sections read by the framework adapters rather than by an engine: the session
/// cookie and the middleware (see `session-axum`), and the background cleanup
/// ([`crate::cleanup`]). Their contents are checked by the
/// code that reads them.
pub const FRAMEWORK_SECTIONS: &[&str] = &["cookie", "middleware", "cleanup"];

/// `SESSION_*` variables that belong to other programs and are never read as settings
/// (`SESSION_MANAGER` is set by X11 desktop sessions).
pub const FOREIGN_ENV_VARS: &[&str] = &["SESSION_MANAGER"];

/// A layered configuration: one engine configuration at its root.
///
/// Engines read their own section with [`Config::section`]; composite engines (such as
/// `cached_db`) find complete nested engine configurations with [`Config::nested`].
///
/// Every error this type returns names the key by its full path as written (for a
/// nested engine, `cached_db.cache.url`) and where the value came from: the file and
/// line, or the environment variable.
#[derive(Clone, Debug)]
pub struct Config {
    figment: Figment,
    /// Where this configuration sits in the whole: empty at the root, `["cached_db",
    /// "cache"]` for the cache engine nested in `cached_db`.
    path: Vec<String>,
    /// For a nested engine configuration: its engine section, and the keys that were
    /// written directly under the nested table (`[cached_db.cache] url = ...`) and moved
    /// into that section.
    shorthand: Option<(String, Vec<String>)>,
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
        Self::load_file(path, defaults, true)
    }

    /// Defaults <- the TOML file, without the environment: for tools that read several
    /// configurations at once (`sessions copy --from a.toml --to b.toml`), where one
    /// set of `SESSION_*` variables cannot be meant for both.
    pub fn load_file_only(path: &Path, defaults: SessionSettings) -> Result<Self> {
        Self::load_file(Some(path), defaults, false)
    }

    fn load_file(path: Option<&Path>, defaults: SessionSettings, env: bool) -> Result<Self> {
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
        let mut figment = Figment::from(Serialized::defaults(defaults)).merge(Toml::file(file));
        if env {
            figment = figment.merge(env_provider());
        }
        Ok(Self::from_figment(figment))
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

    /// Wraps a figment whose root is an engine configuration.
    pub(crate) fn from_figment(figment: Figment) -> Self {
        Config {
            figment,
            path: Vec::new(),
            shorthand: None,
        }
    }

    /// Where this configuration sits in the whole, as a dotted path (`""` at the root,
    /// `"cached_db.cache"` for a nested engine).
    pub fn path(&self) -> String {
        self.path.join(".")
    }

    /// This configuration with `key` set to `value` (highest precedence).
    pub fn with<T: Serialize>(self, key: &str, value: T) -> Self {
        Config {
            figment: self.figment.merge(Serialized::default(key, value)),
            ..self
        }
    }

    /// The shared settings at the root, validated.
    pub fn settings(&self) -> Result<SessionSettings> {
        let s: SessionSettings = self.figment.extract().map_err(|e| self.error(e))?;
        s.validate().map_err(|e| self.locate(e))?;
        Ok(s)
    }

    /// Whether the configuration sets `key` (a dotted path relative to this one).
    pub fn contains(&self, key: &str) -> bool {
        self.figment.contains(key)
    }

    /// The value at `key` (a dotted path relative to this configuration) as a `T`, or
    /// `None` when the configuration does not set it.
    ///
    /// A value of the wrong shape is an [`Error::Config`] naming the full key path and
    /// where the value came from, as for [`Config::section`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if !self.figment.contains(key) {
            return Ok(None);
        }
        self.figment.extract_inner(key).map(Some).map_err(|mut e| {
            // figment appends `key` after the path inside the value; put it first.
            let key_path = split_key(key);
            if e.path.ends_with(&key_path) {
                e.path.truncate(e.path.len() - key_path.len());
            }
            let mut path = key_path;
            path.append(&mut e.path);
            e.path = path;
            self.error(e)
        })
    }

    /// Engine-specific options under `key`, or `T::default()` when the section is absent.
    pub fn section<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        if self.figment.contains(key) {
            self.figment.focus(key).extract().map_err(|mut e| {
                let mut path = split_key(key);
                path.append(&mut e.path);
                e.path = path;
                self.error(e)
            })
        } else {
            Ok(T::default())
        }
    }

    /// A required string at `key` (relative to this configuration): an error naming the
    /// full key path when it is absent or empty.
    pub fn required_str(&self, key: &str) -> Result<String> {
        match self.figment.extract_inner::<String>(key) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            Ok(_) => Err(self.locate(Error::config(key, "must not be empty"))),
            Err(e) if e.missing() => Err(Error::config(
                self.display_path(&split_key(key)),
                "is required",
            )),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The complete engine configuration nested under `key` (e.g. `cached_db.cache`),
    /// whose `engine` defaults to `default_engine`.
    ///
    /// A nested engine configuration has the shape of a top-level one (`engine`, and the
    /// engine's own section), and may also give the section's keys directly:
    /// `[cached_db.cache] url = "redis://..."` (or `SESSION_CACHED_DB__CACHE__URL`) means
    /// `[cached_db.cache.cache] url = ...`; where both are given, the direct one wins.
    /// Shared settings (codec, sizes, expiry) are inherited from the root and cannot be
    /// set in a nested configuration ([`Config::check_keys`] says so).
    pub fn nested(&self, key: &str, default_engine: &str) -> Config {
        let inner = self.figment.focus(key);
        let engine = inner
            .extract_inner::<String>("engine")
            .unwrap_or_else(|_| default_engine.to_owned());
        let mut moved = Vec::new();
        let data = match inner.data() {
            Ok(mut profiles) => {
                for dict in profiles.values_mut() {
                    let flat: Vec<String> = dict
                        .keys()
                        .filter(|k| *k != &engine && !SETTINGS_KEYS.contains(&k.as_str()))
                        .cloned()
                        .collect();
                    let mut section = match dict.remove(&engine) {
                        Some(figment::value::Value::Dict(_, d)) => d,
                        Some(other) => {
                            // Not a table: leave it for the section's own type error.
                            dict.insert(engine.clone(), other);
                            continue;
                        }
                        None => figment::value::Dict::new(),
                    };
                    for k in flat {
                        if let Some(v) = dict.remove(&k) {
                            section.insert(k.clone(), v);
                            if !moved.contains(&k) {
                                moved.push(k);
                            }
                        }
                    }
                    if !section.is_empty() {
                        dict.insert(
                            engine.clone(),
                            figment::value::Value::Dict(figment::value::Tag::Default, section),
                        );
                    }
                }
                Ok(profiles)
            }
            Err(e) => Err(e),
        };
        // Only the engine has a default here: the shared settings are the root's, so
        // any other root key in a nested configuration was written by the user.
        let figment =
            Figment::from(Serialized::default("engine", default_engine)).merge(Regrouped {
                data,
                source: inner,
            });
        let mut path = self.path.clone();
        path.extend(split_key(key));
        Config {
            figment,
            path,
            shorthand: Some((engine, moved)),
        }
    }

    /// Refuses any key at this configuration's root that is not in `allowed`, naming the
    /// key, where it was set and the nearest known key. A nested configuration also
    /// refuses the shared settings (other than `engine`): they are inherited from the
    /// root.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        let keys: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            self.figment.extract().map_err(|e| self.error(e))?;
        for key in keys.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let path = vec![key.clone()];
            let from = self.source_of(&path);
            if !self.path.is_empty() && SETTINGS_KEYS.contains(&key.as_str()) {
                return Err(Error::config(
                    self.display_path(&path),
                    format!(
                        "is a shared setting{from}: a nested engine inherits the root \
                         configuration's; set `{key}` at the top level instead"
                    ),
                ));
            }
            let mut message = format!("unknown key{from}");
            match nearest(key, allowed.iter().copied()) {
                Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
                None => message.push_str(&format!("; known keys here: {}", allowed.join(", "))),
            }
            return Err(Error::config(self.display_path(&path), message));
        }
        Ok(())
    }

    /// A figment error as [`Error::Config`]: the full key path as written, where the
    /// value came from, and for an unknown key the nearest known one.
    pub(crate) fn error(&self, e: figment::Error) -> Error {
        let mut path = e.path.clone();
        let message = match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                let mut m = format!("unknown key{}", self.source_of(&path));
                match nearest(field, expected.iter().copied()) {
                    Some(near) => m.push_str(&format!("; did you mean `{near}`?")),
                    None if !expected.is_empty() => {
                        m.push_str(&format!("; known keys here: {}", expected.join(", ")))
                    }
                    None => {}
                }
                m
            }
            kind => format!("{kind}{}", self.source_of(&path)),
        };
        Error::Config {
            key: (!path.is_empty()).then(|| self.display_path(&path)),
            message,
        }
    }

    /// An error from checking a value (not from parsing it), with its key made a full
    /// path and its source added.
    pub fn locate(&self, e: Error) -> Error {
        match e {
            Error::Config {
                key: Some(key),
                message,
            } => {
                let path = split_key(&key);
                Error::Config {
                    message: format!("{message}{}", self.source_of(&path)),
                    key: Some(self.display_path(&path)),
                }
            }
            other => other,
        }
    }

    /// The path relative to this configuration as the user wrote it (a key moved into the
    /// engine section by the nested shorthand is shown where it was written).
    fn written_path(&self, path: &[String]) -> Vec<String> {
        if let Some((section, moved)) = &self.shorthand
            && path.len() > 1
            && &path[0] == section
            && moved.contains(&path[1])
        {
            return path[1..].to_vec();
        }
        path.to_vec()
    }

    /// The full dotted path of `path` (relative to this configuration) as written.
    fn display_path(&self, path: &[String]) -> String {
        let mut full = self.path.clone();
        full.extend(self.written_path(path));
        full.join(".")
    }

    /// " (in FILE, line N)" or " (from environment variable SESSION_X)" for the value
    /// at `path`, or "" when unknown (a default).
    fn source_of(&self, path: &[String]) -> String {
        let Ok(value) = self.figment.find_value(&path.join(".")) else {
            return String::new();
        };
        let Some(meta) = self.figment.get_metadata(value.tag()) else {
            return String::new();
        };
        let mut full = self.path.clone();
        full.extend(self.written_path(path));
        match &meta.source {
            Some(figment::Source::File(file)) => match line_of(file, &full) {
                Some(line) => format!(" (in {}, line {line})", file.display()),
                None => format!(" (in {})", file.display()),
            },
            _ if meta.name.contains("environment") => format!(
                " (from environment variable {ENV_PREFIX}{})",
                full.join("__").to_ascii_uppercase()
            ),
            _ => String::new(),
        }
    }
}

/// A nested engine configuration with its keys regrouped ([`Config::nested`]); values
/// keep their tags, so errors still name the file or variable they came from.
struct Regrouped {
    data: figment::Result<figment::value::Map<figment::Profile, figment::value::Dict>>,
    source: Figment,
}

impl figment::Provider for Regrouped {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("nested engine configuration")
    }

    fn data(&self) -> figment::Result<figment::value::Map<figment::Profile, figment::value::Dict>> {
        self.data.clone()
    }

    fn __metadata_map(
        &self,
    ) -> Option<figment::value::Map<figment::value::Tag, figment::Metadata>> {
        self.source.__metadata_map()
    }
}

fn split_key(key: &str) -> Vec<String> {
    key.split('.').map(str::to_owned).collect()
}

/// The 1-based line of `path` in the TOML file `file` (the key itself, or the table
/// header that names it), when the file still parses.
fn line_of(file: &Path, path: &[String]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    for (i, part) in path.iter().enumerate() {
        let (key, item) = table.get_key_value(part)?;
        span = key.span().or(span);
        if i + 1 < path.len() {
            table = item.as_table_like()?;
        }
    }
    let start = span?.start;
    Some(text[..start.min(text.len())].matches('\n').count() + 1)
}

/// The known key closest to `key` by edit distance, when it is close enough to be a typo.
fn nearest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn env_provider() -> Env {
    // `SESSION_MANAGER` and similar desktop variables are not ours.
    let foreign: Vec<&str> = FOREIGN_ENV_VARS
        .iter()
        .filter_map(|v| v.strip_prefix(ENV_PREFIX))
        .collect();
    Env::prefixed(ENV_PREFIX).ignore(&foreign).split("__")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
    fn get_is_typed_absent_is_none_and_errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "Sessions.toml",
                "engine = \"file\"\n[file]\npath = \"/srv/sessions\"\nfsync = \"often\"\n[cookie]\nlimits = { a = 1, b = \"x\" }\n",
            )?;
            let cfg = Config::load(None).expect("load");
            assert_eq!(
                cfg.get::<String>("file.path").expect("get"),
                Some("/srv/sessions".to_owned())
            );
            assert_eq!(cfg.get::<bool>("cookie.secure").expect("get"), None);
            let err = cfg.get::<bool>("file.fsync").expect_err("not a bool");
            let Error::Config { key, message } = err else {
                panic!("{err:?}")
            };
            assert_eq!(key.as_deref(), Some("file.fsync"));
            assert!(message.contains("Sessions.toml, line 4"), "{message}");
            let err = cfg
                .get::<BTreeMap<String, u32>>("cookie.limits")
                .expect_err("b is not a number");
            let Error::Config { key, .. } = err else {
                panic!("{err:?}")
            };
            assert_eq!(key.as_deref(), Some("cookie.limits.b"));
            Ok(())
        });
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

    /// A registry with stand-in engines named like the real ones, each with a checked
    /// section, so the key checks run without any backend crate.
    fn registry() -> crate::EngineRegistry {
        use crate::{EngineContext, EngineRegistry, SessionStore};
        #[derive(Debug, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct UrlSection {
            #[allow(dead_code)]
            url: Option<String>,
            #[serde(deserialize_with = "string_list")]
            #[allow(dead_code)]
            urls: Vec<String>,
        }
        let registry = EngineRegistry::new();
        for name in ["memory", "cache", "db", "file"] {
            registry.register_checked(
                name,
                |_ctx: EngineContext| async move {
                    Err::<std::sync::Arc<dyn SessionStore>, _>(Error::unsupported("t", "build"))
                },
                move |ctx: &EngineContext| ctx.section::<UrlSection>(name).map(drop),
            );
        }
        registry.register_checked(
            "cached_db",
            |_ctx: EngineContext| async move {
                Err::<std::sync::Arc<dyn SessionStore>, _>(Error::unsupported("t", "build"))
            },
            |ctx: &EngineContext| {
                ctx.validate_nested("cached_db.cache", "cache")?;
                ctx.validate_nested("cached_db.db", "db")
            },
        );
        registry
    }

    fn config_error(err: Error) -> (String, String) {
        match err {
            Error::Config {
                key: Some(key),
                message,
            } => (key, message),
            other => panic!("expected a config error with a key, got {other:?}"),
        }
    }

    #[test]
    fn settings_keys_match_the_struct() {
        let value = figment::value::Value::serialize(SessionSettings::default()).expect("ser");
        let dict = value.into_dict().expect("dict");
        let mut fields: Vec<&str> = dict.keys().map(String::as_str).collect();
        let mut listed = SETTINGS_KEYS.to_vec();
        fields.sort_unstable();
        listed.sort_unstable();
        assert_eq!(fields, listed);
    }

    #[test]
    fn unknown_root_keys_name_file_line_and_nearest_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "Sessions.toml",
                "codec = \"json\"\nenigne = \"db\"\n\n[db]\nurl = \"sqlite://x.db\"\n",
            )?;
            let err = registry()
                .validate(&Config::load(None).expect("load"))
                .expect_err("typo");
            let (key, message) = config_error(err);
            assert_eq!(key, "enigne");
            assert!(message.contains("Sessions.toml, line 2"), "{message}");
            assert!(message.contains("did you mean `engine`?"), "{message}");

            jail.create_file(
                "Sessions.toml",
                "engine = \"db\"\n[memroy]\nmax_entries = 5\n",
            )?;
            let err = registry()
                .validate(&Config::load(None).expect("load"))
                .expect_err("section typo");
            let (key, message) = config_error(err);
            assert_eq!(key, "memroy");
            assert!(message.contains("line 2"), "{message}");
            assert!(message.contains("did you mean `memory`?"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_inside_sections_name_their_path() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "Sessions.toml",
                "engine = \"db\"\n[db]\nulr = \"sqlite://x.db\"\n",
            )?;
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("typo"),
            );
            assert_eq!(key, "db.ulr");
            assert!(message.contains("line 3"), "{message}");
            assert!(message.contains("did you mean `url`?"), "{message}");
            // Settings sections too, with the nearest known key.
            jail.create_file("Sessions.toml", "[expiry]\ndefault_age = 5\n")?;
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("typo"),
            );
            assert_eq!(key, "expiry.default_age");
            assert!(message.contains("line 2"), "{message}");
            assert!(message.contains("default_age_secs"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn unknown_environment_variables_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SESSION_ENIGNE", "db");
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("typo"),
            );
            assert_eq!(key, "enigne");
            assert!(
                message.contains("environment variable SESSION_ENIGNE"),
                "{message}"
            );
            assert!(message.contains("did you mean `engine`?"), "{message}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SESSION_DB__URLL", "sqlite://x.db");
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("typo"),
            );
            assert_eq!(key, "db.urll");
            assert!(message.contains("SESSION_DB__URLL"), "{message}");
            Ok(())
        });
        // A desktop session's variable is not ours and is left alone.
        figment::Jail::expect_with(|jail| {
            jail.set_env("SESSION_MANAGER", "local/host:@/tmp/.ICE-unix/1234");
            registry()
                .validate(&Config::load(None).expect("load"))
                .expect("SESSION_MANAGER ignored");
            Ok(())
        });
    }

    #[test]
    fn nested_engines_take_the_obvious_spelling() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SESSION_ENGINE", "cached_db");
            jail.set_env("SESSION_CACHED_DB__CACHE__URL", "redis://127.0.0.1:6379");
            jail.set_env("SESSION_CACHED_DB__DB__URL", "postgres://127.0.0.1/app");
            let cfg = Config::load(None).expect("load");
            registry().validate(&cfg).expect("valid");
            #[derive(Debug, Default, Deserialize)]
            struct Url {
                url: Option<String>,
            }
            let cache = cfg.nested("cached_db.cache", "cache");
            assert_eq!(
                cache.section::<Url>("cache").expect("cache").url.as_deref(),
                Some("redis://127.0.0.1:6379")
            );
            let db = cfg.nested("cached_db.db", "db");
            assert_eq!(
                db.section::<Url>("db").expect("db").url.as_deref(),
                Some("postgres://127.0.0.1/app")
            );
            // A typo in the nested shorthand names the variable as written.
            jail.set_env("SESSION_CACHED_DB__CACHE__URLL", "redis://x");
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("typo"),
            );
            assert_eq!(key, "cached_db.cache.urll");
            assert!(
                message.contains("SESSION_CACHED_DB__CACHE__URLL"),
                "{message}"
            );
            assert!(message.contains("did you mean `url`?"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn nested_configs_refuse_unknown_keys_and_shared_settings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "Sessions.toml",
                "engine = \"cached_db\"\n[cached_db.cache]\nengine = \"cache\"\ncodec = \"json\"\n",
            )?;
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("shared setting"),
            );
            assert_eq!(key, "cached_db.cache.codec");
            assert!(message.contains("line 4"), "{message}");
            assert!(message.contains("top level"), "{message}");

            jail.create_file(
                "Sessions.toml",
                "engine = \"cached_db\"\n[cached_db.db]\nengine = \"dbb\"\n",
            )?;
            let (key, message) = config_error(
                registry()
                    .validate(&Config::load(None).expect("load"))
                    .expect_err("unknown nested engine"),
            );
            assert_eq!(key, "cached_db.db.engine");
            assert!(message.contains("dbb"), "{message}");

            // The full form keeps working.
            jail.create_file(
                "Sessions.toml",
                "engine = \"cached_db\"\n[cached_db.cache.cache]\nurl = \"memory\"\n",
            )?;
            registry()
                .validate(&Config::load(None).expect("load"))
                .expect("full nested form");
            Ok(())
        });
    }

    #[test]
    fn every_list_takes_a_comma_separated_string() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SESSION_CACHE__URLS", "redis://a:7001, redis://b:7002");
            jail.set_env(
                "SESSION_ENCRYPTION__KEYS",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            );
            let cfg = Config::load(None).expect("load");
            assert_eq!(cfg.settings().expect("settings").encryption.keys.len(), 2);
            #[derive(Debug, Default, Deserialize)]
            struct Urls {
                #[serde(deserialize_with = "string_list")]
                urls: Vec<String>,
            }
            assert_eq!(
                cfg.section::<Urls>("cache").expect("cache").urls,
                ["redis://a:7001", "redis://b:7002"]
            );
            jail.set_env(
                "SESSION_CACHE__URLS",
                "[\"redis://a:7001\", \"redis://b:7002\"]",
            );
            let cfg = Config::load(None).expect("load");
            assert_eq!(cfg.section::<Urls>("cache").expect("cache").urls.len(), 2);
            Ok(())
        });
    }
}
