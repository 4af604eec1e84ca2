//! The cases, one module per category.

mod store;

use serde_json::json;
use session_core::{Capabilities, Record, SessionData, SessionKey, Timestamp};

use crate::{Case, Category};

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
        case!($cat, $f, |_| true)
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
    v
}

pub(crate) fn always(_: &Capabilities) -> bool {
    true
}

pub(crate) fn key() -> SessionKey {
    SessionKey::generate().expect("OS randomness")
}

pub(crate) fn data(pairs: &[(&str, serde_json::Value)]) -> SessionData {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

pub(crate) fn record(pairs: &[(&str, serde_json::Value)]) -> Record {
    Record::with_ttl(data(pairs), 3600)
}

pub(crate) fn sample() -> Record {
    record(&[("user_id", json!(101)), ("name", json!("Zoë"))])
}

pub(crate) fn expired(pairs: &[(&str, serde_json::Value)]) -> Record {
    let mut r = record(pairs);
    r.expires_at = Timestamp::now().add_secs(-10);
    r
}

#[allow(dead_code)]
pub(crate) fn category_names() -> Vec<Category> {
    vec![
        Category::Store,
        Category::Expiry,
        Category::Django,
        Category::Values,
        Category::Concurrency,
        Category::BadInput,
        Category::Listing,
    ]
}
