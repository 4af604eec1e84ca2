//! Session failures as actix-web responses: one mapping shared by the middleware (a
//! failed save at the end of the request) and by handlers (`session.get(..).await?`).
//!
//! The statuses are session-http's ([`session_http::error`]), the same for every
//! framework: 400 for a session deleted meanwhile (a concurrent logout), 409 for
//! conflicts that kept winning, 413 for a session over its limits, 503 (with
//! `Retry-After: 1`) for an unreachable store, 500 for anything else. Bodies are short
//! plain-text messages; details (never a session key) go to the log.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use session_core::Error;

pub use session_http::error::{
    SESSION_CONFLICT, SESSION_FAILED, SESSION_INTERRUPTED, SESSION_TOO_LARGE, STORE_UNAVAILABLE,
    status_and_message,
};

/// A session failure that answers with the right status, so handlers can use `?` on
/// session calls. Its response carries [`DiscardSession`]: the middleware stores none
/// of the request's session changes.
///
/// ```
/// use session_actix::{Session, SessionError};
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

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        actix_status(status_and_message(&self.0).0)
    }

    /// The response of [`error_response`], marked with [`DiscardSession`].
    fn error_response(&self) -> HttpResponse {
        session_http::error::log(&self.0, "handler", None);
        let mut res = error_response(&self.0);
        res.extensions_mut().insert(DiscardSession);
        res
    }
}

/// A response extension telling the middleware to store none of the request's session
/// changes and to send no new session cookie, whatever the status. [`SessionError`]
/// responses carry it, so a handler that stopped half-way through its session changes
/// leaves the stored session as it was. Responses with a 5xx status are never saved
/// either (Django's rule). An application answering session failures with its own
/// error type can insert it too:
///
/// ```
/// use actix_web::HttpResponse;
/// use session_actix::error::DiscardSession;
///
/// fn refused() -> HttpResponse {
///     let mut res = HttpResponse::PayloadTooLarge().body("cart full");
///     res.extensions_mut().insert(DiscardSession);
///     res
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscardSession;

/// The default response for `err` (session-http's
/// [`session_http::error::error_response`] as an [`HttpResponse`]).
pub fn error_response(err: &Error) -> HttpResponse {
    let shared = session_http::error::error_response(err);
    let mut res = HttpResponse::build(actix_status(shared.status()));
    for (name, value) in shared.headers() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            res.insert_header((n, v));
        }
    }
    res.body(*shared.body())
}

/// The actix-web status for an `http` 1 status (actix-web 4 is on `http` 0.2).
pub(crate) fn actix_status(status: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Builds the response for a failure the middleware met; see
/// [`crate::SessionMiddlewareBuilder::error_response`].
pub(crate) type ErrorFn = dyn Fn(&Error) -> HttpResponse + Send + Sync + 'static;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers_follow_the_shared_mapping() {
        let res = error_response(&Error::backend("redis", "connection refused"));
        assert_eq!(res.status(), 503);
        assert_eq!(
            res.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(
            res.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        let e = SessionError(Error::NotFound);
        assert_eq!(e.status_code(), 400);
        let res = ResponseError::error_response(&e);
        assert!(res.extensions().contains::<DiscardSession>());
    }
}
