//! The cases, one module per category, and the helpers they share.
//!
//! Timing rules every case follows, so that stores with second-granularity deadlines
//! (Memcached) and server-side TTLs (Redis) pass for the right reasons: a record meant
//! to be live has at least 60 s left, a record meant to be expired is at least 60 s in
//! the past, and deadlines read back are compared with [`TOLERANCE_MS`]. No case sleeps
//! waiting for a deadline: expired records are written with deadlines already past.

mod bad_input;
mod concurrency;
mod django;
mod expiry;
mod listing;
mod store;
mod users;
mod values;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_core::{
    Capabilities, Record, Session, SessionData, SessionKey, SessionSettings, Timestamp,
};

use crate::{Case, Ctx as CaseCtx};

/// Fails the case with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// Turns any `Result` into the case's error type, with context.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Builds a [`Case`] from an `async fn name(ctx: &Ctx) -> CaseResult`.
macro_rules! case {
    ($cat:ident, $f:path) => {
        case!($cat, $f, $crate::cases::always)
    };
    ($cat:ident, $f:path, $applies:expr) => {
        $crate::Case {
            name: stringify!($f),
            category: $crate::Category::$cat,
            applies: $applies,
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}
pub(crate) use case;

pub(crate) fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(store::cases());
    v.extend(expiry::cases());
    v.extend(django::cases());
    v.extend(values::cases());
    v.extend(concurrency::cases());
    v.extend(bad_input::cases());
    v.extend(listing::cases());
    v.extend(users::cases());
    v
}

/// How far a deadline read back may be from the one written: stores may keep whole
/// seconds (Memcached, SQL `TIMESTAMP(0)`) or derive it from a TTL at read time.
pub(crate) const TOLERANCE_MS: i64 = 1_500;

/// Seconds a "live" record has left: far above any store's granularity.
pub(crate) const LIVE_SECS: i64 = 3_600;

/// Seconds an "expired" record is past its deadline.
pub(crate) const EXPIRED_SECS: i64 = 60;

/// The longest a concurrency case may take before it is declared hung.
pub(crate) const CONCURRENCY_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) fn always(_: &Capabilities) -> bool {
    true
}

pub(crate) fn compare_and_set(c: &Capabilities) -> bool {
    c.compare_and_set
}

pub(crate) fn key() -> SessionKey {
    SessionKey::generate().expect("OS randomness")
}

/// A key made of one repeated character of the key alphabet.
pub(crate) fn key_of(c: char) -> SessionKey {
    SessionKey::parse(&c.to_string().repeat(session_core::key::KEY_LEN))
        .expect("a repeated alphabet character is a valid key")
}

pub(crate) fn data(pairs: &[(&str, serde_json::Value)]) -> SessionData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A live record (an hour left) with the given data.
pub(crate) fn record(pairs: &[(&str, serde_json::Value)]) -> Record {
    Record::with_ttl(data(pairs), LIVE_SECS)
}

/// A live record holding `data`.
pub(crate) fn record_of(data: SessionData) -> Record {
    Record::with_ttl(data, LIVE_SECS)
}

pub(crate) fn sample() -> Record {
    record(&[("user_id", json!(101)), ("name", json!("Zoë"))])
}

/// A record whose deadline passed a minute ago.
pub(crate) fn expired(pairs: &[(&str, serde_json::Value)]) -> Record {
    let mut r = record(pairs);
    r.expires_at = Timestamp::now().add_secs(-EXPIRED_SECS);
    r
}

/// `t` moved to `ms` milliseconds past its whole second (`0 < ms < 1000`): a value a
/// store keeping whole seconds cannot give back unchanged, whatever the clock read.
pub(crate) fn millis_past_second(t: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(t.as_unix_millis().div_euclid(1000) * 1000 + ms)
}

/// Whether two deadlines agree within [`TOLERANCE_MS`].
pub(crate) fn near(a: Timestamp, b: Timestamp) -> bool {
    a.millis_until(b).abs() <= TOLERANCE_MS
}

/// The live record under `key`, or a failure naming `what`.
pub(crate) async fn must_load(ctx: &CaseCtx, k: &SessionKey, what: &str) -> Result<Record, String> {
    ctx.store
        .load(k)
        .await
        .ctx(what)?
        .ok_or_else(|| format!("{what}: the record is missing"))
}

/// A session handle on `key` over the case's store and settings.
pub(crate) fn handle(ctx: &CaseCtx, k: Option<SessionKey>) -> Session {
    Session::new(ctx.store.clone(), ctx.settings.clone(), k)
}

/// The case's settings with `f` applied.
pub(crate) fn settings_with(
    ctx: &CaseCtx,
    f: impl FnOnce(&mut SessionSettings),
) -> Arc<SessionSettings> {
    let mut s = SessionSettings::clone(&ctx.settings);
    f(&mut s);
    Arc::new(s)
}

/// A session saved under a fresh key holding `pairs`; returns its key.
pub(crate) async fn saved_session(
    ctx: &CaseCtx,
    pairs: &[(&str, serde_json::Value)],
) -> Result<SessionKey, String> {
    let s = handle(ctx, None);
    for (k, v) in pairs {
        s.insert_value(k, v.clone()).await.ctx("insert")?;
    }
    s.save().await.ctx("save")?;
    s.key()
        .ok_or_else(|| "a saved session has no key".to_owned())
}

/// Fails unless `res` is [`session_core::Error::NotFound`].
pub(crate) fn expect_not_found<T: std::fmt::Debug>(
    res: session_core::Result<T>,
    what: &str,
) -> Result<(), String> {
    match res {
        Err(session_core::Error::NotFound) => Ok(()),
        other => Err(format!("{what} gave {other:?}, wanted NotFound")),
    }
}
