//! The user index through the store layers an application stacks on the memory engine:
//! the events layer publishes `Revoked` for the sessions the index ends, the metrics
//! layer forwards the index, and the timeout layer bounds its calls.

use std::sync::Arc;
use std::time::Duration;

use backend_cache::MemoryStore;
use session_core::events::{Events, SessionEvent};
use session_core::metrics::MetricsLayer;
use session_core::{
    Error, Session, SessionSettings, SessionStore, StoreLayerExt, TimeoutLayer, UserIndex,
};

async fn signed_in(store: &Arc<dyn SessionStore>, who: &str) -> Session {
    let s = Session::new(store.clone(), Arc::new(SessionSettings::default()), None);
    s.login(who, Some("h")).await.expect("login");
    s
}

#[tokio::test]
async fn ending_sessions_through_the_events_layer_publishes_revoked() {
    let events = Events::new(64);
    let store: Arc<dyn SessionStore> = MemoryStore::new()
        .with_layer(MetricsLayer)
        .with_layer(events.layer());
    let here = signed_in(&store, "ada").await;
    let _phone = signed_in(&store, "ada").await;
    let _laptop = signed_in(&store, "ada").await;
    let _other = signed_in(&store, "bob").await;
    let mut audit = events.subscribe();

    assert_eq!(here.user_sessions().await.expect("list").len(), 3);
    assert_eq!(here.end_other_sessions().await.expect("end"), 2);
    let revoked = loop {
        match audit.try_recv().expect("an event was published") {
            e @ SessionEvent::Revoked { .. } => break e,
            _ => continue,
        }
    };
    assert_eq!(
        revoked,
        SessionEvent::Revoked {
            engine: "memory".into(),
            principal: "ada".into(),
            count: 2,
        }
    );
    // Nothing ended, nothing published.
    assert!(!here.end_user_session("no-such-id").await.expect("end"));
    assert!(
        std::iter::from_fn(|| audit.try_recv().ok())
            .all(|e| !matches!(e, SessionEvent::Revoked { .. })),
        "no Revoked for an id that ended nothing"
    );
    let index = store.user_index().expect("the layers forward the index");
    assert_eq!(index.count_of("ada").await.expect("count"), 1);
    assert_eq!(index.count_of("bob").await.expect("count"), 1);
}

#[tokio::test]
async fn the_timeout_layer_bounds_index_calls_and_refuses_bad_principals() {
    let store: Arc<dyn SessionStore> =
        MemoryStore::new().with_layer(TimeoutLayer::new(Duration::from_secs(2)));
    let s = signed_in(&store, "ada").await;
    let index: &dyn UserIndex = store.user_index().expect("forwarded");
    let listed = index
        .sessions_of("ada", s.key().as_ref())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current);
    let err = index
        .sessions_of("", None)
        .await
        .expect_err("empty principal");
    assert!(matches!(err, Error::InvalidPrincipal { .. }), "{err}");
    assert_eq!(index.end_sessions("ada", None).await.expect("end"), 1);
    assert_eq!(s.principal().await.expect("principal"), Some("ada".into()));
    s.insert("n", &1).await.expect("insert");
    let err = s.save().await.expect_err("ended meanwhile");
    assert!(err.is_not_found(), "{err}");
}
