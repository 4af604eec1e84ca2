//! Request hooks: what a framework adapter tells observers after each request.
//!
//! A middleware (axum/tower in `session-axum`, or any other framework's adapter)
//! builds one [`RequestOutcome`] per request once the response is decided, from the
//! session handle's flags ([`RequestOutcome::from_session`]) and what it did with the
//! response (saved, touched, refused), and calls every [`RequestHook`] it was given.
//! Hooks run on the request's task, after the response is built: they must be quick
//! and must not block (count, send on a bounded channel, log). The metrics hook
//! (`crate::metrics::MetricsHook`, feature `metrics`) and the lifecycle events
//! ([`crate::events::Events`]) are hooks; applications add their own.

use std::sync::Arc;

use crate::error::Error;
use crate::session::Session;

/// What happened to the session in one request. Built by the middleware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOutcome {
    /// A stored session was read (the request's key named a live record).
    pub loaded: bool,
    /// The session was written (created or updated).
    pub saved: bool,
    /// The save minted a new key (a new session).
    pub created: bool,
    /// The handler called `cycle_key`.
    pub cycled: bool,
    /// The handler called `flush`.
    pub flushed: bool,
    /// A read-only sliding session had its deadline moved.
    pub touched: bool,
    /// The save was refused because the session was deleted meanwhile (a concurrent
    /// logout): it was not resurrected.
    pub refused_deleted: bool,
    /// The save failed for another reason: the error's kind
    /// ([`error_kind`]'s names).
    pub save_failed: Option<&'static str>,
    /// Fingerprint of the key the request came with, when it named a live session.
    pub key_before: Option<String>,
    /// Fingerprint of the session's key after the request (`None` once flushed or
    /// when nothing was stored).
    pub key_after: Option<String>,
    /// The response's status code.
    pub status: u16,
}

impl RequestOutcome {
    /// The outcome as far as `session`'s own flags tell (loaded, cycled, flushed, the
    /// keys' fingerprints); the middleware sets the rest.
    pub fn from_session(session: &Session, status: u16) -> Self {
        RequestOutcome {
            loaded: session.loaded(),
            cycled: session.cycled(),
            flushed: session.flushed(),
            key_before: session.original_key().map(|k| k.fingerprint()),
            key_after: session.key().map(|k| k.fingerprint()),
            status,
            ..RequestOutcome::default()
        }
    }

    /// Records how a save ended.
    pub fn save_result(&mut self, result: Result<(), &Error>) {
        match result {
            Ok(()) => self.saved = true,
            Err(Error::NotFound) => self.refused_deleted = true,
            Err(e) => self.save_failed = Some(error_kind(e)),
        }
    }

    /// The action names this outcome counts under, in a fixed order: `loaded`,
    /// `saved`, `created`, `cycled`, `flushed`, `touched`, `refused_deleted`,
    /// `save_failed`.
    pub fn actions(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (self.loaded, "loaded"),
            (self.saved, "saved"),
            (self.created, "created"),
            (self.cycled, "cycled"),
            (self.flushed, "flushed"),
            (self.touched, "touched"),
            (self.refused_deleted, "refused_deleted"),
            (self.save_failed.is_some(), "save_failed"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// The error kind label of `e`: `timeout`, `backend`, `codec`, `limit`, `invalid_key`,
/// `value`, `key_collision`, `conflict`, `conflict_exhausted`, `not_found`,
/// `unsupported`, `config`, `invalid_principal`, `not_signed_in`.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound => "not_found",
        Error::Conflict { .. } => "conflict",
        Error::ConflictRetriesExhausted { .. } => "conflict_exhausted",
        Error::KeyCollision { .. } => "key_collision",
        Error::InvalidKey(_) => "invalid_key",
        Error::Codec(_) => "codec",
        Error::Value { .. } => "value",
        Error::Limit(_) => "limit",
        Error::InvalidPrincipal { .. } => "invalid_principal",
        Error::NotSignedIn => "not_signed_in",
        Error::Config { .. } | Error::UnknownEngine { .. } => "config",
        Error::Unsupported { .. } => "unsupported",
        Error::Timeout { .. } => "timeout",
        Error::Backend { .. } => "backend",
    }
}

/// An observer of requests, called by the middleware once per request with what the
/// session did. Must return quickly and never block.
pub trait RequestHook: Send + Sync + 'static {
    /// Called after the response is decided.
    fn on_request(&self, outcome: &RequestOutcome);
}

impl<F> RequestHook for F
where
    F: Fn(&RequestOutcome) + Send + Sync + 'static,
{
    fn on_request(&self, outcome: &RequestOutcome) {
        self(outcome)
    }
}

impl RequestHook for Arc<dyn RequestHook> {
    fn on_request(&self, outcome: &RequestOutcome) {
        (**self).on_request(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_list_what_happened() {
        let mut o = RequestOutcome {
            loaded: true,
            cycled: true,
            ..RequestOutcome::default()
        };
        o.save_result(Ok(()));
        assert_eq!(
            o.actions().collect::<Vec<_>>(),
            ["loaded", "saved", "cycled"]
        );
        let mut o = RequestOutcome::default();
        o.save_result(Err(&Error::NotFound));
        assert_eq!(o.actions().collect::<Vec<_>>(), ["refused_deleted"]);
        let mut o = RequestOutcome::default();
        o.save_result(Err(&Error::backend("x", "down")));
        assert_eq!(o.save_failed, Some("backend"));
        assert_eq!(o.actions().collect::<Vec<_>>(), ["save_failed"]);
    }
}
