//! The `cache` engine: one configuration, one [`CacheStore`], the driver picked by the
//! scheme of `cache.url`.
//!
//! | `cache.url` | driver |
//! |---|---|
//! | `memory` (the default) | [`MemoryStore`], in-process |
//! | `redis://host:6379/0`, `rediss://...` (with the crate's `tls` feature) | [`RedisStore`], one server |
//! | `redis+cluster://h1:7001,h2:7002` or `cache.urls = ["redis://h1:7001", ...]` | [`RedisStore`] on a Redis Cluster |
//! | `memcache://host:11211` | [`MemcachedStore`] |
//!
//! ```toml
//! engine = "cache"
//! [cache]
//! url = "redis://127.0.0.1:6379"
//! key_prefix = "session:"      # default
//! connect_timeout_ms = 2000    # default
//! command_timeout_ms = 1000    # default: slower answers are Error::Timeout
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use session_core::{
    Capabilities, Codec, EngineRegistry, Error, Inserted, LazyRecord, RawAccess, Record, Result,
    SessionKey, SessionStore, Timestamp, async_trait,
};
#[cfg(any(feature = "redis", feature = "memcached"))]
use session_core::{StoreLayerExt, TimeoutLayer};

#[cfg(feature = "memcached")]
use crate::memcached::MemcachedStore;
use crate::memory::{MemoryConfig, MemoryStore};
#[cfg(feature = "redis")]
use crate::redis::RedisStore;

/// Longest key prefix accepted (Memcached keys end at 250 bytes; a key is 32 more).
pub const MAX_KEY_PREFIX_LEN: usize = 200;

/// Options of the `cache` engine (config section `cache`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Where the cache is: `memory`, `redis://`, `rediss://`, `redis+cluster://` or
    /// `memcache://` (see the module docs). Unset: `memory`, or the cluster in `urls`.
    pub url: Option<String>,
    /// The node URLs of a Redis Cluster (`redis://host:port` each), instead of `url`.
    /// A comma-separated string works too (`SESSION_CACHE__URLS=redis://a:7001,redis://b:7002`).
    #[serde(deserialize_with = "session_core::config::string_list")]
    pub urls: Vec<String>,
    /// Prepended to every session key in the cache; lets several applications share
    /// one server. Printable ASCII without spaces (Memcached's key rule) and without
    /// `{`/`}` (Redis Cluster hash tags).
    pub key_prefix: String,
    /// How long to wait for a connection to the server, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one operation may take before it fails with `Error::Timeout`: the
    /// `cache` engine wears a [`session_core::TimeoutLayer`] of it, and
    /// the Redis client bounds each command by it.
    pub command_timeout_ms: u64,
    /// Most connections to a Memcached server held at once (Redis multiplexes one).
    pub pool_size: usize,
    /// Most sessions the `memory` driver holds at once.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            url: None,
            urls: Vec::new(),
            key_prefix: "session:".into(),
            connect_timeout_ms: 2000,
            command_timeout_ms: 1000,
            pool_size: 64,
            max_entries: MemoryConfig::default().max_entries,
        }
    }
}

/// Which driver a [`CacheConfig`] selects, with its normalised addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheTarget {
    /// The in-process store.
    Memory,
    /// One Redis server (`redis://` or `rediss://` URL).
    Redis(String),
    /// A Redis Cluster: the node URLs to discover it from.
    RedisCluster(Vec<String>),
    /// One Memcached server, as `host:port`.
    Memcached(String),
}

impl CacheConfig {
    /// A configuration for `url` with every other option at its default.
    pub fn new(url: impl Into<String>) -> Self {
        CacheConfig {
            url: Some(url.into()),
            ..CacheConfig::default()
        }
    }

    /// This configuration with another key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The command timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// Parses the URL(s) into the driver to use, and checks the other options against it.
    pub fn target(&self) -> Result<CacheTarget> {
        let target = match (self.url.as_deref().map(str::trim), self.urls.is_empty()) {
            (Some(_), false) => {
                return Err(Error::config(
                    "cache.urls",
                    "set either cache.url or cache.urls (the nodes of a Redis Cluster), not both",
                ));
            }
            (None, false) => CacheTarget::RedisCluster(cluster_nodes(&self.urls)?),
            (None, true) => CacheTarget::Memory,
            (Some(url), true) => parse_url(url)?,
        };
        self.check(&target)?;
        Ok(target)
    }

    fn check(&self, target: &CacheTarget) -> Result<()> {
        if let Some((feature, what)) = missing_feature(target) {
            return Err(Error::config(
                if self.urls.is_empty() {
                    "cache.url"
                } else {
                    "cache.urls"
                },
                format!(
                    "{what} support is not compiled in: enable the `{feature}` feature of \
                     backend-cache"
                ),
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err(Error::config(
                "cache.connect_timeout_ms",
                "must be at least 1 millisecond",
            ));
        }
        if self.command_timeout_ms == 0 {
            return Err(Error::config(
                "cache.command_timeout_ms",
                "must be at least 1 millisecond",
            ));
        }
        if self.pool_size == 0 {
            return Err(Error::config("cache.pool_size", "must be at least 1"));
        }
        if self.max_entries == 0 {
            return Err(Error::config("cache.max_entries", "must be at least 1"));
        }
        let p = &self.key_prefix;
        if p.len() > MAX_KEY_PREFIX_LEN {
            return Err(Error::config(
                "cache.key_prefix",
                format!(
                    "is {} bytes; at most {MAX_KEY_PREFIX_LEN} are allowed",
                    p.len()
                ),
            ));
        }
        if !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::config(
                "cache.key_prefix",
                "must be printable ASCII without spaces (Memcached's key rule), e.g. \"session:\"",
            ));
        }
        if matches!(target, CacheTarget::RedisCluster(_)) && p.contains(['{', '}']) {
            return Err(Error::config(
                "cache.key_prefix",
                "must not contain `{` or `}` on a Redis Cluster: the session key is the hash tag",
            ));
        }
        Ok(())
    }
}

const SCHEMES: &str =
    "memory, redis://, rediss://, redis+cluster://, rediss+cluster://, memcache://";

fn parse_url(url: &str) -> Result<CacheTarget> {
    if url.is_empty() || url == "memory" || url == "memory://" {
        return Ok(CacheTarget::Memory);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::config(
            "cache.url",
            format!("has no scheme; use one of: {SCHEMES}"),
        ));
    };
    match scheme {
        "redis" | "rediss" => Ok(CacheTarget::Redis(url.to_owned())),
        "redis+cluster" | "rediss+cluster" => {
            let node_scheme = scheme.trim_end_matches("+cluster");
            // Credentials written once before the host list apply to every node.
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}://{userinfo}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::config(
                    "cache.url",
                    "names no cluster nodes; write redis+cluster://host1:port1,host2:port2",
                ));
            }
            Ok(CacheTarget::RedisCluster(nodes))
        }
        "memcache" | "memcached" => {
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains(['/', ',', '@', '?']) {
                return Err(Error::config(
                    "cache.url",
                    "a Memcached URL is memcache://host:port (one server)",
                ));
            }
            let has_port = hostport
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok() && !hostport.ends_with(']'));
            Ok(CacheTarget::Memcached(if has_port {
                hostport.to_owned()
            } else {
                format!("{hostport}:11211")
            }))
        }
        other => Err(Error::config(
            "cache.url",
            format!("unknown scheme {other:?}; use one of: {SCHEMES}"),
        )),
    }
}

fn cluster_nodes(urls: &[String]) -> Result<Vec<String>> {
    urls.iter()
        .map(|u| {
            let u = u.trim();
            if u.starts_with("redis://") || u.starts_with("rediss://") {
                Ok(u.to_owned())
            } else {
                Err(Error::config(
                    "cache.urls",
                    format!(
                        "{:?} is not a Redis node URL; write redis://host:port",
                        redact(u)
                    ),
                ))
            }
        })
        .collect()
}

/// A URL without its password, for error messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The cargo feature of this crate that `target` needs and this build lacks, with what
/// it is for (`None`: the driver is compiled in).
fn missing_feature(target: &CacheTarget) -> Option<(&'static str, &'static str)> {
    let tls = |url: &str| url.starts_with("rediss://") && !cfg!(feature = "tls");
    match target {
        CacheTarget::Memory => None,
        CacheTarget::Redis(_) if !cfg!(feature = "redis") => Some(("redis", "Redis")),
        CacheTarget::Redis(url) if tls(url) => Some(("tls", "rediss:// (Redis over TLS)")),
        CacheTarget::RedisCluster(_) if !cfg!(feature = "cluster") => {
            Some(("cluster", "Redis Cluster"))
        }
        CacheTarget::RedisCluster(urls) if urls.iter().any(|u| tls(u)) => {
            Some(("tls", "rediss:// (Redis over TLS)"))
        }
        CacheTarget::Memcached(_) if !cfg!(feature = "memcached") => {
            Some(("memcached", "Memcached"))
        }
        _ => None,
    }
}

/// A session store on a cache: whichever driver the configuration selected.
///
/// Each variant is usable on its own too; this enum is what the `cache` engine builds.
/// The Redis and Memcached variants exist when their cargo features (`redis`,
/// `memcached`) are enabled.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheStore {
    /// In-process.
    Memory(MemoryStore),
    /// Redis, standalone or Cluster.
    #[cfg(feature = "redis")]
    Redis(RedisStore),
    /// Memcached.
    #[cfg(feature = "memcached")]
    Memcached(MemcachedStore),
}

/// Who bounds a networked driver's commands in time (Redis's; Memcached's client has no
/// timeout of its own, so the layer always does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    /// The client, every command: a store that may be used without the layer.
    Client,
    /// The engine's timeout layer, every session operation; the store, every step of a
    /// sweep, which the layer leaves unbounded.
    Layer,
}

impl CacheStore {
    /// Builds the driver `config` selects, connecting to its server.
    ///
    /// The store is bare: the `cache` engine adds the per-operation deadline
    /// (`command_timeout_ms`) as a layer; a store built here directly wears it with
    /// `store.with_layer(TimeoutLayer::new(config.command_timeout()))`. A Redis driver
    /// built here also bounds each command in its client (the engine's does not: its
    /// layer is the one timer), so it stays bounded without the layer.
    pub async fn connect(config: &CacheConfig, codec: Arc<dyn Codec>) -> Result<Self> {
        Self::connect_bounded(config, codec, Bound::Client).await
    }

    /// [`CacheStore::connect`], a Redis driver's commands bounded by `bound`.
    async fn connect_bounded(
        config: &CacheConfig,
        codec: Arc<dyn Codec>,
        bound: Bound,
    ) -> Result<Self> {
        Ok(match config.target()? {
            CacheTarget::Memory => CacheStore::Memory(MemoryStore::with_config(MemoryConfig {
                max_entries: config.max_entries,
            })),
            #[cfg(feature = "redis")]
            CacheTarget::Redis(_) | CacheTarget::RedisCluster(_) => {
                CacheStore::Redis(RedisStore::connect_bounded(config, codec, bound).await?)
            }
            #[cfg(feature = "memcached")]
            CacheTarget::Memcached(_) => {
                CacheStore::Memcached(MemcachedStore::connect(config, codec).await?)
            }
            // `target()` refused drivers that are not compiled in.
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (codec, bound);
                return Err(Error::config(
                    "cache.url",
                    "this cache driver is not compiled in",
                ));
            }
        })
    }

    /// Removes every record under the configured key prefix and returns how many it
    /// removed (memory: everything). For tests and operators retiring a namespace.
    pub async fn purge(&self) -> Result<u64> {
        match self {
            CacheStore::Memory(s) => {
                let n = s.count().await?;
                for k in s.list(None, usize::MAX).await? {
                    s.delete(&k).await?;
                }
                Ok(n)
            }
            #[cfg(feature = "redis")]
            CacheStore::Redis(s) => s.purge_prefix().await,
            #[cfg(feature = "memcached")]
            CacheStore::Memcached(s) => s.purge_prefix().await,
        }
    }

    fn inner(&self) -> &dyn SessionStore {
        match self {
            CacheStore::Memory(s) => s,
            #[cfg(feature = "redis")]
            CacheStore::Redis(s) => s,
            #[cfg(feature = "memcached")]
            CacheStore::Memcached(s) => s,
        }
    }
}

#[async_trait]
impl SessionStore for CacheStore {
    fn engine(&self) -> &str {
        self.inner().engine()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.inner().insert_new(key, record).await
    }
    async fn create(&self, record: &Record) -> Result<SessionKey> {
        self.inner().create(record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner().load(key).await
    }
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.inner().load_lazy(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.inner().update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner().delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.inner().touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.inner().exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.inner().clear_expired().await
    }
    async fn count(&self) -> Result<u64> {
        self.inner().count().await
    }
    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.inner().list(after, limit).await
    }
    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner().raw()
    }
    fn maintenance(&self) -> Option<&dyn session_core::Maintenance> {
        self.inner().maintenance()
    }
    /// The driver's index of sessions by principal: memory and Redis (standalone and
    /// Cluster) keep one; Memcached cannot list its keys and has none.
    fn user_index(&self) -> Option<&dyn session_core::UserIndex> {
        self.inner().user_index()
    }
    /// The in-process driver's immediate calls (this enum only picks the driver: it has
    /// no work of its own to skip); the networked drivers have none.
    fn immediate(&self) -> Option<&dyn session_core::ImmediateStore> {
        self.inner().immediate()
    }
}

impl CacheConfig {
    /// Checks the options (the URL names a compiled-in driver) without connecting.
    pub fn validate(&self) -> Result<()> {
        self.target().map(drop)
    }

    /// Builds the store from this configuration and the shared settings (codec,
    /// `max_encoded_size`): connects, and bounds every session operation of a networked
    /// driver by `command_timeout_ms`. The constructor the `cache` engine uses;
    /// [`CacheStore::connect`] is the lower-level one (no timeout layer).
    pub async fn build(
        &self,
        settings: &session_core::SessionSettings,
    ) -> Result<Arc<dyn SessionStore>> {
        // The driver itself, not this enum: every call of the enum's forwards to its
        // driver through one more boxed future, which the engine's calls need not pay.
        // Redis, Redis Cluster and Memcached wear the same one layer.
        // One timer per operation: the layer's (a Redis client's own response timeout
        // is off under it; see the `redis` module).
        let connected = CacheStore::connect_bounded(self, settings.codec(), Bound::Layer).await?;
        Ok(match connected {
            // The in-process driver keeps decoded records: it applies the size limit
            // itself, as the byte-storing drivers' codecs do.
            CacheStore::Memory(m) => {
                Arc::new(m.with_size_limit(settings.codec(), settings.max_encoded_size))
            }
            #[cfg(feature = "redis")]
            CacheStore::Redis(r) => r.with_layer(TimeoutLayer::new(self.command_timeout())),
            #[cfg(feature = "memcached")]
            CacheStore::Memcached(m) => m.with_layer(TimeoutLayer::new(self.command_timeout())),
        })
    }
}

/// Registers the `cache` engine (options in the `cache` section), built with
/// [`CacheConfig::build`].
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        "cache",
        |ctx: session_core::EngineContext| async move {
            let cfg: CacheConfig = ctx.section("cache")?;
            cfg.build(&ctx.settings).await.map_err(|e| ctx.locate(e))
        },
        |ctx: &session_core::EngineContext| {
            let cfg: CacheConfig = ctx.section("cache")?;
            cfg.validate().map_err(|e| ctx.locate(e))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process driver is called the immediate way, as the `memory` engine is
    /// (the engine is the driver itself).
    #[tokio::test]
    async fn the_in_process_driver_answers_immediately() {
        let settings = session_core::SessionSettings::default();
        let store = CacheConfig::default()
            .build(&settings)
            .await
            .expect("build");
        let now = store.immediate().expect("immediate calls");
        let record = Record::with_ttl(session_core::SessionData::new(), 60);
        let key = now.create_now(&record).expect("create");
        assert!(store.load(&key).await.expect("load").is_some());
        assert!(now.delete_now(&key).expect("delete"));
        assert!(!store.exists(&key).await.expect("exists"));
    }

    #[cfg(all(feature = "redis", feature = "cluster", feature = "memcached"))]
    fn target(url: &str) -> Result<CacheTarget> {
        CacheConfig::new(url).target()
    }

    // Parses URLs of every driver: the default features.
    #[cfg(all(feature = "redis", feature = "cluster", feature = "memcached"))]
    #[test]
    fn schemes_pick_drivers() {
        assert_eq!(
            CacheConfig::default().target().ok(),
            Some(CacheTarget::Memory)
        );
        assert_eq!(target("memory").ok(), Some(CacheTarget::Memory));
        assert_eq!(
            target("redis://127.0.0.1:6379/2").ok(),
            Some(CacheTarget::Redis("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            target("redis+cluster://:pw@a:7001,b:7002").ok(),
            Some(CacheTarget::RedisCluster(vec![
                "redis://:pw@a:7001".into(),
                "redis://:pw@b:7002".into()
            ]))
        );
        assert_eq!(
            target("memcache://127.0.0.1").ok(),
            Some(CacheTarget::Memcached("127.0.0.1:11211".into()))
        );
        assert_eq!(
            target("memcache://127.0.0.1:11311/").ok(),
            Some(CacheTarget::Memcached("127.0.0.1:11311".into()))
        );
        let cluster = CacheConfig {
            urls: vec!["redis://a:1".into(), "redis://b:2".into()],
            ..CacheConfig::default()
        };
        assert!(matches!(cluster.target(), Ok(CacheTarget::RedisCluster(n)) if n.len() == 2));
    }

    // Parses URLs of every driver: the default features.
    #[cfg(all(feature = "redis", feature = "cluster", feature = "memcached"))]
    #[test]
    fn bad_configs_name_their_key() {
        let key_of = |r: Result<CacheTarget>| match r {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(key_of(target("mongodb://x")).as_deref(), Some("cache.url"));
        assert_eq!(
            key_of(target("127.0.0.1:6379")).as_deref(),
            Some("cache.url")
        );
        assert_eq!(
            key_of(target("memcache://a:1,b:2")).as_deref(),
            Some("cache.url")
        );
        assert_eq!(
            key_of(
                CacheConfig::new("redis://x")
                    .with_key_prefix("has space")
                    .target()
            )
            .as_deref(),
            Some("cache.key_prefix")
        );
        assert_eq!(
            key_of(
                CacheConfig::new("redis+cluster://a:1")
                    .with_key_prefix("{tag}")
                    .target()
            )
            .as_deref(),
            Some("cache.key_prefix")
        );
        let both = CacheConfig {
            urls: vec!["redis://a:1".into()],
            ..CacheConfig::new("redis://b:2")
        };
        assert_eq!(key_of(both.target()).as_deref(), Some("cache.urls"));
        let zero = CacheConfig {
            command_timeout_ms: 0,
            ..CacheConfig::new("redis://b:2")
        };
        assert_eq!(
            key_of(zero.target()).as_deref(),
            Some("cache.command_timeout_ms")
        );
    }

    #[cfg(all(feature = "redis", not(feature = "tls")))]
    #[tokio::test]
    async fn rediss_without_the_tls_feature_says_how_to_get_it() {
        let err = CacheStore::connect(
            &CacheConfig::new("rediss://127.0.0.1:6380"),
            session_core::CodecKind::Bincode.build(1024),
        )
        .await
        .expect_err("no TLS support compiled in");
        assert!(
            matches!(&err, Error::Config { key: Some(k), message } if k == "cache.url" && message.contains("`tls` feature")),
            "{err}"
        );
    }

    /// Each driver's URL validates exactly when its feature is compiled in; otherwise
    /// the registry's validation (before any connection) gives a typed error at
    /// `cache.url` naming the feature. The default build has all but `tls`; a build with
    /// `--no-default-features` exercises every refusal.
    #[test]
    fn urls_of_drivers_not_compiled_in_are_config_errors() {
        let registry = EngineRegistry::new();
        crate::register(&registry);
        for (url, feature, compiled) in [
            ("memory", "", true),
            ("redis://127.0.0.1:6379", "redis", cfg!(feature = "redis")),
            (
                "redis+cluster://127.0.0.1:7001",
                "cluster",
                cfg!(feature = "cluster"),
            ),
            (
                "memcache://127.0.0.1:11211",
                "memcached",
                cfg!(feature = "memcached"),
            ),
            (
                "rediss://127.0.0.1:6380",
                if cfg!(feature = "redis") {
                    "tls"
                } else {
                    "redis"
                },
                cfg!(feature = "tls"),
            ),
        ] {
            let config = session_core::Config::from_toml(&format!(
                "engine = \"cache\"\n[cache]\nurl = \"{url}\""
            ));
            let outcome = registry.validate(&config);
            if compiled {
                assert!(outcome.is_ok(), "{url}: {outcome:?}");
                continue;
            }
            let err = outcome.expect_err(url);
            let wanted = format!("enable the `{feature}` feature of backend-cache");
            assert!(
                matches!(&err, Error::Config { key: Some(k), message }
                    if k == "cache.url" && message.contains(&wanted)),
                "{url}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn the_cache_engine_builds_from_config() {
        let registry = EngineRegistry::new();
        crate::register(&registry);
        let store = registry
            .build(&session_core::Config::from_toml(
                "engine = \"cache\"\n[cache]\nurl = \"memory\"\nmax_entries = 5",
            ))
            .await
            .expect("build");
        assert_eq!(store.engine(), "memory");
        let err = registry
            .build(&session_core::Config::from_toml(
                "engine = \"cache\"\n[cache]\nbogus = 1",
            ))
            .await
            .expect_err("unknown option");
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
