//! The per-request rules: read the session cookie from the request, hand out a lazy
//! session, and decide what the response gets once the handler is done (Django's
//! `SessionMiddleware.process_response`). Framework adapters call
//! [`SessionRules::start`] before the handler and [`SessionRules::finish`] after it,
//! and copy the [`ResponseChanges`] into their response.
//!
//! After the handler:
//! 1. the request carried the cookie and the session ended with no key and no data
//!    (a flush, or an unknown key): send the deleting cookie and `Vary: Cookie`;
//! 2. otherwise, when it was modified (or `save_every_request`) and is not empty, the
//!    status is below 500 and the adapter was not told to discard the session (a
//!    handler's session error): save, send the cookie (`Max-Age`/`Expires` from the
//!    expiry, none for browser-close sessions) and `Vary: Cookie`. A failed save is
//!    logged and returned as an error: the adapter replaces the response, with no
//!    session cookie (400 for a session deleted meanwhile, 409 for conflicts that kept
//!    winning, 413 for a session over its size limits, 503 for an unreachable store:
//!    see [`crate::error`]);
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

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use session_core::hooks::RequestOutcome;
use session_core::{Activity, Error, Session, Timestamp};

use crate::cookie_engine::{self, CookieSlot};
use crate::error::log;
use crate::rules::{Backend, SessionRules};

/// What the request's session handle is wired to.
#[derive(Debug)]
enum Wiring {
    Store,
    Cookie(Arc<CookieSlot>),
}

/// One request's session, between [`SessionRules::start`] and
/// [`SessionRules::finish`].
#[derive(Debug)]
pub struct RequestSession {
    session: Session,
    wiring: Wiring,
    carried: bool,
}

impl RequestSession {
    /// The lazy session handle to give the handler (clones share state).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the request carried a cookie under the session cookie's name (usable
    /// or not).
    pub fn carried_cookie(&self) -> bool {
        self.carried
    }
}

/// The header changes a response gets from [`SessionRules::finish`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseChanges {
    /// A `Set-Cookie` value to append: the session cookie, or its deleting twin.
    pub set_cookie: Option<HeaderValue>,
    /// Whether the response must vary on `Cookie`.
    pub vary_cookie: bool,
}

impl ResponseChanges {
    /// Appends the changes to `headers` (`Vary: Cookie` only when the response does
    /// not already vary on it).
    pub fn apply(self, headers: &mut HeaderMap) {
        if let Some(c) = self.set_cookie {
            headers.append(header::SET_COOKIE, c);
        }
        if self.vary_cookie {
            vary_on_cookie(headers);
        }
    }
}

/// The session cookie as a request carried it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent<'h> {
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

/// The session cookie `name` among the `Cookie` header values (the first one:
/// browsers send the most specific path first).
///
/// Every header is read as bytes, so other cookies with non-ASCII values
/// (`theme=déjà`, a Latin-1 `lang=caf\xe9`) do not hide the session cookie; only the
/// session cookie's own value is decoded. Own code, not the `cookie` crate's parser:
/// that one takes `&str`, which is the problem being solved, and this is a split on `;`
/// and `=`.
pub(crate) fn find_cookie<'h, I>(cookie_headers: I, name: &str) -> Sent<'h>
where
    I: IntoIterator<Item = &'h [u8]>,
{
    let name = name.as_bytes();
    // A plain loop rather than an iterator chain: this runs on every request.
    let mut found = None;
    'headers: for header in cookie_headers {
        for pair in header.split(|&b| b == b';') {
            let Some(rest) = trim_ows(pair).strip_prefix(name) else {
                continue;
            };
            if let [b'=', value @ ..] = trim_ows(rest) {
                found = Some(trim_ows(value));
                break 'headers;
            }
        }
    }
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

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a response whose `Vary` header values are `vary_values` still needs
/// `Vary: Cookie` (it does unless one of them names `Cookie` or `*`).
pub fn needs_vary_cookie<'a, I>(vary_values: I) -> bool
where
    I: IntoIterator<Item = &'a [u8]>,
{
    !vary_values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("cookie")
        })
}

/// Adds `Vary: Cookie` unless the response already varies on it (or on everything).
pub fn vary_on_cookie(headers: &mut HeaderMap) {
    if needs_vary_cookie(headers.get_all(header::VARY).iter().map(|v| v.as_bytes())) {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

impl SessionRules {
    /// Starts a request whose `Cookie` header values are `cookie_headers` (as bytes,
    /// in the order they came): finds the session cookie and builds the lazy session.
    /// No store I/O happens here.
    pub fn start<'h, I>(&self, cookie_headers: I) -> RequestSession
    where
        I: IntoIterator<Item = &'h [u8]>,
    {
        let sent = find_cookie(cookie_headers, &self.cookie.name);
        let cookie = sent.value();
        let (session, wiring) = match &self.backend {
            Backend::Store(ctx) => {
                let key = cookie.and_then(|v| self.parse_key(v));
                (Session::in_context(ctx.clone(), key), Wiring::Store)
            }
            Backend::Cookie => {
                let record = match (&self.signer, cookie) {
                    (Some(s), Some(v)) => cookie_engine::decode(s, &self.cookie.name, v),
                    _ => None,
                };
                let (slot, key) = CookieSlot::with_record(record);
                let slot = Arc::new(slot);
                (
                    Session::with_auth_check(
                        slot.clone(),
                        self.settings.clone(),
                        key,
                        self.auth_check.0.clone(),
                    ),
                    Wiring::Cookie(slot),
                )
            }
        };
        RequestSession {
            session,
            wiring,
            carried: sent.carried(),
        }
    }

    /// [`SessionRules::start`] over an `http` request's headers. With client tracking
    /// on, the `User-Agent` is recorded (see [`SessionRules::start_from_request`]).
    pub fn start_from_headers(&self, headers: &HeaderMap) -> RequestSession {
        self.start_from_request(headers, None)
    }

    /// [`SessionRules::start`] over an `http` request's headers and its peer address
    /// (when the framework knows it). With `[middleware] track_clients`, the
    /// `User-Agent` (at most 256 bytes) and the address are recorded for a signed-in
    /// session ([`Session::set_client`]).
    pub fn start_from_request(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> RequestSession {
        let rs = self.start(headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()));
        if self.track_clients {
            let ua = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| truncate(s, 256).to_owned());
            rs.session.set_client(ua, peer.map(|p| p.to_string()));
        }
        rs
    }

    /// Saves the session and returns its new cookie.
    async fn save(&self, session: &Session, wiring: &Wiring) -> session_core::Result<HeaderValue> {
        session.save().await?;
        let key;
        let value: std::borrow::Cow<'_, str> = match wiring {
            Wiring::Cookie(slot) => {
                let record = slot.record().ok_or(Error::NotFound)?;
                let signer = self.signer.as_ref().ok_or_else(|| {
                    Error::config(
                        "cookie.signing_keys",
                        "the cookie engine needs a signing key",
                    )
                })?;
                cookie_engine::encode(signer, &self.cookie.name, &record)?.into()
            }
            Wiring::Store => {
                key = session.key().ok_or(Error::NotFound)?;
                self.key_cookie_value(&key)
            }
        };
        let now = Timestamp::now();
        let max_age = session.cookie_max_age_at(now).await?;
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
        let max_age = session.cookie_max_age_at(now).await.ok()?;
        self.session_cookie(&self.key_cookie_value(&key), max_age, now)
    }

    /// Applies the response rules (see the [module docs](self)) once the handler
    /// answered with `status`; `discard` says the response must store none of the
    /// request's session changes (a handler's session error). A failed save is logged
    /// (with the session's fingerprint) and returned: the adapter answers with its
    /// error response instead of the handler's.
    ///
    /// The request hooks ([`crate::SessionRulesBuilder::hook`]) are told what the
    /// session did before this returns.
    pub async fn finish(
        &self,
        request: &RequestSession,
        status: StatusCode,
        discard: bool,
    ) -> Result<ResponseChanges, Error> {
        if self.hooks.0.is_empty() {
            return self.decide(request, status, discard, None).await;
        }
        let session = &request.session;
        let mut report = RequestOutcome::from_session(session, status.as_u16());
        let result = self
            .decide(request, status, discard, Some(&mut report))
            .await;
        self.tell_hooks(report, session, result.as_ref().err());
        result
    }

    /// Tells the request hooks `report`, completed with the session's key after the
    /// request and, for a failed save, the status of the error response.
    fn tell_hooks(&self, mut report: RequestOutcome, session: &Session, error: Option<&Error>) {
        report.key_after = session.key().map(|k| k.fingerprint());
        if let Some(e) = error {
            report.status = crate::error::status_and_message(e).0.as_u16();
        }
        for hook in &self.hooks.0 {
            hook.on_request(&report);
        }
    }

    /// The changes that delete the session cookie the browser sent.
    fn cookie_deleted(&self) -> ResponseChanges {
        ResponseChanges {
            set_cookie: Some(self.deletion()),
            vary_cookie: true,
        }
    }

    /// [`SessionRules::finish`] without awaiting, where the rules need no store call:
    /// `Some` for a request whose session was neither read nor changed (with
    /// `save_every_request` off), the request that never touches its session; `None`
    /// when [`SessionRules::finish`] must run. Where it answers, it answers as
    /// [`SessionRules::finish`] would, and tells the request hooks the same. An adapter
    /// calls this first to answer such a request without a future of its own
    /// (session-axum's layer does). Whether the response must store nothing
    /// (`finish`'s `discard`) makes no difference here: there is nothing to store.
    pub fn finish_now(
        &self,
        request: &RequestSession,
        status: StatusCode,
    ) -> Option<ResponseChanges> {
        let session = &request.session;
        if self.save_every_request {
            return None;
        }
        let activity = session.activity();
        if activity.accessed || activity.modified {
            return None;
        }
        let out = if request.carried && activity.empty {
            self.cookie_deleted()
        } else {
            ResponseChanges::default()
        };
        if !self.hooks.0.is_empty() {
            let report = RequestOutcome::from_session(session, status.as_u16());
            self.tell_hooks(report, session, None);
        }
        Some(out)
    }

    async fn decide(
        &self,
        request: &RequestSession,
        status: StatusCode,
        discard: bool,
        mut report: Option<&mut RequestOutcome>,
    ) -> Result<ResponseChanges, Error> {
        let session = &request.session;
        let Activity {
            accessed,
            modified,
            empty,
            has_key,
            ..
        } = session.activity();
        if request.carried && empty {
            return Ok(self.cookie_deleted());
        }
        let mut out = ResponseChanges {
            set_cookie: None,
            vary_cookie: accessed,
        };
        if (modified || self.save_every_request) && !empty {
            if status.is_server_error() || discard {
                return Ok(out);
            }
            let new = !has_key;
            let saved = self.save(session, &request.wiring).await;
            if let Some(r) = report.as_deref_mut() {
                r.save_result(saved.as_ref().map(drop));
                r.created = new && saved.is_ok();
            }
            match saved {
                Ok(cookie) => {
                    out.set_cookie = Some(cookie);
                    out.vary_cookie = true;
                }
                Err(e) => {
                    let fp = session.key().map(|k| k.fingerprint());
                    log(&e, "save", fp.as_deref());
                    return Err(e);
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
            out.vary_cookie = true;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'h>(h: &'h HeaderMap, name: &str) -> Sent<'h> {
        find_cookie(h.get_all(header::COOKIE).iter().map(|v| v.as_bytes()), name)
    }

    #[test]
    fn finds_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sessionid=abc ;b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=later"));
        assert_eq!(find(&h, "sessionid"), Sent::Value("abc"));
        assert_eq!(find(&h, "b"), Sent::Value("2"));
        assert_eq!(find(&h, "session"), Sent::Absent);
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
        assert_eq!(find(&h, "sessionid"), Sent::Value("abc"));
        let h = one(b"lang=caf\xe9;sessionid=abc;x=\xff\xfe");
        assert_eq!(find(&h, "sessionid"), Sent::Value("abc"));
        let mut h = one(b"lang=caf\xe9");
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=abc"));
        assert_eq!(find(&h, "sessionid"), Sent::Value("abc"));
    }

    #[test]
    fn quoted_values_are_unquoted_and_odd_values_are_unusable() {
        assert_eq!(
            find(&one(b"sessionid=\"abc\""), "sessionid"),
            Sent::Value("abc")
        );
        assert_eq!(find(&one(b"sessionid=\"\""), "sessionid"), Sent::Value(""));
        assert_eq!(
            find(&one(b"sessionid=\"abc"), "sessionid"),
            Sent::Value("\"abc")
        );
        assert_eq!(
            find(&one(b"sessionid=caf\xe9"), "sessionid"),
            Sent::Unusable
        );
        assert_eq!(
            find(&one("sessionid=déjà".as_bytes()), "sessionid"),
            Sent::Unusable
        );
        assert_eq!(find(&one(b"sessionid=a b"), "sessionid"), Sent::Unusable);
        assert_eq!(find(&one(b"sessionid\xe9=abc"), "sessionid"), Sent::Absent);
    }

    /// What `finish_now` answers for the request that sent `cookie` after `handler`
    /// ran, beside what `finish` answers for a twin request that did the same.
    async fn both_finishes(
        cookie: Option<&str>,
        handler: impl Fn(&Session) -> std::pin::Pin<Box<dyn Future<Output = ()> + '_>>,
    ) -> (Option<ResponseChanges>, ResponseChanges) {
        let rules = SessionRules::new(Arc::new(backend_cache::MemoryStore::new()));
        let start = || {
            let mut h = HeaderMap::new();
            if let Some(c) = cookie {
                h.append(
                    header::COOKIE,
                    HeaderValue::from_str(c).expect("a valid header value"),
                );
            }
            rules.start_from_headers(&h)
        };
        let (now, later) = (start(), start());
        handler(now.session()).await;
        handler(later.session()).await;
        let quick = rules.finish_now(&now, StatusCode::OK);
        let full = rules
            .finish(&later, StatusCode::OK, false)
            .await
            .expect("finish");
        (quick, full)
    }

    #[tokio::test]
    async fn finish_now_answers_exactly_the_requests_that_need_no_store_call() {
        // Untouched, without a cookie: nothing to do.
        let (quick, full) = both_finishes(None, |_| Box::pin(async {})).await;
        assert_eq!(quick, Some(ResponseChanges::default()));
        assert_eq!(full, ResponseChanges::default());
        // Untouched, with a cookie that names no session: still nothing (not read).
        let cookie = format!(
            "sessionid={}",
            session_core::SessionKey::generate()
                .expect("a key")
                .as_str()
        );
        let (quick, full) = both_finishes(Some(&cookie), |_| Box::pin(async {})).await;
        assert_eq!(quick, Some(full));
        // Untouched, with a cookie that is no key: the cookie is deleted.
        let (quick, full) =
            both_finishes(Some("sessionid=not-a-key"), |_| Box::pin(async {})).await;
        let deleted = quick.expect("answered without a store call");
        assert!(deleted.set_cookie.is_some() && deleted.vary_cookie);
        assert_eq!(deleted, full);
        // Read: the rules may touch, so `finish` must run.
        let (quick, _) = both_finishes(None, |s| {
            Box::pin(async move {
                let _ = s.get::<String>("k").await;
            })
        })
        .await;
        assert_eq!(quick, None);
        // Written: saved, so `finish` must run.
        let (quick, full) = both_finishes(None, |s| {
            Box::pin(async move {
                s.insert("k", "v").await.expect("insert");
            })
        })
        .await;
        assert_eq!(quick, None);
        assert!(full.set_cookie.is_some());
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
        assert!(!needs_vary_cookie([b"accept, COOKIE".as_slice()]));
    }
}
