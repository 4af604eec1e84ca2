//! The background cleanup against a real store: two app instances sweeping one
//! directory at once remove every expired record exactly once, keep every live one,
//! and stop when told.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_file::FileStore;
use session_core::cleanup::{Cleanup, CleanupOptions};
use session_core::events::{Events, SessionEvent};
use session_core::{Record, SessionData, SessionKey, SessionStore, Timestamp};
use tokio::sync::broadcast::error::TryRecvError;

const EXPIRED: u64 = 120;
const LIVE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sweep_one_store_without_harm_and_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two stores on one directory: two app instances sharing their sessions.
    let a: Arc<dyn SessionStore> = Arc::new(FileStore::new(dir.path()).expect("store a"));
    let b: Arc<dyn SessionStore> = Arc::new(FileStore::new(dir.path()).expect("store b"));

    let mut past = Record::with_ttl(SessionData::new(), 60);
    past.expires_at = Timestamp::now().add_secs(-30);
    for _ in 0..EXPIRED {
        a.insert_new(&SessionKey::generate().expect("key"), &past)
            .await
            .expect("seed expired");
    }
    let mut live = Vec::new();
    for _ in 0..LIVE {
        live.push(
            a.create(&Record::with_ttl(SessionData::new(), 3600))
                .await
                .expect("seed live"),
        );
    }
    assert_eq!(a.count().await.expect("count"), EXPIRED + LIVE as u64);

    let events = Events::new(4096);
    let mut expired = events.subscribe();
    let options = CleanupOptions::every(Duration::from_millis(20))
        .jitter(Duration::from_millis(15))
        .batch(7)
        .run_timeout(Duration::from_secs(5));
    let ha = Cleanup::new(a.clone(), options.clone())
        .events(events.clone())
        .spawn();
    let hb = Cleanup::new(b.clone(), options)
        .events(events.clone())
        .spawn();

    // Every expired record reported removed, across both instances. (Waiting for the
    // store to hold only the live records is not enough: a run reports what it removed
    // after its last batch, and stopping it in between loses that report.)
    let mut removed = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while removed < EXPIRED || a.count().await.expect("count") > LIVE as u64 {
        assert!(
            Instant::now() < deadline,
            "the cleanup did not remove and report the expired records within 10 s \
             ({removed} of {EXPIRED} reported)"
        );
        removed += drain(&mut expired);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        ha.stop().await;
        hb.stop().await;
    })
    .await
    .expect("both tasks stop promptly");

    for k in &live {
        assert!(
            b.load(k).await.expect("load").is_some(),
            "a live record was swept"
        );
    }
    // ... and exactly once: nothing more is reported after the stop.
    removed += drain(&mut expired);
    assert_eq!(removed, EXPIRED);
}

/// The records the `Expired` events received so far report removed.
fn drain(events: &mut tokio::sync::broadcast::Receiver<SessionEvent>) -> u64 {
    let mut removed = 0;
    loop {
        match events.try_recv() {
            Ok(SessionEvent::Expired { engine, count }) => {
                assert_eq!(engine, "file");
                removed += count;
            }
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(TryRecvError::Empty) => return removed,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn dropping_the_handle_stops_the_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn SessionStore> = Arc::new(FileStore::new(dir.path()).expect("store"));
    let handle = Cleanup::new(
        store.clone(),
        CleanupOptions::every(Duration::from_millis(5)),
    )
    .spawn();
    assert!(!handle.is_finished());
    drop(handle);
    // The task is aborted: the store's only other owner is this test.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 {
        assert!(
            Instant::now() < deadline,
            "the aborted task still holds the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
