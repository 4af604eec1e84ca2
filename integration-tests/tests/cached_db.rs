//! The conformance suite on cached_db compositions.

use std::sync::Arc;

use backend_cached_db::CachedDbStore;
use integration_tests::{StoreFactory, run_conformance};
use session_core::{BoxError, SessionStore};

struct MemoryOverMemory;

#[session_core::async_trait]
impl StoreFactory for MemoryOverMemory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(CachedDbStore::new(
            Arc::new(backend_cache::MemoryStore::new()),
            Arc::new(backend_cache::MemoryStore::new()),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_memory_over_memory_passes_the_conformance_suite() {
    run_conformance("cached_db(memory+memory)", &MemoryOverMemory)
        .await
        .assert_passed();
}
