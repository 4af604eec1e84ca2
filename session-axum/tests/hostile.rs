//! Hostile or odd input through the middleware over real HTTP on loopback: `Cookie`
//! headers holding bytes that are not ASCII, quoted session cookies, and sessions that
//! grow past their size limit on the file, memory and cookie engines (413, the stored
//! session and the cookie unchanged).

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use reqwest::header::{COOKIE, HeaderValue};
use session_axum::SessionLayer;
use session_axum::error::SESSION_TOO_LARGE;
use session_core::{Config, EngineRegistry, SessionKey, SessionStore};

fn registry() -> EngineRegistry {
    let r = EngineRegistry::new();
    backend_cache::register(&r);
    backend_file::register(&r);
    session_axum::register(&r);
    r
}

async fn layer(config: &Config) -> SessionLayer {
    SessionLayer::builder_from_config(config, &registry())
        .await
        .expect("builder")
        .secure(false)
        .build()
        .expect("layer")
}

/// A GET of `path` with `cookie` as the raw bytes of one `Cookie` header.
async fn get_with(base: &str, path: &str, cookie: &[u8]) -> reqwest::Response {
    bare()
        .get(format!("{base}{path}"))
        .header(
            COOKIE,
            HeaderValue::from_bytes(cookie).expect("a valid header value"),
        )
        .send()
        .await
        .expect("request")
}

/// A session with `user = "ada"` on a memory-engine layer: the server, the store and
/// the session key.
async fn ada() -> (String, Arc<dyn SessionStore>, SessionKey) {
    let layer = layer(&Config::from_toml("engine = \"memory\"")).await;
    let store = layer.store().expect("a store").clone();
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/set/user/ada"))
        .send()
        .await
        .expect("set");
    assert_eq!(res.status(), 200);
    let key = SessionKey::parse(&cookie_value(&the_set_cookie(res.headers()))).expect("key");
    (base, store, key)
}

#[tokio::test]
async fn other_cookies_with_accents_or_latin1_bytes_keep_the_session() {
    let (base, store, key) = ada().await;
    let k = key.as_str();
    let headers: Vec<Vec<u8>> = vec![
        format!("theme=déjà; sessionid={k}").into_bytes(),
        format!("sessionid={k}; theme=déjà").into_bytes(),
        [b"lang=caf\xe9; sessionid=".as_slice(), k.as_bytes()].concat(),
        [
            b"x=\xff\xfe;sessionid=".as_slice(),
            k.as_bytes(),
            b";y=\x80",
        ]
        .concat(),
        // RFC 6265 allows a quoted value.
        format!("theme=déjà; sessionid=\"{k}\"").into_bytes(),
    ];
    for h in &headers {
        let res = get_with(&base, "/get/user", h).await;
        let shown = String::from_utf8_lossy(h).into_owned();
        assert_eq!(res.status(), 200, "{shown}");
        assert!(set_cookies(res.headers()).is_empty(), "{shown}");
        assert_eq!(res.text().await.expect("body"), "\"ada\"", "{shown}");
    }
    // Two Cookie headers, the first one Latin-1 only.
    let res = bare()
        .get(format!("{base}/get/user"))
        .header(
            COOKIE,
            HeaderValue::from_bytes(b"lang=caf\xe9").expect("header"),
        )
        .header(COOKIE, format!("sessionid={k}"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.text().await.expect("body"), "\"ada\"");
    // A write through an accented header updates the same session, no new key.
    let res = bare()
        .post(format!("{base}/set/cart/pear"))
        .header(
            COOKIE,
            HeaderValue::from_bytes(format!("theme=déjà; sessionid={k}").as_bytes())
                .expect("header"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(key_in(&the_set_cookie(res.headers())), key);
    let rec = store.load(&key).await.expect("load").expect("live");
    assert_eq!(rec.data["user"], "ada");
    assert_eq!(rec.data["cart"], "pear");
    assert_eq!(store.count().await.expect("count"), 1);
}

fn key_in(set_cookie: &str) -> SessionKey {
    SessionKey::parse(&cookie_value(set_cookie)).expect("a session key")
}

#[tokio::test]
async fn a_non_ascii_session_cookie_is_a_malformed_key() {
    let (base, store, key) = ada().await;
    for h in [
        b"sessionid=caf\xe9".to_vec(),
        "sessionid=déjà; theme=x".as_bytes().to_vec(),
        // The key with one byte replaced by a Latin-1 letter.
        [b"sessionid=\xe9".as_slice(), &key.as_str().as_bytes()[1..]].concat(),
    ] {
        let shown = String::from_utf8_lossy(&h).into_owned();
        // A read: a fresh, empty session, and the unusable cookie is deleted.
        let res = get_with(&base, "/get/user", &h).await;
        assert_eq!(res.status(), 200, "{shown}");
        let sc = the_set_cookie(res.headers());
        assert!(
            sc.starts_with("sessionid=\"\"") && sc.contains("Max-Age=0"),
            "{shown}: {sc}"
        );
        assert_eq!(res.text().await.expect("body"), "none", "{shown}");
        // A write: a new key is minted; nothing else is touched.
        let res = bare()
            .post(format!("{base}/set/a/1"))
            .header(COOKIE, HeaderValue::from_bytes(&h).expect("header"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{shown}");
        let fresh = key_in(&the_set_cookie(res.headers()));
        assert_ne!(fresh, key, "{shown}");
        assert!(store.delete(&fresh).await.expect("delete"));
    }
    let rec = store.load(&key).await.expect("load").expect("live");
    assert_eq!(rec.data["user"], "ada");
    assert_eq!(store.count().await.expect("count"), 1);
}

/// Grows a session past the limit on the layer `config` builds and checks: 413 with
/// the message, no `Set-Cookie`, the stored session (or, on the cookie engine, the
/// session the old cookie carries) unchanged; a new oversized session is refused too.
async fn oversize_answers_413(config: Config, size_over: usize) {
    let layer = layer(&config).await;
    let engine = config.settings().expect("settings").engine;
    let store = layer.store().cloned();
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/big/100"))
        .send()
        .await
        .expect("small");
    assert_eq!(res.status(), 200, "{engine}");
    let cookie = cookie_value(&the_set_cookie(res.headers()));

    let res = bare()
        .post(format!("{base}/big/{size_over}"))
        .header(COOKIE, format!("sessionid={cookie}"))
        .send()
        .await
        .expect("big");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{engine}");
    assert!(set_cookies(res.headers()).is_empty(), "{engine}");
    assert_eq!(res.text().await.expect("body"), SESSION_TOO_LARGE);

    // The old cookie still reads the old session.
    let res = bare()
        .get(format!("{base}/get/blob"))
        .header(COOKIE, format!("sessionid={cookie}"))
        .send()
        .await
        .expect("read");
    assert_eq!(
        res.text().await.expect("body"),
        format!("\"{}\"", "x".repeat(100)),
        "{engine}"
    );
    if let Some(store) = &store {
        let key = SessionKey::parse(&cookie).expect("key");
        let rec = store.load(&key).await.expect("load").expect("live");
        assert_eq!(rec.data["blob"].as_str().map(str::len), Some(100));
        assert_eq!(store.count().await.expect("count"), 1, "{engine}");
    }

    // A new session that is too large from the start.
    let res = bare()
        .post(format!("{base}/big/{size_over}"))
        .send()
        .await
        .expect("big");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{engine}");
    assert!(set_cookies(res.headers()).is_empty(), "{engine}");
    if let Some(store) = &store {
        assert_eq!(store.count().await.expect("count"), 1, "{engine}");
    }
}

#[tokio::test]
async fn an_oversized_session_answers_413_on_the_file_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::from_toml("engine = \"file\"\nmax_encoded_size = 2048")
        .with("file.path", dir.path().display().to_string());
    oversize_answers_413(config, 4000).await;
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 1, "one session file, no leftovers");
}

#[tokio::test]
async fn an_oversized_session_answers_413_on_the_memory_engine() {
    oversize_answers_413(
        Config::from_toml("engine = \"memory\"\nmax_encoded_size = 2048"),
        4000,
    )
    .await;
}

#[tokio::test]
async fn an_oversized_session_answers_413_on_the_cookie_engine() {
    let config = Config::from_toml(&format!(
        "engine = \"cookie\"\n[cookie]\nsigning_keys = [\"{NEW_KEY}\"]"
    ));
    oversize_answers_413(config, 5000).await;
}

#[tokio::test]
async fn an_app_can_shape_the_413() {
    let layer = SessionLayer::builder_from_config(
        &Config::from_toml("engine = \"memory\"\nmax_encoded_size = 2048"),
        &registry(),
    )
    .await
    .expect("builder")
    .secure(false)
    .error_response(|err| match err {
        session_core::Error::Codec(_) | session_core::Error::Limit(_) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "your cart is full").into_response()
        }
        other => session_axum::error::error_response(other),
    })
    .build()
    .expect("layer");
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/big/4000"))
        .send()
        .await
        .expect("big");
    assert_eq!(res.status(), 413);
    assert!(set_cookies(res.headers()).is_empty());
    assert_eq!(res.text().await.expect("body"), "your cart is full");
    let res = bare()
        .post(format!("{base}/big/10"))
        .send()
        .await
        .expect("small");
    assert_eq!(res.status(), 200);
}
