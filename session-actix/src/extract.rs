//! The actix-web extractor: `session: Session` in a handler's arguments.
//!
//! [`Session`] is a thin newtype over [`session_core::Session`] (Rust's orphan rule
//! forbids implementing actix-web's extractor trait on the core type here); it
//! dereferences to it, so every core method is called directly on it, exactly as with
//! session-axum's `Session`.

use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

/// The request's session, taken as a handler argument.
///
/// ```
/// use session_actix::{Session, SessionError};
///
/// async fn login(session: Session) -> Result<&'static str, SessionError> {
///     // Against session fixation: a fresh key at every privilege change.
///     session.cycle_key().await?;
///     session.insert("user_id", &42).await?;
///     Ok("welcome")
/// }
///
/// async fn logout(session: Session) -> Result<&'static str, SessionError> {
///     // Deletes the record; the middleware then deletes the cookie.
///     session.flush().await?;
///     Ok("bye")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Session(session_core::Session);

impl Session {
    /// The core handle (for code written against `session-core` alone).
    pub fn into_inner(self) -> session_core::Session {
        self.0
    }
}

impl Deref for Session {
    type Target = session_core::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromRequest for Session {
    type Error = MissingSessionMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<session_core::Session>()
                .cloned()
                .map(Session)
                .ok_or(MissingSessionMiddleware),
        )
    }
}

/// The extractor's rejection: the route is not behind a [`crate::SessionMiddleware`].
/// Answers 500 (a wiring mistake, not the client's).
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionMiddleware;

impl std::fmt::Display for MissingSessionMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "this route takes a Session but no SessionMiddleware is installed: \
             add `.wrap(SessionMiddleware::..)` to the app",
        )
    }
}

impl std::error::Error for MissingSessionMiddleware {}

impl ResponseError for MissingSessionMiddleware {
    fn error_response(&self) -> HttpResponse {
        tracing::error!("{self}");
        HttpResponse::InternalServerError().body("Sessions are not configured on this route.")
    }
}
