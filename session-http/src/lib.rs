//! # session-http
//!
//! The framework-independent HTTP rules of Django-style sessions, over plain [`http`]
//! types, so every framework adapter (`session-axum` for axum and tower,
//! `session-actix` for actix-web) applies the same rules and adds nothing but plumbing:
//!
//! - [`SessionRules::start`]: the session cookie is found among `Cookie` headers read
//!   as bytes (other cookies may hold any bytes; a session cookie that is not visible
//!   ASCII is a malformed key), checked (and, with signing keys, verified) without
//!   store I/O, and turned into a lazy [`session_core::Session`];
//! - [`SessionRules::finish`]: Django's `SessionMiddleware` response rules — the
//!   session is saved and its cookie sent only when it was modified (or
//!   `save_every_request` is on), is not empty, the status is below 500 and the
//!   adapter was not told to discard it; the deleting cookie goes out exactly when the
//!   request carried one and the session ended empty; `Vary: Cookie` whenever the
//!   session was accessed, saved or deleted; a save that finds the session deleted by
//!   a concurrent logout fails with [`session_core::Error::NotFound`] (400, see
//!   [`error`]) instead of resurrecting it; the touch policy for read-only sliding
//!   sessions ([`flow`] has the full list);
//! - [`config`]: the `[cookie]` and `[middleware]` sections of `Sessions.toml`, checked
//!   once at build time; `Set-Cookie` headers in Django's exact byte form;
//! - HMAC-SHA256 signing of the cookie value with key rotation (sign with the first
//!   key, accept any), bound to the cookie name and use;
//! - the [`cookie_engine`]: the whole session in a signed cookie.
//!
//! ## Example
//!
//! An adapter's whole job, with a handler that fills a cart:
//!
//! ```
//! use std::sync::Arc;
//! use backend_cache::MemoryStore;
//! use http::{HeaderMap, HeaderValue, StatusCode, header};
//! use session_http::SessionRules;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let rules = SessionRules::builder(Arc::new(MemoryStore::new())).build()?;
//!
//! let mut request_headers = HeaderMap::new();
//! request_headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
//! let request = rules.start_from_headers(&request_headers);
//! request.session().insert("cart", &vec![1, 2, 3]).await?; // the handler
//!
//! let mut response_headers = HeaderMap::new();
//! match rules.finish(&request, StatusCode::OK, false).await {
//!     Ok(changes) => changes.apply(&mut response_headers),
//!     // A failed save: answer with the adapter's error response instead.
//!     Err(e) => panic!("{}", session_http::error::status_and_message(&e).1),
//! }
//! assert_eq!(response_headers["vary"], "Cookie");
//! # Ok(()) }
//! ```
//!
//! ## Security
//!
//! - A key the client sends that the store does not know is never adopted: the next
//!   save mints a new one. Malformed or badly signed cookies cost no store I/O.
//! - Session keys never appear in logs; log lines carry
//!   [`session_core::SessionKey::fingerprint`].
//! - The cookie is `Secure`, `HttpOnly` and `SameSite=Lax` by default; the optional
//!   `__Host-` prefix pins it to the exact host.
//! - The [`cookie_engine`] keeps data in the client: readable by it, not revocable,
//!   limited to 4 KB.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod cookie_engine;
pub mod error;
pub mod flow;
mod rules;
mod set_cookie;
mod signing;

pub use config::{CookieConfig, MiddlewareConfig, SameSite};
pub use flow::{RequestSession, ResponseChanges, needs_vary_cookie, vary_on_cookie};
pub use rules::{SessionRules, SessionRulesBuilder};

use session_core::{EngineRegistry, Error, SessionStore};

/// Registers the `cookie` engine name, so that a registry-wide listing (and an
/// `engine = "cookie"` configuration built by something other than a middleware's
/// `from_config`) explains itself: the cookie engine is not a store, only the
/// middleware can run it. Its `[cookie]` and `[middleware]` sections are validated.
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        cookie_engine::ENGINE,
        |_ctx: session_core::EngineContext| async move {
            Err::<std::sync::Arc<dyn SessionStore>, _>(Error::config(
                "engine",
                "the cookie engine keeps sessions in the client's cookie, not in a store: \
             build it with the middleware's from_config (session_axum::SessionLayer::from_config, \
             session_actix::SessionMiddleware::from_config)",
            ))
        },
        |ctx: &session_core::EngineContext| {
            ctx.section::<CookieConfig>("cookie")?;
            ctx.section::<MiddlewareConfig>("middleware").map(drop)
        },
    );
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
