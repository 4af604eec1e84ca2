//! [`SessionRules`]: everything the request rules need, built from a store, from
//! `Sessions.toml`, or with [`SessionRulesBuilder`]; validated once, at build time, so
//! a bad value fails at startup and never per request. Framework adapters keep one
//! `Arc<SessionRules>` and wrap their own builder around [`SessionRulesBuilder`].

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use session_core::{
    Config, EngineRegistry, Error, Result, SessionContext, SessionSettings, SessionStore, Timestamp,
};

use crate::config::{CookieConfig, CookieSpec, MiddlewareConfig, SameSite};
use crate::cookie_engine::ENGINE as COOKIE_ENGINE;
use crate::set_cookie::CookieWriter;
use crate::signing::{Purpose, Signer};
use session_core::hooks::RequestHook;
use session_core::users::AuthCheck;

/// Where the sessions live: a builder names the store, built rules hold the context every
/// request's handle shares (the store, the settings, the auth check).
#[derive(Debug)]
pub(crate) enum Backend<S = Arc<dyn SessionStore>> {
    /// A server-side store; the cookie carries the key.
    Store(S),
    /// The `cookie` engine: the cookie carries the whole session.
    Cookie,
}

/// The checked session and cookie settings every request of a middleware shares; see
/// [`crate::flow`] for what it does with a request.
#[derive(Debug)]
pub struct SessionRules {
    pub(crate) backend: Backend<Arc<SessionContext>>,
    pub(crate) settings: Arc<SessionSettings>,
    pub(crate) cookie: CookieSpec,
    pub(crate) signer: Option<Signer>,
    pub(crate) save_every_request: bool,
    /// Touch policy interval; `None`: never touch.
    pub(crate) touch_interval: Option<Duration>,
    /// Builds the `Set-Cookie` headers.
    pub(crate) writer: CookieWriter,
    /// Told what the session did in each request.
    pub(crate) hooks: Hooks,
    /// Vouches for signed-in sessions' auth hashes ([`SessionRulesBuilder::auth_check`]).
    pub(crate) auth_check: Check,
    /// Record the client of signed-in sessions.
    pub(crate) track_clients: bool,
}

impl Backend {
    /// The built rules' backend: a store's context, shared by every request's handle.
    fn with_context(
        self,
        settings: &Arc<SessionSettings>,
        auth_check: &Check,
    ) -> Backend<Arc<SessionContext>> {
        match self {
            Backend::Store(store) => Backend::Store(Arc::new(SessionContext::new(
                store,
                settings.clone(),
                auth_check.0.clone(),
            ))),
            Backend::Cookie => Backend::Cookie,
        }
    }
}

/// The application's auth check of a set of rules ([`SessionRulesBuilder::auth_check`]).
#[derive(Clone, Default)]
pub(crate) struct Check(pub(crate) Option<Arc<dyn AuthCheck>>);

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthCheck({})",
            if self.0.is_some() { "set" } else { "none" }
        )
    }
}

/// The request hooks of a set of rules ([`SessionRulesBuilder::hook`]).
#[derive(Clone, Default)]
pub(crate) struct Hooks(pub(crate) Vec<Arc<dyn RequestHook>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooks({})", self.0.len())
    }
}

impl SessionRules {
    /// Sessions in `store`, with default settings: cookie `sessionid`, Secure, HttpOnly,
    /// `SameSite=Lax`, two-week sliding expiry.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        let (cookie, writer) = CookieWriter::defaults();
        let settings = Arc::new(SessionSettings::default());
        SessionRules {
            backend: Backend::Store(store).with_context(&settings, &Check(None)),
            settings,
            cookie,
            signer: None,
            save_every_request: false,
            touch_interval: None,
            writer,
            hooks: Hooks::default(),
            auth_check: Check(None),
            track_clients: false,
        }
    }

    /// A builder for sessions in `store`.
    pub fn builder(store: Arc<dyn SessionStore>) -> SessionRulesBuilder {
        SessionRulesBuilder::new(Backend::Store(store))
    }

    /// A builder for the `cookie` engine: the whole session in a signed cookie, no
    /// server-side store. It needs [`SessionRulesBuilder::signing_keys`]; see
    /// [`crate::cookie_engine`] for its limits.
    pub fn cookie_engine() -> SessionRulesBuilder {
        SessionRulesBuilder::new(Backend::Cookie)
    }

    /// The builder `config` describes: the engine (built through `registry`, or the
    /// `cookie` engine), the shared settings, `[cookie]` and `[middleware]`.
    pub async fn builder_from_config(
        config: &Config,
        registry: &EngineRegistry,
    ) -> Result<SessionRulesBuilder> {
        let settings = config.settings()?;
        let cookie: CookieConfig = config.section("cookie")?;
        let middleware: MiddlewareConfig = config.section("middleware")?;
        let backend = if settings.engine == COOKIE_ENGINE {
            // The whole configuration is checked as the registry checks a store's
            // (unknown keys are errors), with the cookie engine known to it.
            if !registry.contains(COOKIE_ENGINE) {
                crate::register(registry);
            }
            registry.validate(config)?;
            Backend::Cookie
        } else {
            Backend::Store(registry.build(config).await?)
        };
        Ok(SessionRulesBuilder {
            backend,
            settings,
            cookie,
            middleware,
            hooks: Hooks::default(),
            auth_check: Check(None),
        })
    }

    /// The store behind the sessions (`None` for the cookie engine).
    pub fn store(&self) -> Option<&Arc<dyn SessionStore>> {
        match &self.backend {
            Backend::Store(ctx) => Some(ctx.store()),
            Backend::Cookie => None,
        }
    }

    /// The shared session settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The name the session cookie is sent under (with any `__Host-` prefix).
    pub fn cookie_name(&self) -> &str {
        &self.cookie.name
    }

    /// The session key a request's cookie value names, if it is well formed (and, when
    /// signing is on, authentic). Anything else means "no session", with no store I/O.
    pub(crate) fn parse_key(&self, value: &str) -> Option<session_core::SessionKey> {
        let key = match &self.signer {
            Some(s) => s.open(Purpose::SessionKey, &self.cookie.name, value)?,
            None => value,
        };
        session_core::SessionKey::parse(key).ok()
    }

    /// The cookie value for `key`.
    pub(crate) fn key_cookie_value<'k>(
        &self,
        key: &'k session_core::SessionKey,
    ) -> std::borrow::Cow<'k, str> {
        match &self.signer {
            Some(s) => s
                .seal(Purpose::SessionKey, &self.cookie.name, key.as_str())
                .into(),
            None => key.as_str().into(),
        }
    }

    /// The `Set-Cookie` header carrying `value`, living `max_age` seconds (a
    /// browser-session cookie when `None`).
    pub(crate) fn session_cookie(
        &self,
        value: &str,
        max_age: Option<i64>,
        now: Timestamp,
    ) -> Option<HeaderValue> {
        self.writer
            .session(value, max_age, now.as_unix_millis().div_euclid(1000))
    }

    /// Django's deleting `Set-Cookie`.
    pub fn deletion(&self) -> HeaderValue {
        self.writer.deletion()
    }
}

/// Builds [`SessionRules`]; [`SessionRulesBuilder::build`] validates everything.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use backend_cache::MemoryStore;
/// use session_http::{SameSite, SessionRules};
///
/// let rules = SessionRules::builder(Arc::new(MemoryStore::new()))
///     .cookie_name("id")
///     .same_site(SameSite::Strict)
///     .host_prefix(true)
///     .signing_keys(["a new key of at least 32 bytes......", "the old one, still accepted........."])
///     .touch_interval(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(rules.cookie_name(), "__Host-id");
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call .build() to get the rules"]
pub struct SessionRulesBuilder {
    backend: Backend,
    settings: SessionSettings,
    cookie: CookieConfig,
    middleware: MiddlewareConfig,
    hooks: Hooks,
    auth_check: Check,
}

impl SessionRulesBuilder {
    fn new(backend: Backend) -> Self {
        SessionRulesBuilder {
            backend,
            settings: SessionSettings::default(),
            cookie: CookieConfig::default(),
            middleware: MiddlewareConfig::default(),
            hooks: Hooks::default(),
            auth_check: Check(None),
        }
    }

    /// Adds a request hook: after each request's response is decided, it is told what
    /// the session did ([`session_core::hooks::RequestOutcome`]: loaded, saved,
    /// cycled, flushed, refused for the logout race, ...). Hooks run in the order
    /// added, on the request's task: they must be quick and never block.
    /// `session_core::metrics::MetricsHook` counts requests;
    /// `session_core::events::Events` publishes key cycles and flushes. Every framework
    /// adapter calls them, since they run in [`SessionRules::finish`].
    pub fn hook(mut self, hook: impl RequestHook) -> Self {
        self.hooks.0.push(Arc::new(hook));
        self
    }

    /// The application's [`AuthCheck`]: every signed-in session loaded is checked
    /// against the principal's current auth hash, and flushed (signed out, cookie
    /// deleted) when it no longer matches, as Django does after a password change.
    pub fn auth_check(mut self, check: Arc<dyn AuthCheck>) -> Self {
        self.auth_check = Check(Some(check));
        self
    }

    /// Record the `User-Agent` and peer address of signed-in sessions
    /// (`[middleware] track_clients`).
    pub fn track_clients(mut self, on: bool) -> Self {
        self.middleware.track_clients = on;
        self
    }

    /// Shared session settings (expiry, limits, save attempts).
    pub fn settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// All cookie settings at once (replaces earlier cookie calls).
    pub fn cookie_config(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// All middleware settings at once (replaces earlier middleware calls).
    pub fn middleware_config(mut self, middleware: MiddlewareConfig) -> Self {
        self.middleware = middleware;
        self
    }

    /// Cookie name (default `sessionid`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// Cookie `Domain`.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// Cookie `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// Cookie `Secure` (default on).
    pub fn secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// Cookie `HttpOnly` (default on).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// Cookie `SameSite` (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// Send the cookie as `__Host-<name>` (requires Secure, `Path=/`, no Domain).
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.cookie.host_prefix = on;
        self
    }

    /// Sign cookie values: the first key signs, every key verifies (rotation).
    pub fn signing_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.cookie.signing_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Save and re-send the cookie on every response (Django's
    /// `SESSION_SAVE_EVERY_REQUEST`).
    pub fn save_every_request(mut self, on: bool) -> Self {
        self.middleware.save_every_request = on;
        self
    }

    /// Extend sliding sessions on reads with `store.touch`, at most once per `interval`.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.middleware.touch_interval_secs = Some(interval.as_secs());
        self
    }

    /// Validates the settings and builds the rules.
    pub fn build(self) -> Result<SessionRules> {
        self.settings.validate()?;
        let cookie = self.cookie.spec()?;
        let signer = Signer::new(&self.cookie.signing_keys);
        if matches!(self.backend, Backend::Cookie) && signer.is_none() {
            return Err(Error::config(
                "cookie.signing_keys",
                "the cookie engine keeps the whole session in the cookie and must sign it: \
                 set at least one signing key",
            ));
        }
        let touch_interval = match (&self.backend, self.middleware.touch_interval_secs) {
            // A cookie session is rewritten whole or not at all: nothing to touch.
            (Backend::Cookie, _) | (_, None) => None,
            (Backend::Store(_), Some(s)) => Some(Duration::from_secs(s)),
        };
        let writer = CookieWriter::new(&cookie)?;
        let settings = Arc::new(self.settings);
        Ok(SessionRules {
            backend: self.backend.with_context(&settings, &self.auth_check),
            settings,
            cookie,
            signer,
            save_every_request: self.middleware.save_every_request,
            touch_interval,
            writer,
            hooks: self.hooks,
            auth_check: self.auth_check,
            track_clients: self.middleware.track_clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_engine_needs_a_key() {
        let err = SessionRules::cookie_engine().build().expect_err("no key");
        assert!(err.to_string().contains("cookie.signing_keys"), "{err}");
    }

    #[test]
    fn the_default_rules_are_djangos_but_secure() {
        let rules = SessionRules::new(Arc::new(crate::cookie_engine::CookieSlot::default()));
        assert_eq!(
            rules.deletion(),
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"
        );
        let h = rules
            .session_cookie("k", None, Timestamp::now())
            .expect("header");
        assert_eq!(h, "sessionid=k; HttpOnly; Path=/; SameSite=Lax; Secure");
        let built = SessionRules::builder(Arc::new(crate::cookie_engine::CookieSlot::default()))
            .build()
            .expect("defaults are valid");
        assert_eq!(built.deletion(), rules.deletion());
        assert_eq!(format!("{:?}", built.cookie), format!("{:?}", rules.cookie));
    }
}
