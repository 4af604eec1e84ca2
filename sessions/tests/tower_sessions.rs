//! `sessions::tower_sessions`: the store for tower-sessions (and axum-login) from a
//! configuration file in one call, and a configuration naming an engine left out of
//! the build refused with the feature to enable.
#![cfg(all(feature = "tower-sessions", feature = "file"))]

use std::sync::Arc;

use sessions::tower_sessions::tower_sessions_core::Session;

#[tokio::test]
async fn one_call_builds_a_tower_sessions_store_from_a_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("sessions");
    let path = dir.path().join("Sessions.toml");
    std::fs::write(
        &path,
        format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            store_dir.display().to_string()
        ),
    )
    .expect("write Sessions.toml");
    let store = Arc::new(
        sessions::tower_sessions::store_from_config(&path)
            .await
            .expect("store from config"),
    );

    let session = Session::new(None, store.clone(), None);
    session.insert("user_id", 7u64).await.expect("insert");
    session.save().await.expect("save");
    let id = session.id().expect("an id after save");
    let again = Session::new(Some(id), store.clone(), None);
    assert_eq!(again.get::<u64>("user_id").await.expect("get"), Some(7));
    let files = std::fs::read_dir(&store_dir)
        .expect("the file engine's directory")
        .filter_map(|e| e.ok())
        .count();
    assert_eq!(files, 1, "one session file in {}", store_dir.display());
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn an_engine_left_out_of_the_build_names_its_feature() {
    let config =
        sessions::Config::from_toml("engine = \"db\"\n[db]\nurl = \"postgres://x@127.0.0.1/x\"\n");
    let err = sessions::tower_sessions::store(&config)
        .await
        .expect_err("db is not compiled in");
    assert!(err.to_string().contains("feature"), "{err}");
}
