//! The per-request middleware: hand the handler a lazy session, then apply Django's
//! response rules (`SessionMiddleware.process_response`) once the handler is done.
//!
//! After the handler:
//! 1. the request carried the cookie and the session ended with no key and no data
//!    (a flush, or an unknown key): send the deleting cookie and `Vary: Cookie`;
//! 2. otherwise, when it was modified (or `save_every_request`) and is not empty, the
//!    status is below 500 and the response does not carry
//!    [`crate::error::DiscardSession`] (every [`crate::SessionError`] response does): save, send the cookie (`Max-Age`/`Expires` from the
//!    expiry, none for browser-close sessions) and `Vary: Cookie`. A failed save
//!    replaces the response, with no session cookie (400 for a session deleted
//!    meanwhile, 409 for conflicts that kept winning, 413 for a session over its size
//!    limits, 503 for an unreachable store: see [`crate::error`]; an app can shape
//!    these with [`crate::SessionLayerBuilder::error_response`]);
//! 3. otherwise, with a touch interval, a sliding session that was read but not changed
//!    gets its deadline moved with `store.touch` when it is due
//!    ([`session_core::Session::touch_if_due`]: no data rewrite, no version bump), and
//!    its cookie renewed;
//! 4. `Vary: Cookie` whenever the session was accessed.
//!
//! The request's session cookie is found by name in every `Cookie` header, read as
//! bytes: other cookies may carry any bytes. A session cookie whose value is not visible
//! ASCII (once optional surrounding double quotes are removed) is a malformed key: the
//! request gets a fresh session and, as for any unusable session cookie, the deleting
//! cookie when the session ends empty (rule 1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use session_core::hooks::RequestOutcome;
use session_core::{Error, Session, Timestamp};
use tower_service::Service;
use tracing::Instrument;

use crate::cookie_engine::{self, CookieSlot};
use crate::error::{DiscardSession, log};
use crate::layer::{Backend, Shared};

/// The service [`crate::SessionLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        SessionService { inner, shared }
    }
}

/// What the request's session handle is wired to.
enum Wiring {
    Store,
    Cookie(Arc<CookieSlot>),
}

/// The header changes the response gets.
#[derive(Default)]
struct Outcome {
    set_cookie: Option<HeaderValue>,
    vary: bool,
}

/// The session cookie as a request carried it.
#[derive(Debug, PartialEq, Eq)]
enum Sent<'h> {
    /// No cookie of that name.
    Absent,
    /// A value made of visible ASCII (surrounding double quotes removed); whether it
    /// names a session is for the key parser or the cookie engine to say.
    Value(&'h str),
    /// A cookie of that name whose value cannot be a session (non-ASCII bytes, control
    /// characters): a malformed key.
    Unusable,
}

impl<'h> Sent<'h> {
    fn carried(&self) -> bool {
        !matches!(self, Sent::Absent)
    }

    fn value(&self) -> Option<&'h str> {
        match self {
            Sent::Value(v) => Some(v),
            Sent::Absent | Sent::Unusable => None,
        }
    }
}

/// Trims the optional whitespace RFC 6265 allows around names, values and `;`.
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The session cookie `name` in the request (the first one: browsers send the most
/// specific path first).
///
/// Every `Cookie` header is read as bytes, so other cookies with non-ASCII values
/// (`theme=déjà`, a Latin-1 `lang=caf\xe9`) do not hide the session cookie; only the
/// session cookie's own value is decoded. Own code, not the `cookie` crate's parser:
/// that one takes `&str`, which is the problem being solved, and this is a split on `;`
/// and `=`.
fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Sent<'h> {
    let found = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (&pair[..eq], &pair[eq + 1..]);
            (trim_ows(n) == name.as_bytes()).then(|| trim_ows(v))
        });
    let Some(mut value) = found else {
        return Sent::Absent;
    };
    if let [b'"', inner @ .., b'"'] = value {
        value = inner;
    }
    if !value.iter().all(|b| b.is_ascii_graphic()) {
        return Sent::Unusable;
    }
    std::str::from_utf8(value).map_or(Sent::Unusable, Sent::Value)
}

/// Adds `Vary: Cookie` unless the response already varies on it (or on everything).
fn vary_on_cookie(headers: &mut HeaderMap) {
    let already = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("cookie")
        });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

impl Shared {
    fn start(&self, cookie: Option<&str>) -> (Session, Wiring) {
        match &self.backend {
            Backend::Store(store) => {
                let key = cookie.and_then(|v| self.parse_key(v));
                (
                    Session::new(store.clone(), self.settings.clone(), key),
                    Wiring::Store,
                )
            }
            Backend::Cookie => {
                let record = match (&self.signer, cookie) {
                    (Some(s), Some(v)) => cookie_engine::decode(s, &self.cookie.name, v),
                    _ => None,
                };
                let (slot, key) = CookieSlot::with_record(record);
                let slot = Arc::new(slot);
                (
                    Session::new(slot.clone(), self.settings.clone(), key),
                    Wiring::Cookie(slot),
                )
            }
        }
    }

    /// `Max-Age` for the session's cookie as of `now`: `None` for a browser-session
    /// cookie.
    async fn max_age(session: &Session, now: Timestamp) -> session_core::Result<Option<i64>> {
        if session.expire_at_browser_close().await? {
            Ok(None)
        } else {
            Ok(Some(session.expiry_age_at(now).await?))
        }
    }

    /// Saves the session and returns its new cookie.
    async fn save(&self, session: &Session, wiring: &Wiring) -> session_core::Result<HeaderValue> {
        session.save().await?;
        let value = match wiring {
            Wiring::Cookie(slot) => {
                let record = slot.record().ok_or(Error::NotFound)?;
                let signer = self.signer.as_ref().ok_or_else(|| {
                    Error::config(
                        "cookie.signing_keys",
                        "the cookie engine needs a signing key",
                    )
                })?;
                cookie_engine::encode(signer, &self.cookie.name, &record)?
            }
            Wiring::Store => {
                let key = session.key().ok_or(Error::NotFound)?;
                self.key_cookie_value(&key)
            }
        };
        let now = Timestamp::now();
        let max_age = Self::max_age(session, now).await?;
        self.session_cookie(&value, max_age, now).ok_or_else(|| {
            Error::config("cookie", "the session cookie does not form a valid header")
        })
    }

    /// The touch policy: moves a read-only sliding session's deadline when a save now
    /// would push it at least the interval past the stored one, and returns the renewed
    /// cookie. A failed touch is logged and costs the user nothing but the extension.
    async fn touch(&self, session: &Session) -> Option<HeaderValue> {
        let interval = self.touch_interval?;
        match session.touch_if_due(interval).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                let fp = session.key().map(|k| k.fingerprint());
                tracing::warn!(
                    session = fp.as_deref().unwrap_or("-"),
                    error = %e,
                    "session touch failed; its deadline was not extended"
                );
                return None;
            }
        }
        let key = session.key()?;
        let now = Timestamp::now();
        let max_age = Self::max_age(session, now).await.ok()?;
        self.session_cookie(&self.key_cookie_value(&key), max_age, now)
    }

    /// [`Shared::decide`], then the request hooks are told what happened.
    async fn finish(
        &self,
        session: &Session,
        wiring: &Wiring,
        carried: bool,
        status: StatusCode,
        discard: bool,
    ) -> Result<Outcome, Response<Body>> {
        if self.hooks.0.is_empty() {
            return self
                .decide(session, wiring, carried, status, discard, None)
                .await;
        }
        let mut report = RequestOutcome::from_session(session, status.as_u16());
        let result = self
            .decide(session, wiring, carried, status, discard, Some(&mut report))
            .await;
        report.key_after = session.key().map(|k| k.fingerprint());
        if let Err(response) = &result {
            report.status = response.status().as_u16();
        }
        for hook in &self.hooks.0 {
            hook.on_request(&report);
        }
        result
    }

    async fn decide(
        &self,
        session: &Session,
        wiring: &Wiring,
        carried: bool,
        status: StatusCode,
        discard: bool,
        mut report: Option<&mut RequestOutcome>,
    ) -> Result<Outcome, Response<Body>> {
        let accessed = session.accessed();
        let modified = session.modified();
        let empty = session.is_empty();
        if carried && empty {
            return Ok(Outcome {
                set_cookie: Some(self.deletion()),
                vary: true,
            });
        }
        let mut out = Outcome {
            set_cookie: None,
            vary: accessed,
        };
        if (modified || self.save_every_request) && !empty {
            if status.is_server_error() || discard {
                return Ok(out);
            }
            let new = session.key().is_none();
            let saved = self.save(session, wiring).await;
            if let Some(r) = report.as_deref_mut() {
                r.save_result(saved.as_ref().map(drop));
                r.created = new && saved.is_ok();
            }
            match saved {
                Ok(cookie) => {
                    out.set_cookie = Some(cookie);
                    out.vary = true;
                }
                Err(e) => {
                    let fp = session.key().map(|k| k.fingerprint());
                    log(&e, "save", fp.as_deref());
                    return Err((self.error_response.0)(&e));
                }
            }
        } else if accessed
            && !modified
            && !status.is_server_error()
            && !discard
            && let Some(cookie) = self.touch(session).await
        {
            if let Some(r) = report {
                r.touched = true;
            }
            out.set_cookie = Some(cookie);
            out.vary = true;
        }
        Ok(out)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared.clone();
        let sent = find_cookie(req.headers(), &shared.cookie.name);
        let carried = sent.carried();
        let (session, wiring) = shared.start(sent.value());
        let span = tracing::debug_span!(
            "session_request",
            method = %req.method(),
            path = req.uri().path(),
            session = tracing::field::Empty,
        );
        if !span.is_disabled()
            && let Some(k) = session.original_key()
        {
            span.record("session", k.fingerprint());
        }
        req.extensions_mut().insert(session.clone());
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = async move {
            let res = inner.call(req).await?;
            let (mut parts, body) = res.into_parts();
            let discard = parts.extensions.remove::<DiscardSession>().is_some();
            match shared
                .finish(&session, &wiring, carried, parts.status, discard)
                .await
            {
                Ok(out) => {
                    if let Some(c) = out.set_cookie {
                        parts.headers.append(header::SET_COOKIE, c);
                    }
                    if out.vary {
                        vary_on_cookie(&mut parts.headers);
                    }
                    Ok(Response::from_parts(parts, Body::new(body)))
                }
                Err(error_response) => Ok(error_response),
            }
        };
        Box::pin(fut.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sessionid=abc ;b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=later"));
        assert_eq!(find_cookie(&h, "sessionid"), Sent::Value("abc"));
        assert_eq!(find_cookie(&h, "b"), Sent::Value("2"));
        assert_eq!(find_cookie(&h, "session"), Sent::Absent);
    }

    fn one(bytes: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(bytes).expect("a valid header value"),
        );
        h
    }

    #[test]
    fn other_cookies_may_hold_any_bytes() {
        let h = one("theme=déjà; sessionid=abc".as_bytes());
        assert_eq!(find_cookie(&h, "sessionid"), Sent::Value("abc"));
        let h = one(b"lang=caf\xe9;sessionid=abc;x=\xff\xfe");
        assert_eq!(find_cookie(&h, "sessionid"), Sent::Value("abc"));
        let mut h = one(b"lang=caf\xe9");
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=abc"));
        assert_eq!(find_cookie(&h, "sessionid"), Sent::Value("abc"));
    }

    #[test]
    fn quoted_values_are_unquoted_and_odd_values_are_unusable() {
        assert_eq!(
            find_cookie(&one(b"sessionid=\"abc\""), "sessionid"),
            Sent::Value("abc")
        );
        assert_eq!(
            find_cookie(&one(b"sessionid=\"\""), "sessionid"),
            Sent::Value("")
        );
        assert_eq!(
            find_cookie(&one(b"sessionid=\"abc"), "sessionid"),
            Sent::Value("\"abc")
        );
        assert_eq!(
            find_cookie(&one(b"sessionid=caf\xe9"), "sessionid"),
            Sent::Unusable
        );
        assert_eq!(
            find_cookie(&one("sessionid=déjà".as_bytes()), "sessionid"),
            Sent::Unusable
        );
        assert_eq!(
            find_cookie(&one(b"sessionid=a b"), "sessionid"),
            Sent::Unusable
        );
        assert_eq!(
            find_cookie(&one(b"sessionid\xe9=abc"), "sessionid"),
            Sent::Absent
        );
    }

    #[test]
    fn vary_is_added_once() {
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        vary_on_cookie(&mut h);
        vary_on_cookie(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Accept-Encoding", "Cookie"]);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("*"));
        vary_on_cookie(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    }
}
