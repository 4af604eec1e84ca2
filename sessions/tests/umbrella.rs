//! The umbrella crate as an application meets it with its default features (`file`,
//! `axum`): a layer built from a configuration file in one call serves sessions over
//! HTTP, the registry holds exactly the compiled-in engines, and a configuration naming
//! an engine left out of the build is refused with the feature to enable.
#![cfg(all(feature = "file", feature = "axum"))]

use std::path::{Path, PathBuf};

use axum::Router;
use axum::routing::get;
use sessions::Error;
use sessions::axum::{Session, SessionError};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("visit number {n}"))
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("Sessions.toml");
    std::fs::write(&path, body).expect("write Sessions.toml");
    path
}

#[tokio::test]
async fn one_call_builds_the_layer_from_a_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("sessions");
    let path = write_config(
        dir.path(),
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n[cookie]\nsecure = false\n",
            store_dir.display().to_string()
        ),
    );
    let layer = sessions::axum::layer_from_config(&path)
        .await
        .expect("layer from config");
    let app = Router::new().route("/", get(visits)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    for n in 1..=3 {
        let body = client
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect("request")
            .error_for_status()
            .expect("status")
            .text()
            .await
            .expect("body");
        assert_eq!(body, format!("visit number {n}"));
    }
    let files = std::fs::read_dir(&store_dir)
        .expect("the file engine's directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(files, 1, "one session file in {}", store_dir.display());
    server.abort();
}

#[test]
fn the_registry_holds_exactly_the_compiled_engines() {
    let mut known = sessions::registry().known();
    known.sort();
    let mut expected = vec!["cookie", "file"];
    if cfg!(any(
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql"
    )) {
        expected.push("db");
    }
    if cfg!(feature = "memory") {
        expected.extend(["cache", "memory"]);
    }
    if cfg!(feature = "cached-db") {
        expected.push("cached_db");
    }
    expected.sort();
    assert_eq!(known, expected);
}

#[tokio::test]
async fn an_engine_left_out_of_the_build_names_the_feature_to_enable() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (engine, feature, compiled) in [
        (
            "db",
            "`postgres`",
            cfg!(any(
                feature = "sqlite",
                feature = "postgres",
                feature = "mysql"
            )),
        ),
        ("memory", "`memory`", cfg!(feature = "memory")),
        ("cached_db", "`cached-db`", cfg!(feature = "cached-db")),
    ] {
        if compiled {
            continue;
        }
        let path = write_config(dir.path(), &format!("engine = \"{engine}\"\n"));
        let err = sessions::axum::layer_from_config(&path)
            .await
            .expect_err(engine);
        assert!(
            matches!(&err, Error::Config { key: Some(k), message }
                if k == "engine" && message.contains(feature) && message.contains("not compiled in")),
            "{engine}: {err}"
        );
        let config = sessions::Config::load(Some(&path)).expect("load");
        assert!(sessions::validate(&config).is_err(), "{engine}");
    }
}
