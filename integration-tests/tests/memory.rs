//! The conformance suite on the in-process `memory` engine: once built directly, once
//! built by name from configuration through the engine registry (`ConfigFactory`).
//!
//! `memory` keeps decoded records, not bytes, so the corrupt-bytes cases (which need
//! `SessionStore::raw`) are reported as not applicable here; they run on the byte-keeping
//! store in `suite_self_test.rs` and on every server-backed engine.

use std::sync::Arc;
use std::time::Instant;

use integration_tests::{ConfigFactory, StoreFactory, run_conformance};
use session_core::{BoxError, Config, EngineRegistry, SessionStore};

struct Memory;

#[session_core::async_trait]
impl StoreFactory for Memory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(backend_cache::MemoryStore::new()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_conformance_suite() {
    let started = Instant::now();
    let report = run_conformance("memory", &Memory).await;
    println!("conformance[memory] took {:?}", started.elapsed());
    report.assert_pinned(201, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_from_config_passes_the_conformance_suite() {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    // Each call builds a new, empty in-process store: a fresh namespace per case.
    let factory = ConfigFactory::new(registry, || {
        Config::from_toml("engine = \"memory\"\n[memory]\nmax_entries = 100000\n")
    });
    run_conformance("memory (from config)", &factory)
        .await
        .assert_pinned(201, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_wearing_the_metrics_and_events_layers_passes_the_conformance_suite() {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    // The layers forward every operation unchanged: the same cases pass.
    session_core::events::Events::new(16).register(&registry);
    let factory = ConfigFactory::new(registry, || {
        Config::from_toml("engine = \"memory\"\nlayers = [\"metrics\", \"events\"]\n")
    });
    run_conformance("memory (metrics, events layers)", &factory)
        .await
        .assert_pinned(201, 12);
}
