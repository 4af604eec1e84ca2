//! The engine registry: engine names to constructors, chosen at runtime by configuration.
//!
//! Each backend crate exposes one `register(&EngineRegistry)` function; applications add
//! their own engines the same way with [`EngineRegistry::register`].
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{Config, EngineRegistry, Error};
//!
//! # async fn demo() {
//! let registry = EngineRegistry::new();
//! let err = registry.build(&Config::from_toml("engine = \"nope\"")).await.unwrap_err();
//! assert!(matches!(err, Error::UnknownEngine { .. }));
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::config::{Config, SessionSettings};
use crate::error::{Error, Result};
use crate::hashed::HashedKeys;
use crate::store::SessionStore;

/// What an engine constructor returns.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn SessionStore>>> + Send>>;

/// An engine constructor.
pub trait EngineFactory: Send + Sync + 'static {
    /// Builds a store from the engine's configuration.
    fn build(&self, ctx: EngineContext) -> StoreFuture;
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

    /// The configured codec.
    pub fn codec(&self) -> Arc<dyn Codec> {
        self.settings.codec()
    }

    /// Builds the complete engine configuration nested under `key`, whose engine
    /// defaults to `default_engine`. Shared settings (codec, sizes, expiry) are inherited.
    pub async fn build_nested(
        &self,
        key: &str,
        default_engine: &str,
    ) -> Result<Arc<dyn SessionStore>> {
        let config = self.config.nested(key, default_engine);
        let engine: String = config
            .figment()
            .extract_inner("engine")
            .map_err(Error::from)?;
        self.registry
            .build_engine(&engine, config, self.settings.clone())
            .await
    }
}

/// Engine names to constructors. Cheap to clone (shared inside).
#[derive(Clone, Default)]
pub struct EngineRegistry {
    engines: Arc<RwLock<BTreeMap<String, Arc<dyn EngineFactory>>>>,
}

impl std::fmt::Debug for EngineRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRegistry")
            .field("engines", &self.known())
            .finish()
    }
}

impl EngineRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the engine `name`.
    pub fn register(&self, name: &str, factory: impl EngineFactory) -> &Self {
        let mut map = self
            .engines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(name.to_owned(), Arc::new(factory));
        self
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

    /// Builds the store that `config` selects.
    ///
    /// With `hash_keys = true` the store is wrapped in [`HashedKeys`] here, once, around
    /// the outermost engine: composite engines (`cached_db`) build their parts with
    /// [`EngineRegistry::build_engine`], which never wraps, so keys are hashed exactly
    /// once and the cache and the database hold the same derived keys.
    pub async fn build(&self, config: &Config) -> Result<Arc<dyn SessionStore>> {
        let settings = config.settings()?;
        let engine = settings.engine.clone();
        let hash_keys = settings.hash_keys;
        let store = self
            .build_engine(&engine, config.clone(), Arc::new(settings))
            .await?;
        Ok(if hash_keys {
            Arc::new(HashedKeys::new(store))
        } else {
            store
        })
    }

    /// Builds engine `engine` from `config` with the given shared settings, as is (no
    /// [`HashedKeys`] wrapper: that is applied by [`EngineRegistry::build`]).
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
