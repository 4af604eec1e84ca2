//! Lifecycle events: an application subscribes to sessions being created, cycled,
//! flushed, ended and expired, for audit logs and the like (Spring Session's
//! `SessionCreatedEvent`/`SessionDeletedEvent`/`SessionExpiredEvent`, Django's signals).
//!
//! [`Events`] is the bus. It sees the store through a layer ([`Events::layer`],
//! registered as the `events` layer by [`Events::register`]) and the requests through
//! a request hook (it implements [`RequestHook`]):
//!
//! | event | published when | by |
//! |---|---|---|
//! | [`SessionEvent::Created`] | a record is written under a new key (a new session, or the new key of a cycle) | layer |
//! | [`SessionEvent::Ended`] | a `delete` removed a record (a logout's flush, the old key of a cycle, a revocation by the application or an operator) | layer |
//! | [`SessionEvent::Expired`] | `clear_expired` (or the background cleanup) removed expired records: how many, since no engine reports which | layer, cleanup |
//! | [`SessionEvent::KeyCycled`] | a request's handler called `cycle_key` | hook |
//! | [`SessionEvent::Flushed`] | a request's handler called `flush` | hook |
//! | [`SessionEvent::Revoked`] | sessions of a principal were ended through the user index ([`crate::users`]): whose, and how many | layer |
//!
//! A logout therefore publishes `Ended` (the store's side) and `Flushed` (the
//! request's side); a login's cycle publishes `Created`, `Ended` and `KeyCycled`.
//! Records that expire without a sweep (a read finds them past their deadline, a Redis
//! or Memcached TTL drops them) publish nothing: the engine cannot tell.
//!
//! Events name sessions by [`SessionKey::fingerprint`], never by key.
//!
//! ## Delivery
//!
//! In-process only, over a bounded [`tokio::sync::broadcast`] channel: publishing never
//! waits and never fails a request. Each subscriber ([`Events::subscribe`]) receives
//! every event published after it subscribed, once, in order, unless it falls more
//! than the channel's capacity behind: then its next `recv` returns
//! [`broadcast::error::RecvError::Lagged`] with the number of events it missed, and it
//! goes on with the oldest still held. Events published with no subscriber are
//! dropped. Nothing survives a restart; several processes each see their own events
//! (a session created in one process and ended in another publishes `Created` in the
//! first and `Ended` in the second).
//!
//! ```
//! use std::sync::Arc;
//! use backend_cache_stub::MemStore;
//! # mod backend_cache_stub {
//! #     use session_core::*;
//! #     #[derive(Debug, Default)]
//! #     pub struct MemStore(std::sync::Mutex<std::collections::HashMap<String, Record>>);
//! #     #[session_core::async_trait]
//! #     impl SessionStore for MemStore {
//! #         fn engine(&self) -> &str { "mem" }
//! #         fn capabilities(&self) -> Capabilities { Capabilities::none() }
//! #         async fn insert_new(&self, k: &SessionKey, r: &Record) -> Result<Inserted> {
//! #             self.0.lock().unwrap().insert(k.as_str().into(), r.clone()); Ok(Inserted::Created)
//! #         }
//! #         async fn load(&self, k: &SessionKey) -> Result<Option<Record>> { Ok(self.0.lock().unwrap().get(k.as_str()).cloned()) }
//! #         async fn update(&self, _: &SessionKey, _: &Record, _: Option<u64>) -> Result<u64> { unimplemented!() }
//! #         async fn delete(&self, k: &SessionKey) -> Result<bool> { Ok(self.0.lock().unwrap().remove(k.as_str()).is_some()) }
//! #         async fn touch(&self, _: &SessionKey, _: Timestamp) -> Result<()> { unimplemented!() }
//! #         async fn exists(&self, _: &SessionKey) -> Result<bool> { unimplemented!() }
//! #         async fn clear_expired(&self) -> Result<u64> { Ok(0) }
//! #     }
//! # }
//! use session_core::events::{Events, SessionEvent};
//! use session_core::{Record, SessionData, SessionStore, StoreLayerExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let events = Events::new(1024);
//! let mut audit = events.subscribe();
//! let store = MemStore::default().with_layer(events.layer());
//!
//! let key = store.create(&Record::with_ttl(SessionData::new(), 60)).await?;
//! store.delete(&key).await?;
//! assert_eq!(
//!     audit.recv().await.unwrap(),
//!     SessionEvent::Created { engine: "mem".into(), session: key.fingerprint() }
//! );
//! assert!(matches!(audit.recv().await.unwrap(), SessionEvent::Ended { .. }));
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::hooks::{RequestHook, RequestOutcome};
use crate::key::SessionKey;
use crate::layer::StoreLayer;
use crate::lazy::LazyRecord;
use crate::maintenance::Maintenance;
use crate::record::Record;
use crate::registry::{EngineRegistry, LayerContext};
use crate::store::{Capabilities, Inserted, RawAccess, SessionStore};
use crate::time::Timestamp;
use crate::users::{UserIndex, UserSession, index_of};

/// The layer name [`Events::register`] registers.
pub const EVENTS_LAYER: &str = "events";

/// A session lifecycle event. Sessions are named by key fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A record was written under a new key.
    Created {
        /// The store's engine.
        engine: String,
        /// The new key's fingerprint.
        session: String,
    },
    /// A record was deleted.
    Ended {
        /// The store's engine.
        engine: String,
        /// The deleted key's fingerprint.
        session: String,
    },
    /// A sweep removed `count` expired records.
    Expired {
        /// The store's engine.
        engine: String,
        /// How many records were removed.
        count: u64,
    },
    /// A request moved its session to a new key (`cycle_key`, at login).
    KeyCycled {
        /// The old key's fingerprint, when the session had one.
        from: Option<String>,
        /// The new key's fingerprint, when the session was saved under one.
        to: Option<String>,
    },
    /// A request flushed its session (logout).
    Flushed {
        /// The flushed key's fingerprint, when the request came with one.
        session: Option<String>,
    },
    /// Sessions of a principal were ended through the store's user index ("sign out
    /// other devices", an administrator's revocation, `sessions revoke --user`).
    Revoked {
        /// The store's engine.
        engine: String,
        /// The principal (the application's user id) whose sessions ended.
        principal: String,
        /// How many sessions ended.
        count: u64,
    },
}

/// The event bus: a bounded in-process broadcast. Cheap to clone (clones share the
/// channel). See the [module docs](self) for what is published and how it is delivered.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<SessionEvent>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl Events {
    /// A bus holding up to `capacity` events (at least 1) for its slowest subscriber.
    pub fn new(capacity: usize) -> Self {
        Events {
            tx: broadcast::Sender::new(capacity.max(1)),
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.tx.subscribe()
    }

    /// Publishes `event` to the current subscribers; never waits. Dropped when there is
    /// none.
    pub fn publish(&self, event: SessionEvent) {
        // An error only means nobody listens.
        let _ = self.tx.send(event);
    }

    /// The store layer that publishes `Created`, `Ended` and `Expired`.
    pub fn layer(&self) -> EventsLayer {
        EventsLayer {
            events: self.clone(),
        }
    }

    /// Registers this bus's layer as `events` in `registry`, so a configuration wears it
    /// with `layers = ["events"]` (no options).
    pub fn register(&self, registry: &EngineRegistry) {
        let events = self.clone();
        registry.register_layer(EVENTS_LAYER, move |_: &LayerContext| Ok(events.layer()));
    }
}

impl RequestHook for Events {
    fn on_request(&self, outcome: &RequestOutcome) {
        if outcome.cycled {
            self.publish(SessionEvent::KeyCycled {
                from: outcome.key_before.clone(),
                to: outcome.key_after.clone(),
            });
        }
        if outcome.flushed {
            self.publish(SessionEvent::Flushed {
                session: outcome.key_before.clone(),
            });
        }
    }
}

/// The store side of [`Events`] ([`Events::layer`]).
#[derive(Clone, Debug)]
pub struct EventsLayer {
    events: Events,
}

impl StoreLayer for EventsLayer {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(EventsStore {
            inner,
            events: self.events.clone(),
        })
    }
}

/// A store wearing an [`EventsLayer`].
#[derive(Debug)]
pub struct EventsStore {
    inner: Arc<dyn SessionStore>,
    events: Events,
}

impl EventsStore {
    fn created(&self, key: &SessionKey) {
        self.events.publish(SessionEvent::Created {
            engine: self.inner.engine().to_owned(),
            session: key.fingerprint(),
        });
    }
}

#[async_trait]
impl SessionStore for EventsStore {
    fn engine(&self) -> &str {
        self.inner.engine()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let inserted = self.inner.insert_new(key, record).await?;
        if inserted == Inserted::Created {
            self.created(key);
        }
        Ok(inserted)
    }

    async fn create(&self, record: &Record) -> Result<SessionKey> {
        let key = self.inner.create(record).await?;
        self.created(&key);
        Ok(key)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key).await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.inner.load_lazy(key).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.inner.update(key, record, expected_version).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let deleted = self.inner.delete(key).await?;
        if deleted {
            self.events.publish(SessionEvent::Ended {
                engine: self.inner.engine().to_owned(),
                session: key.fingerprint(),
            });
        }
        Ok(deleted)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.inner.touch(key, expires_at).await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn clear_expired(&self) -> Result<u64> {
        let count = self.inner.clear_expired().await?;
        if count > 0 {
            self.events.publish(SessionEvent::Expired {
                engine: self.inner.engine().to_owned(),
                count,
            });
        }
        Ok(count)
    }

    async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.inner.list(after, limit).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner.raw()
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        self.inner.maintenance()
    }

    /// The inner store's index, publishing [`SessionEvent::Revoked`] for the sessions
    /// it ends.
    fn user_index(&self) -> Option<&dyn UserIndex> {
        self.inner.user_index().map(|_| self as &dyn UserIndex)
    }
}

impl EventsStore {
    fn revoked(&self, principal: &str, count: u64) {
        if count > 0 {
            self.events.publish(SessionEvent::Revoked {
                engine: self.inner.engine().to_owned(),
                principal: principal.to_owned(),
                count,
            });
        }
    }
}

#[async_trait]
impl UserIndex for EventsStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        index_of(self.inner.as_ref())?
            .sessions_of(principal, current)
            .await
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        let ended = index_of(self.inner.as_ref())?
            .end_session(principal, id)
            .await?;
        self.revoked(principal, u64::from(ended));
        Ok(ended)
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        let count = index_of(self.inner.as_ref())?
            .end_sessions(principal, keep)
            .await?;
        self.revoked(principal, count);
        Ok(count)
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        index_of(self.inner.as_ref())?.count_of(principal).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    #[test]
    fn a_slow_subscriber_is_told_what_it_missed_and_publishing_never_waits() {
        let events = Events::new(2);
        let mut rx = events.subscribe();
        for n in 0..5 {
            events.publish(SessionEvent::Expired {
                engine: "e".into(),
                count: n,
            });
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(3))));
        assert!(matches!(
            rx.try_recv(),
            Ok(SessionEvent::Expired { count: 3, .. })
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(SessionEvent::Expired { count: 4, .. })
        ));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(rx);
        // No subscriber: dropped, not an error.
        events.publish(SessionEvent::Flushed { session: None });
        let _ = RecvError::Closed;
    }

    #[test]
    fn the_hook_publishes_cycles_and_flushes() {
        let events = Events::new(8);
        let mut rx = events.subscribe();
        events.on_request(&RequestOutcome {
            cycled: true,
            key_before: Some("aaaa".into()),
            key_after: Some("bbbb".into()),
            ..RequestOutcome::default()
        });
        events.on_request(&RequestOutcome {
            flushed: true,
            key_before: Some("bbbb".into()),
            ..RequestOutcome::default()
        });
        events.on_request(&RequestOutcome::default());
        assert_eq!(
            rx.try_recv().expect("cycle"),
            SessionEvent::KeyCycled {
                from: Some("aaaa".into()),
                to: Some("bbbb".into())
            }
        );
        assert_eq!(
            rx.try_recv().expect("flush"),
            SessionEvent::Flushed {
                session: Some("bbbb".into())
            }
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn register_makes_the_layer_configurable() {
        let config = Config::from_toml("engine = \"x\"\nlayers = [\"events\"]");
        let registry = EngineRegistry::new();
        let err = registry.validate(&config).expect_err("not registered");
        assert!(err.to_string().contains("unknown layer `events`"), "{err}");
        Events::new(4).register(&registry);
        // Now only the engine, which nobody registered here, is unknown.
        let err = registry.validate(&config).expect_err("no engine x");
        assert!(matches!(err, crate::Error::UnknownEngine { .. }), "{err}");
    }
}
