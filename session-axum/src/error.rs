//! Session failures as HTTP responses: one mapping shared by the middleware (a failed
//! save at the end of the request) and by handlers (`session.get(..).await?`). The
//! mapping is session-http's ([`session_http::error`]), the same for every framework.
//!
//! | error | status | why |
//! |---|---|---|
//! | [`Error::NotFound`] | 400 | the session was deleted meanwhile (a concurrent logout); Django's `SessionInterrupted` |
//! | [`Error::ConflictRetriesExhausted`] | 409 | concurrent writers kept winning; the client may retry |
//! | [`Error::Limit`], [`Error::Codec`] with [`CodecError::TooLarge`](session_core::CodecError::TooLarge) | 413 | the session outgrew `max_encoded_size`, `max_keys` or the cookie engine's 4 KB; nothing was stored and no cookie is sent |
//! | [`Error::Backend`], [`Error::Timeout`] | 503 | the store is unreachable; logged at `error` |
//! | anything else | 500 | logged at `error` |
//!
//! Bodies are short plain-text messages; details (which never include a session key)
//! go to the log. An application that wants other responses for the failures the
//! middleware meets (a save at the end of the request) sets
//! [`crate::SessionLayerBuilder::error_response`]; [`error_response`] is the default it
//! can fall back to.

use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Response;
use axum::response::IntoResponse;
use session_core::Error;

pub(crate) use session_http::error::log;
pub use session_http::error::{
    SESSION_CONFLICT, SESSION_FAILED, SESSION_INTERRUPTED, SESSION_TOO_LARGE, STORE_UNAVAILABLE,
    status_and_message,
};

/// A session failure that answers with the right status (see the module docs), so
/// handlers can use `?` on session calls:
///
/// ```
/// use session_axum::{Session, SessionError};
///
/// async fn greet(session: Session) -> Result<String, SessionError> {
///     let name: Option<String> = session.get("name").await?;
///     Ok(format!("hello {}", name.as_deref().unwrap_or("stranger")))
/// }
/// ```
#[derive(Debug)]
pub struct SessionError(pub Error);

impl From<Error> for SessionError {
    fn from(e: Error) -> Self {
        SessionError(e)
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for SessionError {
    /// The response of [`error_response`], marked with [`DiscardSession`]: the
    /// middleware stores none of the request's session changes.
    fn into_response(self) -> axum::response::Response {
        let mut res = respond(&self.0, "handler", None);
        res.extensions_mut().insert(DiscardSession);
        res
    }
}

/// A response extension telling the middleware to store none of the request's session
/// changes and to send no new session cookie, whatever the status. [`SessionError`]
/// responses carry it, so a handler that stopped half-way through its session changes
/// (a sixth key refused by `max_keys = 5` after five were inserted) leaves the stored
/// session as it was. Responses with a 5xx status are never saved either (Django's
/// rule). An application answering session failures with its own error type can
/// insert it too:
///
/// ```
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Response};
/// use session_axum::error::DiscardSession;
///
/// fn refused() -> Response {
///     let mut res = (StatusCode::PAYLOAD_TOO_LARGE, "cart full").into_response();
///     res.extensions_mut().insert(DiscardSession);
///     res
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscardSession;

/// The default response for `err`: the status and message of [`status_and_message`]
/// as `text/plain`, with `Retry-After: 1` on a 503.
pub fn error_response(err: &Error) -> Response<Body> {
    session_http::error::error_response(err).map(Body::from)
}

/// Logs `err` and builds the default response.
pub(crate) fn respond(err: &Error, during: &'static str, session: Option<&str>) -> Response<Body> {
    log(err, during, session);
    error_response(err)
}

/// Builds the response for a failure the middleware met; see
/// [`crate::SessionLayerBuilder::error_response`].
#[derive(Clone)]
pub(crate) struct ErrorResponder(pub(crate) Arc<ErrorFn>);

/// What [`ErrorResponder`] calls.
pub(crate) type ErrorFn = dyn Fn(&Error) -> Response<Body> + Send + Sync + 'static;

impl Default for ErrorResponder {
    fn default() -> Self {
        ErrorResponder(Arc::new(error_response))
    }
}

impl fmt::Debug for ErrorResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorResponder(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_response_is_the_shared_one() {
        let res = error_response(&Error::backend("redis", "connection refused"));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[axum::http::header::RETRY_AFTER], "1");
        assert_eq!(status_and_message(&Error::NotFound).0, 400);
    }
}
