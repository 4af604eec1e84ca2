//! # session-actix
//!
//! Django's `request.session` for actix-web 4: a [`SessionMiddleware`] that gives every
//! request a lazy [`session_core::Session`] over any store (file, SQLite, PostgreSQL,
//! MariaDB, Redis, Redis Cluster, Memcached, cached_db, memory, or your own), and a
//! [`Session`] extractor to take it in handlers, with the same handle API as
//! session-axum's.
//!
//! The rules are session-http's ([`session_http::flow`]), shared with session-axum, so
//! the two middlewares cannot drift apart:
//!
//! - nothing is loaded until the handler touches the session;
//! - the session is saved and its cookie sent only when it was modified (or
//!   `save_every_request` is on), is not empty, the response status is below 500 and
//!   the response is not a [`SessionError`] (see [`error::DiscardSession`]);
//! - the cookie is deleted exactly when the request carried one and the session ended
//!   with no key and no data (after `flush()`, or for a key the store does not know);
//! - `Vary: Cookie` is sent whenever the session was accessed, saved or deleted;
//! - a save that finds the session deleted by a concurrent request (a logout) answers
//!   400 instead of resurrecting it; version conflicts are re-applied inside
//!   [`session_core::Session::save`]; conflicts that keep winning answer 409, a session
//!   over its size limits 413, an unreachable store 503 ([`error`]);
//! - the session cookie is found among cookies holding any bytes.
//!
//! Unlike actix-session (Redis and cookie stores only), any session store works, with
//! compare-and-set saves and the logout-race protection.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use actix_web::{App, HttpServer, web};
//! use backend_cache::MemoryStore;
//! use session_actix::{Session, SessionError, SessionMiddleware};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("{n} visits"))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let sessions = SessionMiddleware::builder(Arc::new(MemoryStore::new()))
//!         .secure(false) // plain-HTTP development only
//!         .build()
//!         .map_err(std::io::Error::other)?;
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(sessions.clone())
//!             .route("/", web::get().to(counter))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! [`SessionMiddleware::from_config`] builds the middleware from `Sessions.toml` and
//! `SESSION_*` variables, the same file and sections (`[cookie]`, `[middleware]`) as
//! session-axum's `SessionLayer::from_config`.
//!
//! ## Security
//!
//! - **Login:** call `session.cycle_key().await?` when a user logs in (or gains
//!   privileges), `session.flush().await?` on logout.
//! - A key the client sends that the store does not know is never adopted. Malformed
//!   or badly signed cookies cost no store I/O. Session keys never appear in logs.
//! - The cookie is `Secure`, `HttpOnly` and `SameSite=Lax` by default; the optional
//!   `__Host-` prefix pins it to the exact host; HMAC-SHA256 signing with key rotation.
//! - Serving: actix-web's `HttpServer` has its own limits (`client_request_timeout`,
//!   `keep_alive`, `max_connections`, `shutdown_timeout`); set them for a public server.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
mod extract;
mod middleware;

pub use error::SessionError;
pub use extract::{MissingSessionMiddleware, Session};
pub use middleware::{SessionMiddleware, SessionMiddlewareBuilder, SessionService};
pub use session_http::{CookieConfig, MiddlewareConfig, SameSite, config, cookie_engine};

/// Registers the `cookie` engine name with `registry` (see [`session_http::register`]).
pub fn register(registry: &session_core::EngineRegistry) {
    session_http::register(registry);
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
