//! [`TowerSessionsStore`]: tower-sessions' `SessionStore` and `ExpiredDeletion` over any
//! of our stores.
//!
//! Each tower-sessions call becomes one call of our store's contract:
//!
//! | tower-sessions | our store | why |
//! |---|---|---|
//! | `create` | `insert_new`; on a taken key, a fresh [`Id`] and again | atomic, never overwrites (tower-sessions asks the store to re-roll) |
//! | `save` | `update` (never an upsert) | a session deleted meanwhile stays deleted |
//! | `load` | `load` | missing **or expired** is `None` |
//! | `delete` | `delete` | idempotent |
//! | `delete_expired` | `clear_expired` | the engine's own sweep |

use std::sync::Arc;

use async_trait::async_trait;
use session_core::store::MAX_CREATE_ATTEMPTS;
use session_core::{
    Config, EngineRegistry, Expiry, Inserted, Record, SessionData, SessionSettings, Timestamp,
};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record as TowerRecord};
use tower_sessions_core::session_store::{self, ExpiredDeletion};

use crate::id::key_for_id;

/// What [`TowerSessionsStore`]'s `save` does when the session is no longer in the store
/// (deleted by a concurrent request, typically a logout in another tab, or expired
/// since this request loaded it).
///
/// In neither case is the session written back: tower-sessions' `save` carries the
/// whole record, and writing it would bring a logged-out session back to life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeletedSession {
    /// `save` fails with a backend error saying the session was deleted meanwhile.
    /// tower-sessions' layer answers such a request with 500 and sends no cookie;
    /// the next request with the old cookie finds no session.
    #[default]
    Fail,
    /// `save` succeeds without writing (logged at `warn`). The response goes out as
    /// the handler made it, with a cookie naming a session that does not exist: the
    /// next request with it finds no session and starts a fresh one.
    Discard,
}

/// One of our stores (file, SQL, Redis, Memcached, `cached_db`, ...) as a
/// tower-sessions [`SessionStore`](tower_sessions_core::SessionStore).
///
/// Cheap to clone (an `Arc` inside); see the [crate docs](crate) for what each call
/// guarantees.
#[derive(Clone, Debug)]
pub struct TowerSessionsStore {
    inner: Arc<dyn session_core::SessionStore>,
    on_deleted: DeletedSession,
    max_keys: usize,
}

impl TowerSessionsStore {
    /// Serves tower-sessions from `store`.
    pub fn new(store: Arc<dyn session_core::SessionStore>) -> Self {
        TowerSessionsStore {
            inner: store,
            on_deleted: DeletedSession::default(),
            max_keys: SessionSettings::default().max_keys,
        }
    }

    /// The store `config` selects, built through `registry` after
    /// [`EngineRegistry::validate`] (unknown keys, bad values and engines missing from
    /// the registry are configuration errors before anything connects). Layers named in
    /// the configuration (`hash_keys`, `timeout`, ...) are applied as for our own
    /// middleware, and so are `codec`, `encryption` and `max_encoded_size` (by the
    /// store) and `max_keys` (by this adapter). The `[cookie]`, `[middleware]` and
    /// `[expiry]` sections are our middleware's and mean nothing here:
    /// tower-sessions' `SessionManagerLayer` sets the cookie and the expiry.
    pub async fn from_config(
        config: &Config,
        registry: &EngineRegistry,
    ) -> session_core::Result<Self> {
        registry.validate(config)?;
        let max_keys = config.settings()?.max_keys;
        Ok(Self::new(registry.build(config).await?).max_keys(max_keys))
    }

    /// With at most `max_keys` keys per session (default 10,000, as our `max_keys`
    /// setting): a `create` or `save` of a larger session is an encode error and writes
    /// nothing.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// With `policy` for a `save` that finds its session gone (default
    /// [`DeletedSession::Fail`]).
    pub fn on_deleted(mut self, policy: DeletedSession) -> Self {
        self.on_deleted = policy;
        self
    }

    /// The store underneath, for operator tasks (`count`, `list`, maintenance).
    pub fn inner(&self) -> &Arc<dyn session_core::SessionStore> {
        &self.inner
    }

    fn engine(&self) -> &str {
        self.inner.engine()
    }

    /// Our record for `record`, or an encode error when it holds too many keys.
    fn checked_record(&self, record: &TowerRecord) -> session_store::Result<Record> {
        if record.data.len() > self.max_keys {
            return Err(store_error(
                session_core::Error::Limit(format!(
                    "the session holds {} keys, more than max_keys = {}",
                    record.data.len(),
                    self.max_keys
                )),
                true,
            ));
        }
        Ok(to_record(record))
    }
}

/// Our record for a tower-sessions record: the data, a fixed deadline at its
/// `expiry_date` (to the millisecond, rounded down) and `created_at` now.
fn to_record(record: &TowerRecord) -> Record {
    let now = Timestamp::now();
    let expires_at = to_timestamp(record.expiry_date);
    let data: SessionData = record
        .data
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Record {
        data,
        expiry: Expiry::At(expires_at),
        created_at: now,
        expires_at,
        version: 1,
        meta: Default::default(),
    }
}

fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    // OffsetDateTime spans years -9999..=9999: a few 10^14 ms, far inside i64.
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(if millis < 0 {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn to_offset_date_time(t: Timestamp) -> session_store::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_unix_millis()) * 1_000_000).map_err(
        |e| {
            session_store::Error::Decode(format!(
                "the session's deadline ({} ms after the Unix epoch) is outside what \
                 tower-sessions can represent: {e}",
                t.as_unix_millis()
            ))
        },
    )
}

/// The whole chain of `err`, for tower-sessions' string errors.
fn describe(err: &session_core::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Our error as tower-sessions' error: codec and size-limit failures as encode errors
/// on the way in (`encoding`) and decode errors on the way out, the rest as backend
/// errors, each with its full cause.
fn store_error(err: session_core::Error, encoding: bool) -> session_store::Error {
    use session_core::Error as E;
    let text = describe(&err);
    match err {
        E::Codec(_) | E::Value { .. } | E::Limit(_) if encoding => {
            session_store::Error::Encode(text)
        }
        E::Codec(_) | E::Value { .. } => session_store::Error::Decode(text),
        _ => session_store::Error::Backend(text),
    }
}

fn key_error(err: session_core::KeyError) -> session_store::Error {
    session_store::Error::Backend(format!("session id could not be mapped to a key: {err}"))
}

#[async_trait]
impl tower_sessions_core::SessionStore for TowerSessionsStore {
    async fn create(&self, record: &mut TowerRecord) -> session_store::Result<()> {
        let ours = self.checked_record(record)?;
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let key = key_for_id(record.id).map_err(key_error)?;
            match self
                .inner
                .insert_new(&key, &ours)
                .await
                .map_err(|e| store_error(e, true))?
            {
                Inserted::Created => return Ok(()),
                Inserted::KeyTaken => {
                    tracing::debug!(
                        engine = self.engine(),
                        "tower-sessions id collision; minting another id"
                    );
                    record.id = Id::default();
                }
            }
        }
        Err(store_error(
            session_core::Error::KeyCollision {
                attempts: MAX_CREATE_ATTEMPTS,
            },
            true,
        ))
    }

    async fn save(&self, record: &TowerRecord) -> session_store::Result<()> {
        let key = key_for_id(record.id).map_err(key_error)?;
        let ours = self.checked_record(record)?;
        match self.inner.update(&key, &ours, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => match self.on_deleted {
                DeletedSession::Fail => Err(session_store::Error::Backend(format!(
                    "session #{} was not saved: it was deleted (perhaps by a logout in a \
                     concurrent request) or expired after this request loaded it, and saving \
                     would bring it back",
                    key.fingerprint()
                ))),
                DeletedSession::Discard => {
                    tracing::warn!(
                        engine = self.engine(),
                        session = %key.fingerprint(),
                        "session deleted or expired while the request ran; not saved, so it \
                         stays deleted"
                    );
                    Ok(())
                }
            },
            Err(e) => Err(store_error(e, true)),
        }
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<TowerRecord>> {
        let key = key_for_id(*session_id).map_err(key_error)?;
        let Some(record) = self
            .inner
            .load(&key)
            .await
            .map_err(|e| store_error(e, false))?
        else {
            return Ok(None);
        };
        Ok(Some(TowerRecord {
            id: *session_id,
            data: record.data.into_iter().collect(),
            expiry_date: to_offset_date_time(record.expires_at)?,
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let key = key_for_id(*session_id).map_err(key_error)?;
        self.inner
            .delete(&key)
            .await
            .map(drop)
            .map_err(|e| store_error(e, false))
    }
}

#[async_trait]
impl ExpiredDeletion for TowerSessionsStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let removed = self
            .inner
            .clear_expired()
            .await
            .map_err(|e| store_error(e, false))?;
        tracing::debug!(engine = self.engine(), removed, "expired sessions removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_keep_the_millisecond() {
        let t =
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("in range");
        let ts = to_timestamp(t);
        assert_eq!(ts.as_unix_millis(), 1_700_000_000_123);
        assert_eq!(
            to_offset_date_time(ts)
                .expect("in range")
                .unix_timestamp_nanos(),
            1_700_000_000_123_000_000
        );
        // Before the epoch, rounding is still down (towards the past).
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1).expect("in range");
        assert_eq!(to_timestamp(before).as_unix_millis(), -1);
    }

    #[test]
    fn a_deadline_tower_sessions_cannot_hold_is_a_decode_error() {
        let far = Timestamp::from_unix_millis(i64::MAX);
        assert!(matches!(
            to_offset_date_time(far),
            Err(session_store::Error::Decode(_))
        ));
    }
}
