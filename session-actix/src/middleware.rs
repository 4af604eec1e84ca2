//! [`SessionMiddleware`]: the actix-web middleware. It moves the request's `Cookie`
//! headers into session-http's rules, the lazy session into the request's extensions,
//! and the resulting `Set-Cookie` and `Vary` into the response (with
//! `[middleware] track_clients`, the `User-Agent` and `peer_addr()` go to the rules
//! too); every decision (which cookie to read, when to save, set or delete the cookie,
//! `Vary: Cookie`, no save on a 5xx, 400 on the logout race, the touch policy) is
//! [`session_http::flow`]'s, the same as session-axum's.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpResponse};
use session_core::{Config, EngineRegistry, Error, Result, SessionSettings, SessionStore};
use session_http::{CookieConfig, MiddlewareConfig, SameSite, SessionRules, SessionRulesBuilder};

use crate::error::{DiscardSession, ErrorFn, SessionError};

/// What every worker's copy of the middleware shares.
struct Shared {
    rules: SessionRules,
    error_response: Arc<ErrorFn>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// The session middleware for actix-web: put it on an app with `.wrap(..)` and take a
/// [`crate::Session`] in handlers.
///
/// Cheap to clone (one per worker). Build it with [`SessionMiddleware::new`] (a store,
/// default settings), [`SessionMiddleware::builder`] (a store, custom settings),
/// [`SessionMiddleware::cookie_engine`] (sessions in signed cookies) or
/// [`SessionMiddleware::from_config`] (`Sessions.toml`, the same file session-axum
/// reads).
#[derive(Clone, Debug)]
pub struct SessionMiddleware {
    shared: Arc<Shared>,
}

impl SessionMiddleware {
    /// Sessions in `store`, with default settings: cookie `sessionid`, Secure, HttpOnly,
    /// `SameSite=Lax`, two-week sliding expiry.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        SessionMiddleware {
            shared: Arc::new(Shared {
                rules: SessionRules::new(store),
                error_response: Arc::new(crate::error::error_response),
            }),
        }
    }

    /// A builder for sessions in `store`.
    pub fn builder(store: Arc<dyn SessionStore>) -> SessionMiddlewareBuilder {
        SessionMiddlewareBuilder::new(SessionRules::builder(store))
    }

    /// A builder for the `cookie` engine: the whole session in a signed cookie, no
    /// server-side store. It needs [`SessionMiddlewareBuilder::signing_keys`]; see
    /// [`crate::cookie_engine`] for its limits (readable by the client, no revocation,
    /// 4 KB).
    pub fn cookie_engine() -> SessionMiddlewareBuilder {
        SessionMiddlewareBuilder::new(SessionRules::cookie_engine())
    }

    /// The middleware `config` describes: the engine (built through `registry`, or the
    /// `cookie` engine), the shared settings, `[cookie]` and `[middleware]`.
    pub async fn from_config(config: &Config, registry: &EngineRegistry) -> Result<Self> {
        Self::builder_from_config(config, registry).await?.build()
    }

    /// Like [`SessionMiddleware::from_config`], but returns the builder so code can
    /// adjust settings before [`SessionMiddlewareBuilder::build`].
    pub async fn builder_from_config(
        config: &Config,
        registry: &EngineRegistry,
    ) -> Result<SessionMiddlewareBuilder> {
        Ok(SessionMiddlewareBuilder::new(
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

/// Builds a [`SessionMiddleware`]; [`SessionMiddlewareBuilder::build`] validates
/// everything.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use backend_cache::MemoryStore;
/// use session_actix::{SameSite, SessionMiddleware};
///
/// let middleware = SessionMiddleware::builder(Arc::new(MemoryStore::new()))
///     .cookie_name("id")
///     .same_site(SameSite::Strict)
///     .host_prefix(true)
///     .signing_keys(["a new key of at least 32 bytes......", "the old one, still accepted........."])
///     .touch_interval(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(middleware.cookie_name(), "__Host-id");
/// # Ok::<(), session_core::Error>(())
/// ```
#[must_use = "call .build() to get the middleware"]
pub struct SessionMiddlewareBuilder {
    rules: SessionRulesBuilder,
    error_response: Arc<ErrorFn>,
}

impl std::fmt::Debug for SessionMiddlewareBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddlewareBuilder")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl SessionMiddlewareBuilder {
    fn new(rules: SessionRulesBuilder) -> Self {
        SessionMiddlewareBuilder {
            rules,
            error_response: Arc::new(crate::error::error_response),
        }
    }

    /// Shared session settings (expiry, limits, save attempts).
    pub fn settings(self, settings: SessionSettings) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.settings(settings),
            ..self
        }
    }

    /// All cookie settings at once (replaces earlier cookie calls).
    pub fn cookie_config(self, cookie: CookieConfig) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.cookie_config(cookie),
            ..self
        }
    }

    /// All middleware settings at once (replaces earlier middleware calls).
    pub fn middleware_config(self, middleware: MiddlewareConfig) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.middleware_config(middleware),
            ..self
        }
    }

    /// Cookie name (default `sessionid`).
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.cookie_name(name),
            ..self
        }
    }

    /// Cookie `Domain`.
    pub fn domain(self, domain: impl Into<String>) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.domain(domain),
            ..self
        }
    }

    /// Cookie `Path` (default `/`).
    pub fn path(self, path: impl Into<String>) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.path(path),
            ..self
        }
    }

    /// Cookie `Secure` (default on).
    pub fn secure(self, secure: bool) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.secure(secure),
            ..self
        }
    }

    /// Cookie `HttpOnly` (default on).
    pub fn http_only(self, http_only: bool) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.http_only(http_only),
            ..self
        }
    }

    /// Cookie `SameSite` (default `Lax`).
    pub fn same_site(self, same_site: SameSite) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.same_site(same_site),
            ..self
        }
    }

    /// Send the cookie as `__Host-<name>` (requires Secure, `Path=/`, no Domain).
    pub fn host_prefix(self, on: bool) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.host_prefix(on),
            ..self
        }
    }

    /// Save and re-send the cookie on every response (Django's
    /// `SESSION_SAVE_EVERY_REQUEST`).
    pub fn save_every_request(self, on: bool) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.save_every_request(on),
            ..self
        }
    }

    /// Adds a request hook, told what the session did in each request (see
    /// `session_http::SessionRulesBuilder::hook`): the same hooks as session-axum's,
    /// e.g. `session_core::metrics::MetricsHook`.
    pub fn hook(self, hook: impl session_core::hooks::RequestHook) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.hook(hook),
            ..self
        }
    }

    /// The application's [`session_core::users::AuthCheck`]: a signed-in session whose
    /// auth hash no longer matches its principal's current one (a password change) is
    /// flushed when it is loaded, as Django does (see
    /// `session_http::SessionRulesBuilder::auth_check`).
    pub fn auth_check(self, check: Arc<dyn session_core::users::AuthCheck>) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.auth_check(check),
            ..self
        }
    }

    /// Record the `User-Agent` and peer address of signed-in sessions
    /// (`[middleware] track_clients`; off by default: it is personal data).
    pub fn track_clients(self, on: bool) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.track_clients(on),
            ..self
        }
    }

    /// Extend sliding sessions on reads with `store.touch`, at most once per `interval`.
    pub fn touch_interval(self, interval: Duration) -> Self {
        SessionMiddlewareBuilder {
            rules: self.rules.touch_interval(interval),
            ..self
        }
    }
    /// Sign cookie values: the first key signs, every key verifies (rotation).
    pub fn signing_keys<I, K>(self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        SessionMiddlewareBuilder {
            rules: self.rules.signing_keys(keys),
            ..self
        }
    }

    /// How the middleware answers when it cannot save a session at the end of a request
    /// (default [`crate::error::error_response`]: 413, 409, 400, 503, 500). The failure
    /// is logged either way, the stored session is left as it was and no session
    /// cookie is sent; the function only shapes the response.
    pub fn error_response<F>(self, f: F) -> Self
    where
        F: Fn(&Error) -> HttpResponse + Send + Sync + 'static,
    {
        SessionMiddlewareBuilder {
            error_response: Arc::new(f),
            ..self
        }
    }

    /// Validates the settings and builds the middleware.
    pub fn build(self) -> Result<SessionMiddleware> {
        Ok(SessionMiddleware {
            shared: Arc::new(Shared {
                rules: self.rules.build()?,
                error_response: self.error_response,
            }),
        })
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<std::result::Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service: Rc::new(service),
            shared: self.shared.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around an app's service.
#[derive(Debug)]
pub struct SessionService<S> {
    service: Rc<S>,
    shared: Arc<Shared>,
}

/// Whether a response asks the middleware to store nothing: it carries
/// [`DiscardSession`], or it is a [`SessionError`]'s.
fn discards<B>(res: &ServiceResponse<B>) -> bool {
    res.response().extensions().contains::<DiscardSession>()
        || res
            .response()
            .error()
            .is_some_and(|e| e.as_error::<SessionError>().is_some())
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let shared = self.shared.clone();
        // actix-web 4 is on `http` 0.2: the headers the rules read (the cookies, and
        // the `User-Agent` for `[middleware] track_clients`) cross as bytes.
        let mut headers = http::HeaderMap::new();
        for v in req.headers().get_all(header::COOKIE) {
            if let Ok(v) = http::HeaderValue::from_bytes(v.as_bytes()) {
                headers.append(http::header::COOKIE, v);
            }
        }
        if let Some(ua) = req.headers().get(header::USER_AGENT)
            && let Ok(ua) = http::HeaderValue::from_bytes(ua.as_bytes())
        {
            headers.insert(http::header::USER_AGENT, ua);
        }
        let peer = req.peer_addr().map(|a| a.ip());
        let request = shared.rules.start_from_request(&headers, peer);
        req.extensions_mut().insert(request.session().clone());
        Box::pin(async move {
            let mut res = service.call(req).await?;
            let discard = discards(&res);
            // actix-web 4 is on `http` 0.2: the status crosses as its number.
            let status = http::StatusCode::from_u16(res.status().as_u16())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            match shared.rules.finish(&request, status, discard).await {
                Ok(changes) => {
                    let headers = res.headers_mut();
                    if let Some(cookie) = changes.set_cookie
                        && let Ok(v) = HeaderValue::from_bytes(cookie.as_bytes())
                    {
                        headers.append(header::SET_COOKIE, v);
                    }
                    if changes.vary_cookie
                        && session_http::needs_vary_cookie(
                            headers.get_all(header::VARY).map(HeaderValue::as_bytes),
                        )
                    {
                        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
                    }
                    Ok(res.map_into_left_body())
                }
                Err(e) => {
                    let error_response = (shared.error_response)(&e);
                    Ok(res.into_response(error_response).map_into_right_body())
                }
            }
        })
    }
}
