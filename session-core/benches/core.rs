//! Micro-benchmarks of the hot paths every request touches: both codecs on 1 KiB and
//! 64 KiB records, key generation and parsing, and the session handle's get/insert.
//!
//! ```text
//! cargo bench -p session-core --bench core
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use session_core::{
    BincodeCodec, Capabilities, Codec, Error, Inserted, JsonCodec, Record, Result, Session,
    SessionData, SessionKey, SessionSettings, SessionStore, Timestamp, async_trait,
};

/// The `user_id` every benchmark record holds (what the handle benchmarks must read).
const USER_ID: u64 = 123_456_789;

/// A record of about `size` bytes spread over 10 fields (strings, numbers, a list).
fn record(size: usize) -> Record {
    let mut d = SessionData::new();
    let per = size / 10;
    for i in 0..7 {
        d.insert(
            format!("field_{i}"),
            json!("x".repeat(per.saturating_sub(12))),
        );
    }
    d.insert("user_id".into(), json!(USER_ID));
    d.insert("ratio".into(), json!(0.75));
    d.insert(
        "recent".into(),
        json!((0..(per / 8).max(1)).map(|i| i * 7).collect::<Vec<_>>()),
    );
    Record::with_ttl(d, 3600)
}

fn codecs(c: &mut Criterion) {
    let bin = BincodeCodec::default();
    let js = JsonCodec::default();
    for size in [1024usize, 64 * 1024] {
        let r = record(size);
        let mut g = c.benchmark_group(format!("codec_{}KiB", size / 1024));
        let encoded_bin = bin.encode(&r).expect("encode");
        let encoded_json = js.encode(&r).expect("encode");
        g.throughput(Throughput::Bytes(encoded_bin.len() as u64));
        g.bench_function(BenchmarkId::new("encode", "bincode"), |b| {
            b.iter(|| bin.encode(black_box(&r)))
        });
        g.bench_function(BenchmarkId::new("decode", "bincode"), |b| {
            b.iter(|| bin.decode(black_box(&encoded_bin)))
        });
        g.throughput(Throughput::Bytes(encoded_json.len() as u64));
        g.bench_function(BenchmarkId::new("encode", "json"), |b| {
            b.iter(|| js.encode(black_box(&r)))
        });
        g.bench_function(BenchmarkId::new("decode", "json"), |b| {
            b.iter(|| js.decode(black_box(&encoded_json)))
        });
        g.finish();
    }
}

fn keys(c: &mut Criterion) {
    let k = SessionKey::generate().expect("rng");
    let s = k.as_str().to_owned();
    c.bench_function("key_generate", |b| b.iter(SessionKey::generate));
    c.bench_function("key_parse", |b| b.iter(|| SessionKey::parse(black_box(&s))));
    c.bench_function("key_parse_reject", |b| {
        b.iter(|| SessionKey::parse(black_box("../../../../etc/passwd-not-a-key!")))
    });
}

/// A store that answers at once, so the handle's own cost is what is measured.
#[derive(Debug)]
struct Instant(Record);

#[async_trait]
impl SessionStore for Instant {
    fn engine(&self) -> &str {
        "instant"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn insert_new(&self, _: &SessionKey, _: &Record) -> Result<Inserted> {
        Ok(Inserted::Created)
    }
    async fn load(&self, _: &SessionKey) -> Result<Option<Record>> {
        Ok(Some(self.0.clone()))
    }
    async fn update(&self, _: &SessionKey, _: &Record, v: Option<u64>) -> Result<u64> {
        Ok(v.unwrap_or(1) + 1)
    }
    async fn delete(&self, _: &SessionKey) -> Result<bool> {
        Ok(true)
    }
    async fn touch(&self, _: &SessionKey, _: Timestamp) -> Result<()> {
        Err(Error::NotFound)
    }
    async fn exists(&self, _: &SessionKey) -> Result<bool> {
        Ok(true)
    }
    async fn clear_expired(&self) -> Result<u64> {
        Ok(0)
    }
}

fn handle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store: Arc<dyn SessionStore> = Arc::new(Instant(record(1024)));
    let settings = Arc::new(SessionSettings::default());
    let key = SessionKey::generate().expect("rng");
    c.bench_function("handle_load_get", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = Session::new(store.clone(), settings.clone(), Some(key.clone()));
                let got = s.get::<u64>("user_id").await.expect("get after a load");
                assert_eq!(got, Some(USER_ID));
            })
        })
    });
    c.bench_function("handle_load_insert_save", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = Session::new(store.clone(), settings.clone(), Some(key.clone()));
                s.insert("counter", &42u64).await.expect("insert");
                s.save().await.expect("save");
            })
        })
    });
    let s = Session::new(store.clone(), settings.clone(), Some(key.clone()));
    rt.block_on(s.load()).expect("load");
    c.bench_function("handle_get_loaded", |b| {
        b.iter(|| {
            let got = rt
                .block_on(s.get::<u64>(black_box("user_id")))
                .expect("get on a loaded handle");
            assert_eq!(got, Some(USER_ID));
        })
    });
    c.bench_function("handle_insert_loaded", |b| {
        b.iter(|| {
            rt.block_on(s.insert(black_box("counter"), &7u64))
                .expect("insert on a loaded handle")
        })
    });
}

criterion_group!(benches, codecs, keys, handle);
criterion_main!(benches);
