//! Session failures as HTTP responses: one mapping shared by the middleware (a failed
//! save at the end of the request) and by handlers (`session.get(..).await?`).
//!
//! | error | status | why |
//! |---|---|---|
//! | [`Error::NotFound`] | 400 | the session was deleted meanwhile (a concurrent logout); Django's `SessionInterrupted` |
//! | [`Error::ConflictRetriesExhausted`] | 409 | concurrent writers kept winning; the client may retry |
//! | [`Error::Backend`], [`Error::Timeout`] | 503 | the store is unreachable; logged at `error` |
//! | anything else | 500 | logged at `error` |
//!
//! Bodies are short plain-text messages; details (which never include a session key)
//! go to the log.

use std::fmt;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;
use session_core::Error;

/// Django's `SessionInterrupted` message, answered with 400 when a save finds that the
/// session was deleted by a concurrent request.
pub const SESSION_INTERRUPTED: &str = "The request's session was deleted before the request \
completed. The user may have logged out in a concurrent request, for example.";

/// Answered with 409 when concurrent writers kept winning the version race.
pub const SESSION_CONFLICT: &str = "The session was changed by concurrent requests and this \
request's changes could not be applied. Please retry the request.";

/// Answered with 503 when the session store is unreachable.
pub const STORE_UNAVAILABLE: &str = "The session store is unavailable right now. Please retry \
shortly.";

/// Answered with 500 for any other session failure.
pub const SESSION_FAILED: &str = "The session could not be processed.";

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
    fn into_response(self) -> axum::response::Response {
        respond(&self.0, "handler", None)
    }
}

/// The status and body for `err`.
pub fn status_and_message(err: &Error) -> (StatusCode, &'static str) {
    match err {
        Error::NotFound => (StatusCode::BAD_REQUEST, SESSION_INTERRUPTED),
        Error::ConflictRetriesExhausted { .. } => (StatusCode::CONFLICT, SESSION_CONFLICT),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, SESSION_FAILED),
    }
}

/// Logs `err` (with the session's fingerprint, never its key) and builds the response.
pub(crate) fn respond(err: &Error, during: &'static str, session: Option<&str>) -> Response<Body> {
    let (status, message) = status_and_message(err);
    let session = session.unwrap_or("-");
    if status.is_server_error() {
        tracing::error!(%session, during, error = %err, status = status.as_u16(), "session failure");
    } else {
        tracing::warn!(%session, during, error = %err, status = status.as_u16(), "session request refused");
    }
    let mut res = Response::new(Body::from(message));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_and_message(&Error::NotFound).0, 400);
        assert_eq!(
            status_and_message(&Error::ConflictRetriesExhausted { attempts: 3 }).0,
            409
        );
        assert_eq!(
            status_and_message(&Error::backend("redis", "connection refused")).0,
            503
        );
        assert_eq!(status_and_message(&Error::Limit("big".into())).0, 500);
    }
}
