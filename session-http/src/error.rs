//! Session failures as HTTP statuses: one mapping every framework adapter shares, for
//! a failed save at the end of a request and for handlers (`session.get(..).await?`).
//!
//! | error | status | why |
//! |---|---|---|
//! | [`Error::NotFound`] | 400 | the session was deleted meanwhile (a concurrent logout); Django's `SessionInterrupted` |
//! | [`Error::ConflictRetriesExhausted`] | 409 | concurrent writers kept winning; the client may retry |
//! | [`Error::Limit`], [`Error::Codec`] with [`CodecError::TooLarge`] | 413 | the session outgrew `max_encoded_size`, `max_keys` or the cookie engine's 4 KB; nothing was stored and no cookie is sent |
//! | [`Error::NotSignedIn`] | 401 | a user-index operation ("your devices", "sign out other devices") on an anonymous session |
//! | [`Error::Backend`], [`Error::Timeout`] | 503 | the store is unreachable; logged at `error` |
//! | anything else | 500 | logged at `error` |
//!
//! Bodies are short plain-text messages; details (which never include a session key)
//! go to the log. [`error_response`] is the default response as a plain
//! [`http::Response`]; adapters convert it to their framework's response type.

use http::{HeaderValue, Response, StatusCode, header};
use session_core::{CodecError, Error};

/// Django's `SessionInterrupted` message, answered with 400 when a save finds that the
/// session was deleted by a concurrent request.
pub const SESSION_INTERRUPTED: &str = "The request's session was deleted before the request \
completed. The user may have logged out in a concurrent request, for example.";

/// Answered with 409 when concurrent writers kept winning the version race.
pub const SESSION_CONFLICT: &str = "The session was changed by concurrent requests and this \
request's changes could not be applied. Please retry the request.";

/// Answered with 413 when the session grew past a size or key-count limit.
pub const SESSION_TOO_LARGE: &str = "The session grew too large to be stored; the change was \
not saved.";

/// Answered with 503 when the session store is unreachable.
pub const STORE_UNAVAILABLE: &str = "The session store is unavailable right now. Please retry \
shortly.";

/// Answered with 401 for a user-index operation on a session that is not signed in.
pub const NOT_SIGNED_IN: &str = "Sign in first: this needs a signed-in session.";

/// Answered with 500 for any other session failure.
pub const SESSION_FAILED: &str = "The session could not be processed.";

/// The status and body for `err`.
pub fn status_and_message(err: &Error) -> (StatusCode, &'static str) {
    match err {
        Error::NotFound => (StatusCode::BAD_REQUEST, SESSION_INTERRUPTED),
        Error::ConflictRetriesExhausted { .. } => (StatusCode::CONFLICT, SESSION_CONFLICT),
        Error::Limit(_) | Error::Codec(CodecError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, SESSION_TOO_LARGE)
        }
        Error::NotSignedIn => (StatusCode::UNAUTHORIZED, NOT_SIGNED_IN),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, SESSION_FAILED),
    }
}

/// The default response for `err`: the status and message of [`status_and_message`]
/// as `text/plain`, with `Retry-After: 1` on a 503.
pub fn error_response(err: &Error) -> Response<&'static str> {
    let (status, message) = status_and_message(err);
    let mut res = Response::new(message);
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

/// Logs `err` (with the session's fingerprint, never its key): `error` for failures
/// that answer 5xx, `warn` for refusals.
pub fn log(err: &Error, during: &'static str, session: Option<&str>) {
    let (status, _) = status_and_message(err);
    let session = session.unwrap_or("-");
    if status.is_server_error() {
        tracing::error!(%session, during, error = %err, status = status.as_u16(), "session failure");
    } else {
        tracing::warn!(%session, during, error = %err, status = status.as_u16(), "session request refused");
    }
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
        assert_eq!(status_and_message(&Error::Limit("big".into())).0, 413);
        let too_large = Error::Codec(CodecError::TooLarge { size: 10, limit: 5 });
        assert_eq!(status_and_message(&too_large).0, 413);
        assert_eq!(
            status_and_message(&Error::Codec(CodecError::Foreign)).0,
            500
        );
        let res = error_response(&Error::backend("redis", "down"));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(*res.body(), STORE_UNAVAILABLE);
    }
}
