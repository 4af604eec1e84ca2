//! The `metrics` layer over the memory engine, which hosts the layer's instruments in its
//! own calls: every call is counted once, the immediate way (the session handle's) and
//! the `async` way alike, and the calls no engine hosts are counted by the layer.

use std::sync::Arc;

use backend_cache::MemoryStore;
use metrics_exporter_prometheus::PrometheusBuilder;
use session_core::metrics::{MetricsLayer, publish};
use session_core::store::StoreCalls;
use session_core::{Record, SessionData, SessionKey, SessionStore, StoreLayer, Timestamp};

fn series(text: &str, operation: &str, outcome: &str) -> Option<f64> {
    let name = format!(
        "session_store_operations_total{{engine=\"memory\",operation=\"{operation}\",outcome=\"{outcome}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&name)?.parse().ok())
}

#[test]
fn every_call_of_the_memory_engine_is_counted_once_either_way() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let store = metrics::with_local_recorder(&recorder, || {
        MetricsLayer.layer(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>)
    });
    // The engine hosts the instruments: the session handle reaches it directly.
    assert!(format!("{store:?}").contains("hosted: true"), "{store:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Under the recorder: the expired-removed counter is registered when first counted.
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let record = Record::with_ttl(SessionData::new(), 60);
            let other = SessionKey::generate().expect("key");
            // The immediate way, as the session handle calls.
            let a = store.call_create(&record).await.expect("create");
            assert!(store.call_load(&a).await.expect("load").is_some());
            assert!(store.call_load(&other).await.expect("load").is_none());
            store
                .call_update(&a, &record, Some(1))
                .await
                .expect("update");
            let lost = store.call_update(&a, &record, Some(1)).await;
            assert!(lost.expect_err("conflict").is_conflict());
            // The async way.
            let b = store.create(&record).await.expect("create");
            assert!(store.load(&b).await.expect("load").is_some());
            assert!(store.exists(&b).await.expect("exists"));
            store.touch(&b, Timestamp::now()).await.expect("touch");
            assert!(store.delete(&a).await.expect("delete"));
            assert!(!store.delete(&a).await.expect("delete"));
            // `b` expired by the touch: the sweep removes it.
            assert_eq!(store.clear_expired().await.expect("clear"), 1);
            assert_eq!(store.count().await.expect("count"), 0);
        })
    });
    publish();
    let text = handle.render();
    for (operation, outcome, n) in [
        ("create", "created", 2.0),
        ("insert_new", "created", 0.0),
        ("load", "hit", 2.0),
        ("load", "miss", 1.0),
        ("update", "ok", 1.0),
        ("update", "conflict", 1.0),
        ("exists", "hit", 1.0),
        ("touch", "ok", 1.0),
        ("delete", "deleted", 1.0),
        ("delete", "absent", 1.0),
        ("clear_expired", "ok", 1.0),
        ("count", "ok", 1.0),
    ] {
        assert_eq!(
            series(&text, operation, outcome),
            Some(n),
            "{operation} {outcome}: {text}"
        );
    }
    assert!(
        text.contains("session_store_expired_removed_total{engine=\"memory\"} 1"),
        "{text}"
    );
}

#[test]
fn a_second_metrics_layer_wraps_the_engine_and_counts_too() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let store = metrics::with_local_recorder(&recorder, || {
        let inner = Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>;
        let first = MetricsLayer.layer(inner.clone());
        // The engine's instruments are taken: this one wraps it (and counts again, as
        // two layers of any store do).
        let second = MetricsLayer.layer(inner);
        assert!(
            format!("{second:?}").contains("hosted: false"),
            "{second:?}"
        );
        (first, second)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let key = SessionKey::generate().expect("key");
        assert!(store.1.call_load(&key).await.expect("load").is_none());
    });
    publish();
    assert_eq!(series(&handle.render(), "load", "miss"), Some(2.0));
}
