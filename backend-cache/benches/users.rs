//! Benchmarks of the cache stores' per-user index.
//!
//! ```text
//! cargo bench -p backend-cache --bench users
//! ```
//!
//! - `memory_anonymous`: create, load and update of anonymous sessions on the memory
//!   engine (the hot path the index must leave alone).

use std::hint::black_box;
use std::sync::Arc;

use backend_cache::MemoryStore;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use session_core::{Record, SessionData, SessionStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small anonymous record (a cart), one hour to live.
fn anonymous() -> Record {
    let mut d = SessionData::new();
    d.insert("cart".into(), json!(["apple", "pear"]));
    Record::with_ttl(d, 3600)
}

fn memory_anonymous(c: &mut Criterion) {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let r = anonymous();
    let mut g = c.benchmark_group("memory_anonymous");
    g.bench_function("create", |b| {
        b.iter(|| rt.block_on(store.create(black_box(&r))).expect("create"))
    });
    let key = rt.block_on(store.create(&r)).expect("create");
    g.bench_function("load", |b| {
        b.iter(|| rt.block_on(store.load(black_box(&key))).expect("load"))
    });
    g.bench_function("update", |b| {
        b.iter(|| rt.block_on(store.update(black_box(&key), &r, None)).expect("update"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = memory_anonymous
}
criterion_main!(benches);
