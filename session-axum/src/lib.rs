//! # session-axum
//!
//! Django's `request.session` for axum and tower: a [`SessionLayer`] that gives every
//! request a lazy [`session_core::Session`] over any store, and a [`Session`] extractor
//! to take it in handlers. The middleware follows Django's `SessionMiddleware` rules:
//!
//! - nothing is loaded until the handler touches the session;
//! - the session is saved and its cookie sent only when it was modified (or
//!   `save_every_request` is on), is not empty, the response status is below 500 and
//!   the response is not a [`SessionError`] (see [`error::DiscardSession`]);
//! - the cookie is deleted exactly when the request carried one and the session ended
//!   with no key and no data (after `flush()`, or for a key the store does not know);
//! - `Vary: Cookie` is sent whenever the session was accessed, saved or deleted, and
//!   always with a session cookie (CVE-2026-35192);
//! - a save that finds the session deleted by a concurrent request (a logout) answers
//!   400 instead of resurrecting it; version conflicts are re-applied inside
//!   [`session_core::Session::save`], so two requests changing different keys both keep
//!   their work; conflicts that keep winning answer 409, a session over its size
//!   limits 413, an unreachable store 503 ([`error`];
//!   [`SessionLayerBuilder::error_response`] shapes these responses);
//! - the session cookie is found among cookies holding any bytes; a session cookie
//!   that is not ASCII is a malformed key (a fresh session, the deleting cookie).
//!
//! These rules are session-http's ([`session_http`]), shared with every other framework
//! adapter; this crate is the tower and axum plumbing around them.
//!
//! Sessions live in any [`session_core::SessionStore`] (`Arc<dyn SessionStore>`), chosen
//! in code or by `Sessions.toml` ([`SessionLayer::from_config`]), or in the cookie itself
//! with the signed [`cookie_engine`]. Cookie and middleware settings are in [`config`].
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use backend_cache::MemoryStore;
//! use session_axum::{Session, SessionError, SessionLayer};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("{n} visits"))
//! }
//!
//! # fn main() -> session_core::Result<()> {
//! let layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
//!     .secure(false) // plain-HTTP development only
//!     .build()?;
//! let app: Router = Router::new().route("/", get(counter)).layer(layer);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! ## Security
//!
//! - **Login:** call `session.cycle_key().await?` when a user logs in (or gains
//!   privileges): the data moves to a fresh key and the old record is deleted, so a key
//!   planted before login (session fixation) is worthless afterwards. Call
//!   `session.flush().await?` on logout.
//! - A key the client sends that the store does not know is never adopted: the next
//!   save mints a new one. Malformed or badly signed cookies cost no store I/O.
//! - Session keys never appear in logs; log lines carry
//!   [`session_core::SessionKey::fingerprint`] (8 hex digits of its SHA-256).
//! - The cookie is `Secure`, `HttpOnly` and `SameSite=Lax` by default; the optional
//!   `__Host-` prefix also pins it to the exact host. Optional HMAC-SHA256 signing of
//!   the value supports key rotation (sign with the first key, accept any).
//! - The [`cookie_engine`] keeps data in the client: readable by it, not revocable,
//!   limited to 4 KB. Prefer a server-side store for anything sensitive.
//! - Serving: `axum::serve` has no timeouts or connection limit; with the `serve`
//!   feature, [`serve()`](crate::serve::serve) adds them (see [`mod@serve`] docs).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use session_http::{config, cookie_engine};
pub mod error;
mod extract;
mod layer;
#[cfg(feature = "serve")]
pub mod serve;
mod service;

pub use config::{CookieConfig, MiddlewareConfig, SameSite};
pub use error::SessionError;
pub use extract::{MissingSessionLayer, Session};
pub use layer::{SessionLayer, SessionLayerBuilder};
#[cfg(feature = "serve")]
pub use serve::{ServeOptions, serve};
pub use service::{ResponseFuture, SessionService};

use session_core::EngineRegistry;

/// Registers the `cookie` engine name, so that a registry-wide listing (and an
/// `engine = "cookie"` configuration built by something other than
/// [`SessionLayer::from_config`]) explains itself: the cookie engine is not a store,
/// only the middleware can run it. (The same as [`session_http::register`].)
pub fn register(registry: &EngineRegistry) {
    session_http::register(registry);
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
