//! Expiry with Django's semantics, plus an absolute timeout.
//!
//! The app states a policy ([`Expiry`]); the settings ([`ExpirySettings`]) turn it into an
//! absolute server-side instant at every save. Django's rules:
//! - no custom expiry: the default age (two weeks), renewed at every save (sliding);
//! - `set_expiry(0)`: the cookie lasts until the browser closes; server-side the default
//!   age still applies, so an abandoned session is cleaned up;
//! - `set_expiry(n)` seconds: a sliding idle timeout of `n` seconds (negative: already expired);
//! - an instant or a duration from now: a fixed deadline.
//!
//! On top, `absolute_timeout_secs` caps a session's whole life since its creation, whatever
//! the policy, as OWASP's session management cheat sheet asks.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Django's `SESSION_COOKIE_AGE`: two weeks, in seconds.
pub const DEFAULT_AGE_SECS: i64 = 1_209_600;

/// The expiry policy an application set on a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// No custom expiry: the configured default age, renewed at every save.
    #[default]
    Default,
    /// Until the browser closes (`set_expiry(0)` in Django): no `Max-Age` on the cookie.
    BrowserClose,
    /// A sliding idle timeout of this many seconds, renewed at every save.
    Idle(i64),
    /// A fixed deadline.
    At(Timestamp),
}

impl Expiry {
    /// Django's integer form: `0` means browser close, anything else a sliding timeout.
    pub fn seconds(secs: i64) -> Self {
        if secs == 0 {
            Expiry::BrowserClose
        } else {
            Expiry::Idle(secs)
        }
    }

    /// A fixed deadline `d` from now (Django's `timedelta` form).
    pub fn after(d: Duration) -> Self {
        Expiry::At(Timestamp::now().add_duration(d))
    }

    /// A fixed deadline (Django's `datetime` form).
    pub fn at(t: SystemTime) -> Self {
        Expiry::At(Timestamp::from_system_time(t))
    }
}

/// How policies become deadlines. Part of [`crate::SessionSettings`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpirySettings {
    /// Default lifetime in seconds (Django's `SESSION_COOKIE_AGE`).
    pub default_age_secs: i64,
    /// Whether sessions without a custom expiry end when the browser closes.
    pub expire_at_browser_close: bool,
    /// Maximum lifetime since creation, whatever the policy; `None` for no cap.
    pub absolute_timeout_secs: Option<i64>,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        ExpirySettings {
            default_age_secs: DEFAULT_AGE_SECS,
            expire_at_browser_close: false,
            absolute_timeout_secs: None,
        }
    }
}

impl ExpirySettings {
    /// Seconds left at `now` (Django's `get_expiry_age`), capped by the absolute timeout.
    pub fn age_secs(&self, policy: Expiry, now: Timestamp, created_at: Timestamp) -> i64 {
        let age = match policy {
            Expiry::Default | Expiry::BrowserClose => self.default_age_secs,
            Expiry::Idle(n) => n,
            Expiry::At(t) => now.secs_until(t),
        };
        match self.absolute_deadline(created_at) {
            Some(cap) => age.min(now.secs_until(cap)),
            None => age,
        }
    }

    /// The server-side deadline for a save at `now` (Django's `get_expiry_date`).
    pub fn expires_at(&self, policy: Expiry, now: Timestamp, created_at: Timestamp) -> Timestamp {
        let deadline = match policy {
            Expiry::Default | Expiry::BrowserClose => now.add_secs(self.default_age_secs),
            Expiry::Idle(n) => now.add_secs(n),
            Expiry::At(t) => t,
        };
        match self.absolute_deadline(created_at) {
            Some(cap) => deadline.min(cap),
            None => deadline,
        }
    }

    /// Whether the cookie should be a browser-session cookie (no `Max-Age`).
    pub fn expire_at_browser_close(&self, policy: Expiry) -> bool {
        match policy {
            Expiry::Default => self.expire_at_browser_close,
            Expiry::BrowserClose => true,
            Expiry::Idle(_) | Expiry::At(_) => false,
        }
    }

    fn absolute_deadline(&self, created_at: Timestamp) -> Option<Timestamp> {
        self.absolute_timeout_secs.map(|a| created_at.add_secs(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000)
    }

    #[test]
    fn default_expiry_is_cookie_age_and_survives_browser_close() {
        let s = ExpirySettings::default();
        assert_eq!(s.age_secs(Expiry::Default, m(), m()), 1_209_600);
        assert_eq!(s.age_secs(Expiry::seconds(0), m(), m()), 1_209_600);
        assert_eq!(
            s.expires_at(Expiry::Default, m(), m()),
            m().add_secs(1_209_600)
        );
    }

    #[test]
    fn custom_seconds_are_relative_to_the_modification() {
        let s = ExpirySettings::default();
        assert_eq!(Expiry::seconds(10), Expiry::Idle(10));
        let later = m().add_secs(1000);
        assert_eq!(s.age_secs(Expiry::seconds(10), later, m()), 10);
        assert_eq!(
            s.expires_at(Expiry::seconds(10), later, m()),
            later.add_secs(10)
        );
        assert_eq!(s.age_secs(Expiry::seconds(-10), m(), m()), -10);
    }

    #[test]
    fn datetime_and_timedelta() {
        let s = ExpirySettings::default();
        let at = Expiry::At(m().add_secs(10));
        assert_eq!(s.age_secs(at, m(), m()), 10);
        assert_eq!(s.expires_at(at, m().add_secs(5), m()), m().add_secs(10));
        // A deadline in the past gives a negative age.
        assert_eq!(s.age_secs(Expiry::At(m().add_secs(-10)), m(), m()), -10);
        let after = Expiry::after(Duration::from_secs(10));
        let age = s.age_secs(after, Timestamp::now(), Timestamp::now());
        assert!((9..=10).contains(&age), "{age}");
        let sys = m().add_secs(77).to_system_time();
        assert_eq!(Expiry::at(sys), Expiry::At(m().add_secs(77)));
    }

    #[test]
    fn browser_close_rules_follow_django() {
        let off = ExpirySettings::default();
        let on = ExpirySettings {
            expire_at_browser_close: true,
            ..ExpirySettings::default()
        };
        assert!(!off.expire_at_browser_close(Expiry::seconds(10)));
        assert!(off.expire_at_browser_close(Expiry::seconds(0)));
        assert!(!off.expire_at_browser_close(Expiry::Default));
        assert!(!on.expire_at_browser_close(Expiry::seconds(10)));
        assert!(on.expire_at_browser_close(Expiry::seconds(0)));
        assert!(on.expire_at_browser_close(Expiry::Default));
    }

    #[test]
    fn absolute_timeout_caps_idle_renewal() {
        let s = ExpirySettings {
            default_age_secs: 600,
            absolute_timeout_secs: Some(3600),
            ..ExpirySettings::default()
        };
        let created = m();
        // Early on, the idle timeout is the binding one.
        assert_eq!(
            s.age_secs(Expiry::Default, created.add_secs(60), created),
            600
        );
        // Near the end, renewal cannot push past creation + 3600.
        let late = created.add_secs(3300);
        assert_eq!(s.age_secs(Expiry::Default, late, created), 300);
        assert_eq!(
            s.expires_at(Expiry::Default, late, created),
            created.add_secs(3600)
        );
        // A far deadline is capped too.
        let far = Expiry::At(created.add_secs(86_400));
        assert_eq!(s.expires_at(far, created, created), created.add_secs(3600));
    }
}
