//! [`SessionLayer`]: what the middleware is configured with, built from a store, from
//! `Sessions.toml`, or with the builder; everything is validated once, at build time.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use session_core::{Config, EngineRegistry, Error, Result, SessionSettings, SessionStore};
use session_http::{SessionRules, SessionRulesBuilder};
use tower_layer::Layer;

use crate::config::{CookieConfig, MiddlewareConfig, SameSite};
use crate::error::ErrorResponder;
use crate::service::SessionService;

/// Everything a request needs, shared by all clones of the layer and its services: the
/// framework-free rules (session-http) and how this layer answers a failed save.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) rules: SessionRules,
    /// Builds the response for a failed save.
    pub(crate) error_response: ErrorResponder,
}

impl Deref for Shared {
    type Target = SessionRules;

    fn deref(&self) -> &SessionRules {
        &self.rules
    }
}

/// The session middleware for tower and axum: put it on a router with `.layer(..)` and
/// take a [`crate::Session`] in handlers.
///
/// Cheap to clone. Build it with [`SessionLayer::new`] (a store, default settings),
/// [`SessionLayer::builder`] (a store, custom settings), [`SessionLayer::cookie_engine`]
/// (sessions in signed cookies) or [`SessionLayer::from_config`] (`Sessions.toml`).
#[derive(Clone, Debug)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl SessionLayer {
    /// Sessions in `store`, with default settings: cookie `sessionid`, Secure, HttpOnly,
    /// `SameSite=Lax`, two-week sliding expiry.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        SessionLayer {
            shared: Arc::new(Shared {
                rules: SessionRules::new(store),
                error_response: ErrorResponder::default(),
            }),
        }
    }

    /// A builder for sessions in `store`.
    pub fn builder(store: Arc<dyn SessionStore>) -> SessionLayerBuilder {
        SessionLayerBuilder::new(SessionRules::builder(store))
    }

    /// A builder for the `cookie` engine: the whole session in a signed cookie, no
    /// server-side store. It needs [`SessionLayerBuilder::signing_keys`]; see
    /// [`crate::cookie_engine`] for its limits (readable by the client, no revocation,
    /// 4 KB).
    pub fn cookie_engine() -> SessionLayerBuilder {
        SessionLayerBuilder::new(SessionRules::cookie_engine())
    }

    /// The layer `config` describes: the engine (built through `registry`, or the
    /// `cookie` engine), the shared settings, `[cookie]` and `[middleware]`.
    pub async fn from_config(config: &Config, registry: &EngineRegistry) -> Result<Self> {
        Self::builder_from_config(config, registry).await?.build()
    }

    /// Like [`SessionLayer::from_config`], but returns the builder so code can adjust
    /// settings before [`SessionLayerBuilder::build`].
    pub async fn builder_from_config(
        config: &Config,
        registry: &EngineRegistry,
    ) -> Result<SessionLayerBuilder> {
        Ok(SessionLayerBuilder::new(
            SessionRules::builder_from_config(config, registry).await?,
        ))
    }

    /// The store behind the sessions (`None` for the cookie engine).
    pub fn store(&self) -> Option<&Arc<dyn SessionStore>> {
        self.shared.rules.store()
    }

    /// The shared session settings.
    pub fn settings(&self) -> &SessionSettings {
        self.shared.rules.settings()
    }

    /// The name the session cookie is sent under (with any `__Host-` prefix).
    pub fn cookie_name(&self) -> &str {
        self.shared.rules.cookie_name()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.shared.clone())
    }
}

/// Builds a [`SessionLayer`]; [`SessionLayerBuilder::build`] validates everything.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use backend_cache::MemoryStore;
/// use session_axum::{SameSite, SessionLayer};
///
/// let layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
///     .cookie_name("id")
///     .same_site(SameSite::Strict)
///     .host_prefix(true)
///     .signing_keys(["a new key of at least 32 bytes......", "the old one, still accepted........."])
///     .touch_interval(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(layer.cookie_name(), "__Host-id");
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call .build() to get the layer"]
pub struct SessionLayerBuilder {
    rules: SessionRulesBuilder,
    error_response: ErrorResponder,
}

impl SessionLayerBuilder {
    fn new(rules: SessionRulesBuilder) -> Self {
        SessionLayerBuilder {
            rules,
            error_response: ErrorResponder::default(),
        }
    }

    /// Shared session settings (expiry, limits, save attempts).
    pub fn settings(self, settings: SessionSettings) -> Self {
        SessionLayerBuilder {
            rules: self.rules.settings(settings),
            ..self
        }
    }

    /// All cookie settings at once (replaces earlier cookie calls).
    pub fn cookie_config(self, cookie: CookieConfig) -> Self {
        SessionLayerBuilder {
            rules: self.rules.cookie_config(cookie),
            ..self
        }
    }

    /// All middleware settings at once (replaces earlier middleware calls).
    pub fn middleware_config(self, middleware: MiddlewareConfig) -> Self {
        SessionLayerBuilder {
            rules: self.rules.middleware_config(middleware),
            ..self
        }
    }

    /// Cookie name (default `sessionid`).
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        SessionLayerBuilder {
            rules: self.rules.cookie_name(name),
            ..self
        }
    }

    /// Cookie `Domain`.
    pub fn domain(self, domain: impl Into<String>) -> Self {
        SessionLayerBuilder {
            rules: self.rules.domain(domain),
            ..self
        }
    }

    /// Cookie `Path` (default `/`).
    pub fn path(self, path: impl Into<String>) -> Self {
        SessionLayerBuilder {
            rules: self.rules.path(path),
            ..self
        }
    }

    /// Cookie `Secure` (default on).
    pub fn secure(self, secure: bool) -> Self {
        SessionLayerBuilder {
            rules: self.rules.secure(secure),
            ..self
        }
    }

    /// Cookie `HttpOnly` (default on).
    pub fn http_only(self, http_only: bool) -> Self {
        SessionLayerBuilder {
            rules: self.rules.http_only(http_only),
            ..self
        }
    }

    /// Cookie `SameSite` (default `Lax`).
    pub fn same_site(self, same_site: SameSite) -> Self {
        SessionLayerBuilder {
            rules: self.rules.same_site(same_site),
            ..self
        }
    }

    /// Send the cookie as `__Host-<name>` (requires Secure, `Path=/`, no Domain).
    pub fn host_prefix(self, on: bool) -> Self {
        SessionLayerBuilder {
            rules: self.rules.host_prefix(on),
            ..self
        }
    }

    /// Sign cookie values: the first key signs, every key verifies (rotation).
    pub fn signing_keys<I, K>(self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        SessionLayerBuilder {
            rules: self.rules.signing_keys(keys),
            ..self
        }
    }

    /// Save and re-send the cookie on every response (Django's
    /// `SESSION_SAVE_EVERY_REQUEST`).
    pub fn save_every_request(self, on: bool) -> Self {
        SessionLayerBuilder {
            rules: self.rules.save_every_request(on),
            ..self
        }
    }

    /// Adds a request hook: after each request's response is decided, it is told what
    /// the session did ([`session_core::hooks::RequestOutcome`]: loaded, saved,
    /// cycled, flushed, refused for the logout race, ...). Hooks run in the order
    /// added, on the request's task: they must be quick and never block.
    /// `session_core::metrics::MetricsHook` counts requests;
    /// [`session_core::events::Events`] publishes key cycles and flushes.
    pub fn hook(self, hook: impl session_core::hooks::RequestHook) -> Self {
        SessionLayerBuilder {
            rules: self.rules.hook(hook),
            ..self
        }
    }

    /// The application's [`session_core::users::AuthCheck`]: a signed-in session whose
    /// auth hash no longer matches its principal's current one (a password change) is
    /// flushed when it is loaded, as Django does (see
    /// `session_http::SessionRulesBuilder::auth_check`).
    pub fn auth_check(self, check: Arc<dyn session_core::users::AuthCheck>) -> Self {
        SessionLayerBuilder {
            rules: self.rules.auth_check(check),
            ..self
        }
    }

    /// Record the `User-Agent` and peer address of signed-in sessions
    /// (`[middleware] track_clients`; off by default: it is personal data).
    pub fn track_clients(self, on: bool) -> Self {
        SessionLayerBuilder {
            rules: self.rules.track_clients(on),
            ..self
        }
    }

    /// Extend sliding sessions on reads with `store.touch`, at most once per `interval`.
    pub fn touch_interval(self, interval: Duration) -> Self {
        SessionLayerBuilder {
            rules: self.rules.touch_interval(interval),
            ..self
        }
    }

    /// How the middleware answers when it cannot save a session at the end of a request
    /// (default [`crate::error::error_response`]: 413 for a session over its limits, 409,
    /// 400, 503, 500; see [`crate::error`]). The failure is logged either way, the
    /// stored session is left as it was and no session cookie is sent; the function
    /// only shapes the response, e.g. an HTML page for 413:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum::http::StatusCode;
    /// use axum::response::{Html, IntoResponse};
    /// use backend_cache::MemoryStore;
    /// use session_axum::SessionLayer;
    /// use session_core::Error;
    ///
    /// let layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
    ///     .error_response(|err: &Error| match err {
    ///         Error::Limit(_) | Error::Codec(_) => (
    ///             StatusCode::PAYLOAD_TOO_LARGE,
    ///             Html("<p>Your cart is full.</p>"),
    ///         )
    ///             .into_response(),
    ///         other => session_axum::error::error_response(other),
    ///     })
    ///     .build()?;
    /// # Ok::<(), session_core::Error>(())
    /// ```
    ///
    /// Handlers that use `?` on session calls answer through [`crate::SessionError`]
    /// (the same defaults); they can map errors in their own error type.
    pub fn error_response<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error) -> axum::response::Response + Send + Sync + 'static,
    {
        self.error_response = ErrorResponder(Arc::new(f));
        self
    }

    /// Validates the settings and builds the layer.
    pub fn build(self) -> Result<SessionLayer> {
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                rules: self.rules.build()?,
                error_response: self.error_response,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_engine_needs_a_key() {
        let err = SessionLayer::cookie_engine().build().expect_err("no key");
        assert!(err.to_string().contains("cookie.signing_keys"), "{err}");
    }

    #[test]
    fn the_default_layer_is_the_default_builders() {
        let store = Arc::new(backend_cache::MemoryStore::new());
        let layer = SessionLayer::new(store.clone());
        let built = SessionLayer::builder(store)
            .build()
            .expect("defaults are valid");
        assert_eq!(built.shared.deletion(), layer.shared.deletion());
        assert_eq!(
            layer.shared.deletion(),
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"
        );
        assert_eq!(built.cookie_name(), layer.cookie_name());
    }
}
