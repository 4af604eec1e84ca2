//! Runs the worked example of the backend guide, `examples/custom_backend.rs`: a
//! third-party engine registered with `register_store_checked`, configured from TOML and
//! built through the registry for every conformance case.

use integration_tests::{ConfigFactory, run_conformance};
use session_core::{Config, EngineRegistry, Error};

#[allow(dead_code)]
#[path = "../examples/custom_backend.rs"]
mod custom_backend;

fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    custom_backend::register(&registry);
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_backend_example_passes_every_case_through_the_registry() {
    let factory = ConfigFactory::new(registry(), custom_backend::config);
    // Byte-keeping with raw access, CAS and listing, no native TTL: every case applies.
    run_conformance("kv", &factory).await.assert_pinned(193, 20);
}

#[tokio::test]
async fn the_custom_backend_example_rejects_a_typo_and_a_bad_value_before_building() {
    let registry = registry();
    let typo = registry
        .validate(&Config::from_toml("engine = \"kv\"\n[kv]\nmax_entires = 5"))
        .expect_err("a typo");
    assert!(
        matches!(&typo, Error::Config { .. }) && typo.to_string().contains("kv.max_entires"),
        "{typo}"
    );
    assert!(
        typo.to_string().contains("did you mean `max_entries`"),
        "{typo}"
    );

    let zero = registry
        .build(&Config::from_toml("engine = \"kv\"\n[kv]\nmax_entries = 0"))
        .await
        .expect_err("a zero limit");
    assert!(zero.to_string().contains("kv.max_entries"), "{zero}");
}

#[tokio::test]
async fn the_custom_backend_example_refuses_creates_beyond_its_limit() {
    let store = registry()
        .build(&Config::from_toml("engine = \"kv\"\n[kv]\nmax_entries = 2"))
        .await
        .expect("a valid configuration");
    let record = session_core::Record::with_ttl(Default::default(), 3600);
    store.create(&record).await.expect("first");
    store.create(&record).await.expect("second");
    let err = store.create(&record).await.expect_err("over the limit");
    assert!(matches!(err, Error::Limit(_)), "{err}");
}
