//! The conformance suite on the in-process `memory` engine.

use std::sync::Arc;

use integration_tests::{StoreFactory, run_conformance};
use session_core::{BoxError, SessionStore};

struct Memory;

#[session_core::async_trait]
impl StoreFactory for Memory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(backend_cache::MemoryStore::new()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_conformance_suite() {
    run_conformance("memory", &Memory).await.assert_passed();
}
