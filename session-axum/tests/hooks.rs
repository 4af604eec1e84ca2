//! Request hooks and lifecycle events over real HTTP: what each request reports, and
//! the events an application's audit subscriber receives.

mod common;

use std::sync::{Arc, Mutex};

use backend_cache::MemoryStore;
use common::*;
use session_axum::SessionLayer;
use session_core::events::{Events, SessionEvent};
use session_core::hooks::RequestOutcome;
use session_core::{SessionKey, SessionStore, StoreLayerExt};
use tokio::sync::broadcast::error::TryRecvError;

fn fp(set_cookie: &str) -> String {
    SessionKey::parse(&cookie_value(set_cookie))
        .expect("a session key")
        .fingerprint()
}

#[tokio::test]
async fn each_request_reports_what_its_session_did_and_events_follow() {
    let events = Events::new(64);
    let mut audit = events.subscribe();
    let store: Arc<dyn SessionStore> = MemoryStore::new().with_layer(events.layer());
    let seen: Arc<Mutex<Vec<RequestOutcome>>> = Arc::default();
    let layer = SessionLayer::builder(store.clone())
        .secure(false)
        .hook({
            let seen = seen.clone();
            move |o: &RequestOutcome| seen.lock().expect("lock").push(o.clone())
        })
        .hook(events.clone())
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let c = browser();
    let take = || std::mem::take(&mut *seen.lock().expect("lock"));

    // A new session: saved under a new key.
    let res = c
        .post(format!("{base}/set/cart/apple"))
        .send()
        .await
        .expect("set");
    let first = fp(&the_set_cookie(res.headers()));
    let o = take();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].actions().collect::<Vec<_>>(), ["saved", "created"]);
    assert_eq!(o[0].key_after.as_deref(), Some(first.as_str()));
    assert_eq!(o[0].status, 200);

    // Read and written.
    c.post(format!("{base}/incr")).send().await.expect("incr");
    assert_eq!(take()[0].actions().collect::<Vec<_>>(), ["loaded", "saved"]);

    // Nothing touched: nothing loaded, nothing saved.
    c.get(format!("{base}/untouched"))
        .send()
        .await
        .expect("get");
    let o = take();
    assert_eq!(o[0].actions().count(), 0);
    assert_eq!(o[0].key_before.as_deref(), Some(first.as_str()));
    assert_eq!(o[0].key_after.as_deref(), Some(first.as_str()));
    assert_eq!(o[0].status, 200);

    // Login: loaded, cycled, saved under the new key.
    let res = c
        .post(format!("{base}/login/ada"))
        .send()
        .await
        .expect("login");
    let second = fp(&the_set_cookie(res.headers()));
    let o = take();
    assert_eq!(
        o[0].actions().collect::<Vec<_>>(),
        ["loaded", "saved", "cycled"]
    );
    assert_eq!(o[0].key_before.as_deref(), Some(first.as_str()));
    assert_eq!(o[0].key_after.as_deref(), Some(second.as_str()));

    // Logout: flushed (without loading).
    c.post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    let o = take();
    assert_eq!(o[0].actions().collect::<Vec<_>>(), ["flushed"]);
    assert_eq!(o[0].key_after, None);

    // The logout race: the record vanishes before the save, which is refused.
    let res = bare()
        .post(format!("{base}/vanish"))
        .send()
        .await
        .expect("vanish");
    assert_eq!(res.status(), 400);
    let o = take();
    assert_eq!(o[0].actions().collect::<Vec<_>>(), ["refused_deleted"]);
    assert_eq!(o[0].status, 400);

    let mut got = Vec::new();
    loop {
        match audit.try_recv() {
            Ok(e) => got.push(e),
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let engine = store.engine().to_owned();
    let vanish_created = match &got[6] {
        SessionEvent::Created { session, .. } => session.clone(),
        other => panic!("expected the vanish route's session, got {other:?}"),
    };
    assert_eq!(
        got,
        [
            SessionEvent::Created {
                engine: engine.clone(),
                session: first.clone()
            },
            SessionEvent::Created {
                engine: engine.clone(),
                session: second.clone()
            },
            SessionEvent::Ended {
                engine: engine.clone(),
                session: first.clone()
            },
            SessionEvent::KeyCycled {
                from: Some(first.clone()),
                to: Some(second.clone())
            },
            SessionEvent::Ended {
                engine: engine.clone(),
                session: second.clone()
            },
            SessionEvent::Flushed {
                session: Some(second.clone())
            },
            SessionEvent::Created {
                engine: engine.clone(),
                session: vanish_created.clone()
            },
            SessionEvent::Ended {
                engine,
                session: vanish_created
            },
        ]
    );
}
