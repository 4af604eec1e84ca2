//! The engine registry: engine names to constructors, chosen at runtime by configuration.
//!
//! Each backend crate exposes one `register(&EngineRegistry)` function; applications and
//! third-party backends add their own engines the same way. An engine is a name, a
//! constructor that builds the store from an [`EngineContext`] (the configuration, the
//! shared settings, the registry for nested engines) and, optionally, a check of its
//! configuration section that runs before anything is built.
//! [`EngineRegistry::register_store`] and [`EngineRegistry::register_store_checked`] take
//! a constructor returning any concrete store type;
//! [`EngineRegistry::register`] and [`EngineRegistry::register_checked`] take any
//! [`EngineFactory`] (a constructor returning `Arc<dyn SessionStore>`).
//!
//! ```
//! use serde::Deserialize;
//! use session_core::{Config, EngineRegistry, Error};
//! # use session_core::{Capabilities, Inserted, Record, Result, SessionKey, SessionStore, Timestamp};
//! # /// Stands in for a real store.
//! # #[derive(Debug)]
//! # struct KvStore;
//! # impl KvStore { fn open(_path: &str) -> Result<Self> { Ok(KvStore) } }
//! # #[session_core::async_trait]
//! # impl SessionStore for KvStore {
//! #     fn engine(&self) -> &str { "kv" }
//! #     fn capabilities(&self) -> Capabilities { Capabilities::none() }
//! #     async fn insert_new(&self, _: &SessionKey, _: &Record) -> Result<Inserted> { unimplemented!() }
//! #     async fn load(&self, _: &SessionKey) -> Result<Option<Record>> { unimplemented!() }
//! #     async fn update(&self, _: &SessionKey, _: &Record, _: Option<u64>) -> Result<u64> { unimplemented!() }
//! #     async fn delete(&self, _: &SessionKey) -> Result<bool> { unimplemented!() }
//! #     async fn touch(&self, _: &SessionKey, _: Timestamp) -> Result<()> { unimplemented!() }
//! #     async fn exists(&self, _: &SessionKey) -> Result<bool> { unimplemented!() }
//! #     async fn clear_expired(&self) -> Result<u64> { unimplemented!() }
//! # }
//!
//! /// The engine's section, `[kv]`: unknown keys are errors.
//! #[derive(Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct KvConfig {
//!     path: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let registry = EngineRegistry::new();
//! registry.register_store_checked(
//!     "kv",
//!     // Build: any store type, no `Arc<dyn SessionStore>` cast.
//!     |ctx| async move {
//!         let cfg: KvConfig = ctx.section("kv")?;
//!         KvStore::open(&cfg.path)
//!     },
//!     // Check: runs in `validate` and before every build, opens nothing.
//!     |ctx| ctx.section::<KvConfig>("kv").map(drop),
//! );
//!
//! let store = registry
//!     .build(&Config::from_toml("engine = \"kv\"\n[kv]\npath = \"/srv/sessions\""))
//!     .await?;
//! assert_eq!(store.engine(), "kv");
//!
//! // A typo is reported with its full key path, before anything is built.
//! let err = registry
//!     .validate(&Config::from_toml("engine = \"kv\"\n[kv]\npaht = \"/srv\""))
//!     .unwrap_err();
//! assert!(err.to_string().contains("kv.paht"), "{err}");
//!
//! // An engine nobody registered is an error, never a fallback.
//! let err = registry.build(&Config::from_toml("engine = \"nope\"")).await.unwrap_err();
//! assert!(matches!(err, Error::UnknownEngine { .. }));
//! # Ok(()) }
//! ```
//!
//! Store layers ([`crate::layer`]) are registered by name the same way
//! ([`EngineRegistry::register_layer`]); the configuration lists them in `layers` and
//! each reads its own root section. `hash_keys`, `timeout` and (feature `metrics`) `metrics` are registered in every
//! registry.
//!
//! `docs/BACKENDS.md` in the repository is the guide to writing a backend: the store
//! contract, configuration, registration and the conformance suite.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::config::{Config, SessionSettings};
use crate::error::{Error, Result};
use crate::layer::{HashKeysLayer, StoreLayer, StoreLayers, TimeoutConfig};
use crate::store::SessionStore;

/// The name of the layer `hash_keys = true` applies ([`HashKeysLayer`]).
pub const HASH_KEYS_LAYER: &str = "hash_keys";

/// The name of the per-operation deadline layer ([`crate::layer::TimeoutLayer`]),
/// configured from `[timeout]` ([`TimeoutConfig`]).
pub const TIMEOUT_LAYER: &str = "timeout";

/// The name of the metrics and tracing layer ([`crate::metrics::MetricsLayer`], feature
/// `metrics`); it has no options.
pub const METRICS_LAYER: &str = "metrics";

/// A layer constructor ([`EngineRegistry::register_layer`]): builds the layer from its
/// configuration. Synchronous and free of I/O, so the configuration check
/// ([`LayerFactory::validate`]) is by default a build whose result is dropped.
pub trait LayerFactory: Send + Sync + 'static {
    /// Builds the layer from its options (typically its section, [`LayerContext::section`]).
    fn build(&self, ctx: &LayerContext) -> Result<Arc<dyn StoreLayer>>;

    /// Checks the layer's configuration without building a store: by default, builds
    /// the layer and drops it.
    fn validate(&self, ctx: &LayerContext) -> Result<()> {
        self.build(ctx).map(drop)
    }
}

impl<F, L> LayerFactory for F
where
    F: Fn(&LayerContext) -> Result<L> + Send + Sync + 'static,
    L: StoreLayer,
{
    fn build(&self, ctx: &LayerContext) -> Result<Arc<dyn StoreLayer>> {
        Ok(Arc::new(self(ctx)?))
    }
}

/// What a layer constructor gets: its name, the root configuration and the shared
/// settings.
#[derive(Clone, Debug)]
pub struct LayerContext {
    /// The layer's registered name, which is also its section's (`[timeout]`).
    pub name: String,
    /// The root configuration.
    pub config: Config,
    /// The shared settings.
    pub settings: Arc<SessionSettings>,
}

impl LayerContext {
    /// The layer's own section `[name]`, or its defaults when absent. Read it into a
    /// `#[serde(deny_unknown_fields)]` type: unknown keys are then errors with their
    /// full path.
    pub fn section<T: DeserializeOwned + Default>(&self) -> Result<T> {
        self.config.section(&self.name)
    }

    /// `e` with its key made the full path as written and where the value was set.
    pub fn locate(&self, e: Error) -> Error {
        self.config.locate(e)
    }
}

/// The section of a layer without options: any key in it is an error.
#[cfg(feature = "metrics")]
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NoOptions {}

/// What an engine constructor returns.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn SessionStore>>> + Send>>;

/// An engine constructor.
pub trait EngineFactory: Send + Sync + 'static {
    /// Builds a store from the engine's configuration.
    fn build(&self, ctx: EngineContext) -> StoreFuture;

    /// Checks the engine's configuration without building anything (no connection, no
    /// file): its section's keys and values, and any nested engine configuration
    /// ([`EngineContext::validate_nested`]). The default accepts anything; register with
    /// [`EngineRegistry::register_checked`] to supply a check.
    fn validate(&self, ctx: &EngineContext) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// A factory with a configuration check ([`EngineRegistry::register_checked`]).
struct Checked<F, V> {
    factory: F,
    check: V,
}

impl<F, V> EngineFactory for Checked<F, V>
where
    F: EngineFactory,
    V: Fn(&EngineContext) -> Result<()> + Send + Sync + 'static,
{
    fn build(&self, ctx: EngineContext) -> StoreFuture {
        self.factory.build(ctx)
    }

    fn validate(&self, ctx: &EngineContext) -> Result<()> {
        (self.check)(ctx)
    }
}

impl<F, Fut> EngineFactory for F
where
    F: Fn(EngineContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<dyn SessionStore>>> + Send + 'static,
{
    fn build(&self, ctx: EngineContext) -> StoreFuture {
        Box::pin(self(ctx))
    }
}

/// A constructor of a concrete store type ([`EngineRegistry::register_store`]): boxes
/// the store it builds into the registry's `Arc<dyn SessionStore>`.
struct StoreBuilder<F>(F);

impl<S, F, Fut> EngineFactory for StoreBuilder<F>
where
    S: SessionStore + 'static,
    F: Fn(EngineContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S>> + Send + 'static,
{
    fn build(&self, ctx: EngineContext) -> StoreFuture {
        let fut = (self.0)(ctx);
        Box::pin(async move { Ok(Arc::new(fut.await?) as Arc<dyn SessionStore>) })
    }
}

/// What an engine constructor gets: its configuration, the shared settings, and the
/// registry (to build nested engines).
#[derive(Clone)]
pub struct EngineContext {
    /// The engine name being built.
    pub engine: String,
    /// The engine configuration (root: `engine`, `codec`, the engine's own section, ...).
    pub config: Config,
    /// Shared settings of the outermost configuration.
    pub settings: Arc<SessionSettings>,
    /// The registry, for composite engines.
    pub registry: EngineRegistry,
}

impl EngineContext {
    /// The engine's own options under `key`, or their defaults when absent.
    pub fn section<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        self.config.section(key)
    }

    /// `e` with its key made the full path as written and where the value was set
    /// ([`Config::locate`]): for errors of an engine's own checks (`db.url`).
    pub fn locate(&self, e: Error) -> Error {
        self.config.locate(e)
    }

    /// The configured codec.
    pub fn codec(&self) -> Arc<dyn Codec> {
        self.settings.codec()
    }

    /// Builds the complete engine configuration nested under `key`, whose engine
    /// defaults to `default_engine` ([`Config::nested`]). Shared settings (codec, sizes,
    /// expiry) are inherited.
    pub async fn build_nested(
        &self,
        key: &str,
        default_engine: &str,
    ) -> Result<Arc<dyn SessionStore>> {
        let config = self.config.nested(key, default_engine);
        let engine = nested_engine(&config)?;
        self.registry
            .build_engine(&engine, config, self.settings.clone())
            .await
    }

    /// Checks the complete engine configuration nested under `key` as
    /// [`EngineRegistry::validate`] checks a root one: its keys, its engine's name and
    /// section, and whatever that engine nests in turn. For composite engines' checks.
    pub fn validate_nested(&self, key: &str, default_engine: &str) -> Result<()> {
        let config = self.config.nested(key, default_engine);
        self.registry.check(&config, self.settings.clone())
    }
}

fn nested_engine(config: &Config) -> Result<String> {
    config
        .get::<String>("engine")?
        .ok_or_else(|| config.locate(Error::config("engine", "is required")))
}

/// Engine and layer names to constructors. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct EngineRegistry {
    engines: Arc<RwLock<BTreeMap<String, Arc<dyn EngineFactory>>>>,
    layers: Arc<RwLock<BTreeMap<String, Arc<dyn LayerFactory>>>>,
}

impl std::fmt::Debug for EngineRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRegistry")
            .field("engines", &self.known())
            .field("layers", &self.known_layers())
            .finish()
    }
}

impl Default for EngineRegistry {
    fn default() -> Self {
        let registry = EngineRegistry {
            engines: Arc::default(),
            layers: Arc::default(),
        };
        registry.register_layer(HASH_KEYS_LAYER, |_: &LayerContext| Ok(HashKeysLayer));
        registry.register_layer(TIMEOUT_LAYER, |ctx: &LayerContext| {
            ctx.section::<TimeoutConfig>()?
                .layer()
                .map_err(|e| ctx.locate(e))
        });
        #[cfg(feature = "metrics")]
        registry.register_layer(METRICS_LAYER, |ctx: &LayerContext| {
            ctx.section::<NoOptions>()?;
            Ok(crate::metrics::MetricsLayer)
        });
        registry
    }
}

impl EngineRegistry {
    /// A registry with no engine, and the built-in layers `hash_keys`, `timeout` and
    /// (feature `metrics`) `metrics`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the store layer `name` ([`crate::layer`]), which a
    /// configuration wears by listing it in `layers` and configures in its own root
    /// section `[name]` (so the name must not be an engine's, nor a shared setting's).
    /// The factory runs in [`EngineRegistry::validate`] too, so a layer whose section
    /// has an unknown key fails before anything is built:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use serde::Deserialize;
    /// use session_core::layer::StoreLayer;
    /// use session_core::{Config, EngineRegistry, LayerContext, SessionStore};
    ///
    /// #[derive(Default, Deserialize)]
    /// #[serde(default, deny_unknown_fields)]
    /// struct AuditConfig {
    ///     target: String,
    /// }
    ///
    /// let registry = EngineRegistry::new();
    /// registry.register_layer("audit", |ctx: &LayerContext| {
    ///     let cfg: AuditConfig = ctx.section()?;
    ///     // A real layer would wrap the store in a type of its own.
    ///     Ok(move |inner: Arc<dyn SessionStore>| {
    ///         let _ = &cfg.target;
    ///         inner
    ///     })
    /// });
    /// let err = registry
    ///     .validate(&Config::from_toml("layers = [\"audit\"]\n[audit]\ntraget = \"x\""))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("audit.traget"), "{err}");
    /// ```
    pub fn register_layer(&self, name: &str, factory: impl LayerFactory) -> &Self {
        let mut map = self
            .layers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(name.to_owned(), Arc::new(factory));
        self
    }

    /// Checks only that every key at the root of `config` is a shared setting, a
    /// framework section ([`crate::config::FRAMEWORK_SECTIONS`]), a registered engine's
    /// section or a registered layer's section; the error names the key, where it was
    /// set and the nearest known key. Part of [`EngineRegistry::validate`]; on its own
    /// for a caller that must report a typo before it can tell which engine was meant.
    pub fn check_root_keys(&self, config: &Config) -> Result<()> {
        let engines = self.known();
        let layers = self.known_layers();
        let mut allowed: Vec<&str> = crate::config::SETTINGS_KEYS.to_vec();
        allowed.extend(crate::config::FRAMEWORK_SECTIONS);
        allowed.extend(engines.iter().map(String::as_str));
        allowed.extend(layers.iter().map(String::as_str));
        config.check_keys(&allowed)
    }

    /// The registered layer names, sorted.
    pub fn known_layers(&self) -> Vec<String> {
        let map = self
            .layers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.keys().cloned().collect()
    }

    fn layer_entries(&self) -> Vec<(String, Arc<dyn LayerFactory>)> {
        let map = self
            .layers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The layers a root configuration wears, innermost first: those listed in
    /// `layers`, then the `hash_keys` layer when `hash_keys = true` and it is not
    /// listed. Builds (or, with `build` false, only checks) each one.
    fn layers_for(
        &self,
        config: &Config,
        settings: &Arc<SessionSettings>,
        build: bool,
    ) -> Result<StoreLayers> {
        let entries = self.layer_entries();
        let mut names: Vec<&str> = settings.layers.iter().map(String::as_str).collect();
        if settings.hash_keys && !names.contains(&HASH_KEYS_LAYER) {
            names.push(HASH_KEYS_LAYER);
        }
        let mut stack = StoreLayers::new();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(config.locate(Error::config(
                    "layers",
                    format!("lists the layer `{name}` twice; wear each layer once"),
                )));
            }
            let Some((_, factory)) = entries.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
                return Err(config.locate(Error::config(
                    "layers",
                    format!(
                        "names the unknown layer `{name}`; known layers: {}",
                        known.join(", ")
                    ),
                )));
            };
            let ctx = LayerContext {
                name: (*name).to_owned(),
                config: config.clone(),
                settings: settings.clone(),
            };
            if build {
                stack.push(factory.build(&ctx)?);
            } else {
                factory.validate(&ctx)?;
            }
        }
        // A layer section given without the layer listed is refused rather than
        // ignored (after the section's own mistakes). `hash_keys` has no section: its
        // name is the shared setting that turns it on.
        for (name, factory) in &entries {
            if name == HASH_KEYS_LAYER || names.contains(&name.as_str()) || !config.contains(name) {
                continue;
            }
            factory.validate(&LayerContext {
                name: name.clone(),
                config: config.clone(),
                settings: settings.clone(),
            })?;
            return Err(config.locate(Error::config(
                name.as_str(),
                format!(
                    "configures the layer `{name}`, which `layers` does not list; add it \
                     (layers = [\"{name}\"]) or remove the section"
                ),
            )));
        }
        Ok(stack)
    }

    /// Registers (or replaces) the engine `name`, whose own section is `[name]`.
    ///
    /// The section's contents are checked only when the store is built; use
    /// [`EngineRegistry::register_checked`] so that [`EngineRegistry::validate`] checks
    /// them up front.
    pub fn register(&self, name: &str, factory: impl EngineFactory) -> &Self {
        let mut map = self
            .engines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(name.to_owned(), Arc::new(factory));
        self
    }

    /// Registers (or replaces) the engine `name` with a configuration check that runs
    /// before anything is built, typically reading the engine's section into a
    /// `#[serde(deny_unknown_fields)]` type:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use serde::Deserialize;
    /// use session_core::{Config, EngineContext, EngineRegistry, Error, SessionStore};
    ///
    /// #[derive(Default, Deserialize)]
    /// #[serde(default, deny_unknown_fields)]
    /// struct KvConfig {
    ///     path: String,
    /// }
    ///
    /// let registry = EngineRegistry::new();
    /// registry.register_checked(
    ///     "kv",
    ///     |ctx: EngineContext| async move {
    ///         let cfg: KvConfig = ctx.section("kv")?;
    ///         // ... open the store at cfg.path ...
    ///         # let _ = cfg.path;
    ///         Err::<Arc<dyn SessionStore>, _>(Error::unsupported("kv", "this example"))
    ///     },
    ///     |ctx: &EngineContext| ctx.section::<KvConfig>("kv").map(drop),
    /// );
    /// let err = registry
    ///     .validate(&Config::from_toml("engine = \"kv\"\n[kv]\npaht = \"/srv\""))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("kv.paht"), "{err}");
    /// assert!(err.to_string().contains("did you mean `path`?"), "{err}");
    /// ```
    pub fn register_checked(
        &self,
        name: &str,
        factory: impl EngineFactory,
        check: impl Fn(&EngineContext) -> Result<()> + Send + Sync + 'static,
    ) -> &Self {
        self.register(name, Checked { factory, check })
    }

    /// Registers (or replaces) the engine `name` from a constructor that returns any
    /// concrete store type: no `EngineContext` annotation and no
    /// `as Arc<dyn SessionStore>` cast needed.
    ///
    /// See the [module docs](self) for an example.
    ///
    /// The section's contents are checked only when the store is built; use
    /// [`EngineRegistry::register_store_checked`] so that [`EngineRegistry::validate`]
    /// checks them up front.
    pub fn register_store<S, F, Fut>(&self, name: &str, build: F) -> &Self
    where
        S: SessionStore + 'static,
        F: Fn(EngineContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
    {
        self.register(name, StoreBuilder(build))
    }

    /// [`EngineRegistry::register_store`] with a configuration check, as
    /// [`EngineRegistry::register_checked`]: the check runs in
    /// [`EngineRegistry::validate`] and before every build, without building anything.
    pub fn register_store_checked<S, F, Fut>(
        &self,
        name: &str,
        build: F,
        check: impl Fn(&EngineContext) -> Result<()> + Send + Sync + 'static,
    ) -> &Self
    where
        S: SessionStore + 'static,
        F: Fn(EngineContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
    {
        self.register_checked(name, StoreBuilder(build), check)
    }

    /// The registered engine names, sorted.
    pub fn known(&self) -> Vec<String> {
        let map = self
            .engines
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.keys().cloned().collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        let map = self
            .engines
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.contains_key(name)
    }

    /// Builds the store that `config` selects, wearing the layers it lists.
    ///
    /// The layers (`layers = [...]`, then the `hash_keys` layer, [`HashedKeys`](crate::hashed::HashedKeys), when
    /// `hash_keys = true`) are applied here, once, around the outermost engine:
    /// composite engines (`cached_db`) build their parts with
    /// [`EngineRegistry::build_engine`], which never applies them, so keys are hashed
    /// exactly once and the cache and the database hold the same derived keys.
    ///
    /// The whole configuration is checked first ([`EngineRegistry::validate`]), and
    /// the layers are built before the engine, so a typo fails before any connection
    /// is opened or file created.
    pub async fn build(&self, config: &Config) -> Result<Arc<dyn SessionStore>> {
        let settings = Arc::new(config.settings()?);
        self.check(config, settings.clone())?;
        let layers = self.layers_for(config, &settings, true)?;
        let engine = settings.engine.clone();
        let store = self.build_engine(&engine, config.clone(), settings).await?;
        Ok(layers.apply(store))
    }

    /// Checks a whole root configuration without building anything: the shared settings,
    /// that every key at the root is a shared setting, a framework section
    /// ([`crate::config::FRAMEWORK_SECTIONS`]) or a registered engine's section, that the
    /// selected engine is registered, and every present engine section (and the engines
    /// nested in them) with the checks their engines registered. Errors name the key's
    /// full path, where it was set, and the nearest known key.
    pub fn validate(&self, config: &Config) -> Result<()> {
        let settings = config.settings()?;
        self.check(config, Arc::new(settings))
    }

    fn check(&self, config: &Config, settings: Arc<SessionSettings>) -> Result<()> {
        let root = config.path().is_empty();
        let engine = if root {
            settings.engine.clone()
        } else {
            nested_engine(config)?
        };
        let entries: Vec<(String, Arc<dyn EngineFactory>)> = {
            let map = self
                .engines
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        if root {
            self.check_root_keys(config)?;
        } else {
            config.check_keys(&["engine", engine.as_str()])?;
        }
        if root {
            self.layers_for(config, &settings, false)?;
        }
        if !names.contains(&engine.as_str()) {
            let err = Error::UnknownEngine {
                name: engine,
                known: self.known(),
            };
            return Err(if root {
                err
            } else {
                Error::config(format!("{}.engine", config.path()), err.to_string())
            });
        }
        for (name, factory) in &entries {
            if *name == engine || (root && config.contains(name)) {
                factory.validate(&EngineContext {
                    engine: name.clone(),
                    config: config.clone(),
                    settings: settings.clone(),
                    registry: self.clone(),
                })?;
            }
        }
        Ok(())
    }

    /// Builds engine `engine` from `config` with the given shared settings, as is (no
    /// configured layer, no [`HashedKeys`](crate::hashed::HashedKeys) wrapper: those are applied by
    /// [`EngineRegistry::build`]).
    pub async fn build_engine(
        &self,
        engine: &str,
        config: Config,
        settings: Arc<SessionSettings>,
    ) -> Result<Arc<dyn SessionStore>> {
        let factory = {
            let map = self
                .engines
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(engine).cloned()
        };
        let Some(factory) = factory else {
            return Err(Error::UnknownEngine {
                name: engine.to_owned(),
                known: self.known(),
            });
        };
        factory
            .build(EngineContext {
                engine: engine.to_owned(),
                config,
                settings,
                registry: self.clone(),
            })
            .await
    }
}
