//! The axum extractor: `session: Session` in a handler's arguments.
//!
//! [`Session`] is a thin newtype over [`session_core::Session`] (Rust's orphan rule
//! forbids implementing axum's extractor trait on the core type here); it dereferences
//! to it, so every core method is called directly on it.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

/// The request's session, taken as a handler argument.
///
/// ```
/// use session_axum::{Session, SessionError};
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

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<session_core::Session>()
            .cloned()
            .map(Session)
            .ok_or(MissingSessionLayer)
    }
}

/// The extractor's rejection: the route is not behind a [`crate::SessionLayer`].
/// Answers 500 (a wiring mistake, not the client's).
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

impl std::fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "this route takes a Session but no SessionLayer is installed: \
             add `.layer(SessionLayer::..)` to the router",
        )
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Sessions are not configured on this route.",
        )
            .into_response()
    }
}
