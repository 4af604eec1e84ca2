//! Traces over real HTTP: store calls and requests run in spans that name the session by
//! fingerprint, never by key.
//!
//! Alone in its test binary: `tracing` caches per call site whether anyone listens, and a
//! test of another file running at the same moment without this test's subscriber could
//! have the request span's call site cached as unheard.

mod common;

use std::sync::{Arc, Mutex};

use backend_cache::MemoryStore;
use common::*;
use session_axum::SessionLayer;
use session_core::{SessionKey, StoreLayerExt};

#[tokio::test]
async fn store_calls_and_requests_run_in_spans_that_name_the_session_by_fingerprint() {
    let logs: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = MemoryStore::new().with_layer(session_core::metrics::MetricsLayer);
    let layer = SessionLayer::builder(store)
        .secure(false)
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = SessionKey::parse(&cookie_value(&the_set_cookie(res.headers()))).expect("key");
    c.get(format!("{base}/get/a")).send().await.expect("get");

    // The request's span closes after its response is sent: wait (bounded) for it.
    let request_span = |text: &str| {
        text.lines().any(|l| {
            l.contains("session_request{")
                && l.contains("method=GET")
                && l.contains(&format!("session=\"{}\"", key.fingerprint()))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = String::from_utf8(logs.lock().expect("logs").clone()).expect("utf8");
        if request_span(&text) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let load = text
        .lines()
        .find(|l| l.contains("session_store{") && l.contains("operation=\"load\""))
        .unwrap_or_else(|| panic!("no span of the load: {text}"));
    assert!(load.contains("engine=\"memory\""), "{load}");
    assert!(
        load.contains(&format!("session=\"{}\"", key.fingerprint())),
        "{load}"
    );
    assert!(request_span(&text), "no span of the request: {text}");
    assert!(
        !text.contains(key.as_str()),
        "a session key leaked into the traces: {text}"
    );
}
