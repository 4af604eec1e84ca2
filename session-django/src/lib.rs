//! # session-django
//!
//! Share sessions with a running Django application: read and write Django's own
//! session stores, so a visitor signed in on one side is signed in on the other, with
//! one cookie (`sessionid`) on one domain.
//!
//! - [`signing`]: Django's signed format (`django.core.signing` with the sessions salt,
//!   SHA-256, compact ASCII JSON, zlib as Django applies it), with `SECRET_KEY` and
//!   `SECRET_KEY_FALLBACKS`. Tampered or foreign-key data is a typed error
//!   ([`session_core::codec::CodecError::BadSignature`]).
//! - [`mod@format`]: Django's session dict and our records (`_session_expiry` becomes the
//!   record's expiry policy), and [`AuthUser`] for `django.contrib.auth`'s keys.
//! - [`db`]: Django's `django_session` table (engine `django_db`).
//! - [`cache`]: Django's Redis cache layout, pickled values (engine `django_cache`).
//! - [`mod@file`]: Django's session files (engine `django_file`).
//! - [`cached_db`]: both, as Django's `cached_db` engine keeps them (engine
//!   `django_cached_db`).
//!
//! ## Why a crate of its own
//!
//! Django's layouts are not a codec choice on our engines: the table has no version
//! column and stores a datetime, not milliseconds; the cache value is a pickle, not an
//! encoded record, under a key built by Django's cache framework. Each engine here is a
//! small store over the same pools and clients (`backend-db`'s [`backend_db::DbPool`],
//! `redis`), registered under its own name, so the existing engines keep their formats.
//!
//! ```no_run
//! use std::sync::Arc;
//! use session_core::{Session, SessionSettings};
//! use session_django::{AuthUser, db::DjangoDbConfig};
//!
//! # async fn run(cookie: Option<session_core::SessionKey>) -> session_core::Result<()> {
//! let config = DjangoDbConfig {
//!     url: "postgres://app@127.0.0.1/app".into(),
//!     secrets: session_django::DjangoSecrets {
//!         secret_key: "the Django SECRET_KEY".into(),
//!         secret_key_fallbacks: vec![],
//!     },
//!     ..DjangoDbConfig::default()
//! };
//! let store = Arc::new(config.build().await?);
//! let session = Session::new(store, Arc::new(SessionSettings::default()), cookie);
//! if let Some(user) = AuthUser::from_data(&session.load().await?) {
//!     println!("signed in on the Django side as user {}", user.id);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
pub mod cached_db;
pub mod db;
pub mod file;
pub mod format;
pub mod signing;

pub use format::{AuthUser, DjangoFormat, DjangoSecrets};
pub use signing::{Signer, SigningError};

use std::sync::Arc;

use session_core::{EngineContext, EngineRegistry};

/// Registers the engines `django_db` (section `django_db`, [`db::DjangoDbConfig`]),
/// `django_cache` (section `django_cache`, [`cache::DjangoCacheConfig`]), `django_file`
/// (section `django_file`, [`file::DjangoFileConfig`]) and
/// `django_cached_db` (section `django_cached_db`, [`cached_db::DjangoCachedDbConfig`]).
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        db::ENGINE,
        |ctx: EngineContext| async move {
            let config: db::DjangoDbConfig = ctx.section(db::ENGINE)?;
            let store = config.build().await.map_err(|e| ctx.locate(e))?;
            Ok(Arc::new(store) as Arc<dyn session_core::SessionStore>)
        },
        |ctx: &EngineContext| {
            let config: db::DjangoDbConfig = ctx.section(db::ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
    registry.register_checked(
        cache::ENGINE,
        |ctx: EngineContext| async move {
            let config: cache::DjangoCacheConfig = ctx.section(cache::ENGINE)?;
            let store = config.build().await.map_err(|e| ctx.locate(e))?;
            Ok(Arc::new(store) as Arc<dyn session_core::SessionStore>)
        },
        |ctx: &EngineContext| {
            let config: cache::DjangoCacheConfig = ctx.section(cache::ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
    registry.register_checked(
        file::ENGINE,
        |ctx: EngineContext| async move {
            let config: file::DjangoFileConfig = ctx.section(file::ENGINE)?;
            let store = config.build().map_err(|e| ctx.locate(e))?;
            Ok(Arc::new(store) as Arc<dyn session_core::SessionStore>)
        },
        |ctx: &EngineContext| {
            let config: file::DjangoFileConfig = ctx.section(file::ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
    registry.register_checked(
        cached_db::ENGINE,
        |ctx: EngineContext| async move {
            let config: cached_db::DjangoCachedDbConfig = ctx.section(cached_db::ENGINE)?;
            let store = config.build().await.map_err(|e| ctx.locate(e))?;
            Ok(Arc::new(store) as Arc<dyn session_core::SessionStore>)
        },
        |ctx: &EngineContext| {
            let config: cached_db::DjangoCachedDbConfig = ctx.section(cached_db::ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
}

/// The README's examples, compiled as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
