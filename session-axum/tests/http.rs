//! The middleware over real HTTP on loopback: a real axum server, a client that keeps
//! cookies (or one that sends headers by hand), and a real in-process store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backend_cache::MemoryStore;
use common::*;
use reqwest::header::COOKIE;
use session_axum::error::{SESSION_CONFLICT, SESSION_INTERRUPTED, STORE_UNAVAILABLE};
use session_axum::{SameSite, SessionLayer};
use session_core::{
    Config, EngineRegistry, Error, SessionKey, SessionSettings, SessionStore, Timestamp,
};

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

fn plain(store: Arc<dyn SessionStore>) -> SessionLayer {
    SessionLayer::builder(store)
        .secure(false)
        .build()
        .expect("layer")
}

fn key_of(set_cookie: &str) -> SessionKey {
    SessionKey::parse(&cookie_value(set_cookie)).expect("the cookie carries a session key")
}

async fn body(res: reqwest::Response) -> String {
    res.text().await.expect("body")
}

// ---------------------------------------------------------------------------------
// Flows a user notices
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn login_cycles_the_key_then_a_counter_persists_across_100_requests() {
    let store = memory();
    let base = serve_layer(plain(store.clone())).await;
    let c = browser();

    let res = c
        .post(format!("{base}/set/cart/apple"))
        .send()
        .await
        .expect("anon");
    let anon = key_of(&the_set_cookie(res.headers()));

    let res = c
        .post(format!("{base}/login/ada"))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let logged_in = key_of(&the_set_cookie(res.headers()));
    assert_ne!(anon, logged_in, "login must mint a new key");
    assert!(
        !store.exists(&anon).await.expect("exists"),
        "old record gone"
    );

    for i in 1..=100u64 {
        let res = c.post(format!("{base}/incr")).send().await.expect("incr");
        assert_eq!(res.status(), 200);
        assert_eq!(key_of(&the_set_cookie(res.headers())), logged_in);
        assert_eq!(body(res).await, i.to_string());
    }
    let rec = store.load(&logged_in).await.expect("load").expect("live");
    assert_eq!(rec.data["count"], 100);
    assert_eq!(
        rec.data["cart"], "apple",
        "data carried over the key change"
    );
    assert_eq!(rec.data["user"], "ada");
    assert_eq!(store.count().await.expect("count"), 1);
}

#[tokio::test]
async fn a_logout_racing_a_save_is_not_resurrected() {
    let store = memory();
    let coord = Coord::new();
    let base = serve(app(plain(store.clone()), coord.clone())).await;
    let c = browser();
    let res = c
        .post(format!("{base}/set/user/ada"))
        .send()
        .await
        .expect("login");
    let key = key_of(&the_set_cookie(res.headers()));

    // The slow request has loaded and changed the session; a logout lands meanwhile.
    let slow = tokio::spawn({
        let (c, base) = (c.clone(), base.clone());
        async move { c.post(format!("{base}/slow-write")).send().await }
    });
    tokio::time::timeout(STEP_TIMEOUT, coord.loaded.notified())
        .await
        .expect("the slow request to load");
    let out = c
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 200);
    coord.proceed.notify_one();

    let slow = slow.await.expect("task").expect("slow request");
    assert_eq!(slow.status(), 400);
    assert!(
        set_cookies(slow.headers()).is_empty(),
        "no cookie for a refused save"
    );
    assert_eq!(body(slow).await, SESSION_INTERRUPTED);
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "not resurrected"
    );
    assert_eq!(store.count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_session_deleted_during_the_request_answers_400() {
    // Django's test_session_update_error_redirect.
    let store = memory();
    let base = serve_layer(plain(store.clone())).await;
    let res = bare()
        .post(format!("{base}/vanish"))
        .send()
        .await
        .expect("vanish");
    assert_eq!(res.status(), 400);
    assert_eq!(body(res).await, SESSION_INTERRUPTED);
    assert_eq!(store.count().await.expect("count"), 0);
}

#[tokio::test]
async fn server_errors_neither_save_nor_set_a_cookie() {
    // Django's test_session_save_on_500 and test_session_save_on_5xx.
    let store = memory();
    let base = serve_layer(plain(store.clone())).await;
    for status in [500, 503] {
        let res = bare()
            .post(format!("{base}/fail/{status}"))
            .send()
            .await
            .expect("fail");
        assert_eq!(res.status(), status);
        assert!(set_cookies(res.headers()).is_empty(), "{status}: no cookie");
        assert_eq!(
            store.count().await.expect("count"),
            0,
            "{status}: nothing saved"
        );
    }
    // An existing session keeps its data when a 5xx follows a change.
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = key_of(&the_set_cookie(res.headers()));
    let res = c
        .post(format!("{base}/fail/500"))
        .send()
        .await
        .expect("fail");
    assert!(set_cookies(res.headers()).is_empty());
    let rec = store.load(&key).await.expect("load").expect("live");
    assert!(!rec.data.contains_key("doomed"));
}

#[tokio::test]
async fn browser_close_sessions_get_no_max_age() {
    let base = serve_layer(plain(memory())).await;
    let res = bare()
        .post(format!("{base}/browser-close"))
        .send()
        .await
        .expect("set");
    let sc = the_set_cookie(res.headers()).to_ascii_lowercase();
    assert!(!sc.contains("max-age"), "{sc}");
    assert!(!sc.contains("expires"), "{sc}");

    // An ordinary session gets the two-week Max-Age and a matching Expires.
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set");
    let sc = the_set_cookie(res.headers());
    assert!(sc.contains("Max-Age=1209600"), "{sc}");
    assert!(sc.contains("; expires="), "{sc}");

    // The global setting makes default sessions browser-session cookies too.
    let mut settings = SessionSettings::default();
    settings.expiry.expire_at_browser_close = true;
    let layer = SessionLayer::builder(memory())
        .secure(false)
        .settings(settings)
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set");
    let sc = the_set_cookie(res.headers()).to_ascii_lowercase();
    assert!(!sc.contains("max-age") && !sc.contains("expires"), "{sc}");
}

#[tokio::test]
async fn a_fixed_deadline_sets_max_age_to_what_is_left() {
    let base = serve_layer(plain(memory())).await;
    let res = bare()
        .post(format!("{base}/fixed-deadline"))
        .send()
        .await
        .expect("set");
    let sc = the_set_cookie(res.headers());
    let age: i64 = sc
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("number");
    assert!((598..=600).contains(&age), "{sc}");
}

#[tokio::test]
async fn a_cookie_signed_with_a_rotated_out_but_accepted_key_still_works() {
    let store: Arc<dyn SessionStore> = memory();
    let signed = |keys: &[&str]| {
        SessionLayer::builder(store.clone())
            .secure(false)
            .signing_keys(keys.iter().copied())
            .build()
            .expect("layer")
    };
    let before = serve_layer(signed(&[OLD_KEY])).await;
    let rotating = serve_layer(signed(&[NEW_KEY, OLD_KEY])).await;
    let after = serve_layer(signed(&[NEW_KEY])).await;

    let res = bare()
        .post(format!("{before}/set/a/1"))
        .send()
        .await
        .expect("set");
    let old_cookie = cookie_value(&the_set_cookie(res.headers()));
    assert!(old_cookie.contains('.'), "signed value: key.tag");
    assert!(SessionKey::parse(&old_cookie).is_err(), "not a bare key");

    // The rotating deployment accepts the old signature and re-signs with the new key.
    let res = bare()
        .post(format!("{rotating}/set/b/2"))
        .header(COOKIE, format!("sessionid={old_cookie}"))
        .send()
        .await
        .expect("set");
    assert_eq!(res.status(), 200);
    let new_cookie = cookie_value(&the_set_cookie(res.headers()));
    assert_ne!(new_cookie, old_cookie);
    let (old_key, _) = old_cookie.split_once('.').expect("dot");
    let (new_key, _) = new_cookie.split_once('.').expect("dot");
    assert_eq!(old_key, new_key, "same session, new signature");

    let read = |url: String, cookie: String| async move {
        body(
            bare()
                .get(url)
                .header(COOKIE, format!("sessionid={cookie}"))
                .send()
                .await
                .expect("get"),
        )
        .await
    };
    assert_eq!(
        read(format!("{rotating}/get/a"), old_cookie.clone()).await,
        "\"1\""
    );
    assert_eq!(read(format!("{after}/get/b"), new_cookie).await, "\"2\"");
    // Once the old key is dropped, its cookies are worthless.
    assert_eq!(read(format!("{after}/get/a"), old_cookie).await, "none");
}

#[tokio::test]
async fn a_tampered_cookie_gets_a_new_session() {
    let store = memory();
    let layer = SessionLayer::builder(store.clone())
        .secure(false)
        .signing_keys([NEW_KEY])
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set");
    let good = cookie_value(&the_set_cookie(res.headers()));
    let (key, tag) = good.split_once('.').expect("dot");
    // Another valid-looking key under the same tag, and the same key under a broken tag.
    let other_key: String = key.chars().rev().collect();
    let broken_tag = format!(
        "{}{}",
        &tag[..tag.len() - 2],
        if tag.ends_with("AA") { "BA" } else { "AA" }
    );
    for forged in [
        format!("{other_key}.{tag}"),
        format!("{key}.{broken_tag}"),
        key.to_owned(),
    ] {
        let res = bare()
            .post(format!("{base}/set/b/2"))
            .header(COOKIE, format!("sessionid={forged}"))
            .send()
            .await
            .expect("set");
        assert_eq!(res.status(), 200);
        let minted = cookie_value(&the_set_cookie(res.headers()));
        let (minted_key, _) = minted.split_once('.').expect("dot");
        assert_ne!(
            minted_key, key,
            "a forged cookie must not reach the session"
        );
        let rec = store
            .load(&SessionKey::parse(minted_key).expect("key"))
            .await
            .expect("load")
            .expect("live");
        assert!(!rec.data.contains_key("a"), "new session, not the victim's");
    }
    // The genuine session is untouched.
    let rec = store
        .load(&SessionKey::parse(key).expect("key"))
        .await
        .expect("load")
        .expect("live");
    assert!(!rec.data.contains_key("b"));
}

#[tokio::test]
async fn an_unknown_client_key_is_never_adopted() {
    let store = memory();
    let base = serve_layer(plain(store.clone())).await;
    let planted = SessionKey::generate().expect("key");
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .header(COOKIE, format!("sessionid={}", planted.as_str()))
        .send()
        .await
        .expect("set");
    let minted = key_of(&the_set_cookie(res.headers()));
    assert_ne!(minted, planted);
    assert!(!store.exists(&planted).await.expect("exists"));
}

#[tokio::test]
async fn an_untouched_session_sends_nothing_and_a_read_only_one_varies() {
    let base = serve_layer(plain(memory())).await;
    let c = browser();
    let res = c
        .get(format!("{base}/untouched"))
        .send()
        .await
        .expect("get");
    assert!(set_cookies(res.headers()).is_empty());
    assert!(!varies_on_cookie(res.headers()));
    c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let res = c
        .get(format!("{base}/untouched"))
        .send()
        .await
        .expect("get");
    assert!(set_cookies(res.headers()).is_empty() && !varies_on_cookie(res.headers()));
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert!(
        set_cookies(res.headers()).is_empty(),
        "reads do not re-send the cookie"
    );
    assert!(varies_on_cookie(res.headers()));
}

// ---------------------------------------------------------------------------------
// Django's SessionMiddlewareTests (django.md §5.7)
// ---------------------------------------------------------------------------------

async fn first_cookie(layer: SessionLayer) -> reqwest::Response {
    let base = serve_layer(layer).await;
    bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set")
}

#[tokio::test]
async fn secure_httponly_and_samesite_flags() {
    // test_secure_session_cookie: secure is our default.
    let res = first_cookie(SessionLayer::new(memory())).await;
    let sc = the_set_cookie(res.headers());
    assert!(sc.split("; ").any(|a| a == "Secure"), "{sc}");
    assert!(varies_on_cookie(res.headers()));
    // test_httponly_session_cookie.
    assert!(sc.split("; ").any(|a| a == "HttpOnly"), "{sc}");
    assert!(sc.contains("SameSite=Lax"), "{sc}");
    assert!(sc.contains("Path=/"), "{sc}");
    // test_samesite_session_cookie.
    let res = first_cookie(
        SessionLayer::builder(memory())
            .same_site(SameSite::Strict)
            .build()
            .expect("layer"),
    )
    .await;
    assert!(the_set_cookie(res.headers()).contains("SameSite=Strict"));
    // test_no_httponly_session_cookie.
    let res = first_cookie(
        SessionLayer::builder(memory())
            .http_only(false)
            .secure(false)
            .build()
            .expect("layer"),
    )
    .await;
    let sc = the_set_cookie(res.headers());
    assert!(!sc.contains("HttpOnly") && !sc.contains("Secure"), "{sc}");
    // The __Host- prefix.
    let res = first_cookie(
        SessionLayer::builder(memory())
            .host_prefix(true)
            .build()
            .expect("layer"),
    )
    .await;
    let sc = the_set_cookie(res.headers());
    assert!(sc.starts_with("__Host-sessionid="), "{sc}");
    assert!(
        sc.contains("Secure") && sc.contains("Path=/") && !sc.contains("Domain"),
        "{sc}"
    );
}

#[tokio::test]
async fn delete_on_end_sends_djangos_exact_header() {
    // test_session_delete_on_end.
    let base = serve_layer(plain(memory())).await;
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set");
    let value = cookie_value(&the_set_cookie(res.headers()));
    let res = bare()
        .post(format!("{base}/logout"))
        .header(COOKIE, format!("sessionid={value}"))
        .send()
        .await
        .expect("logout");
    assert_eq!(
        the_set_cookie(res.headers()),
        "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"
    );
    assert!(varies_on_cookie(res.headers()));
}

#[tokio::test]
async fn delete_on_end_with_custom_domain_and_path() {
    // test_session_delete_on_end_with_custom_domain_and_path.
    let layer = SessionLayer::builder(memory())
        .secure(false)
        .domain(".example.local")
        .path("/example/")
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/logout"))
        .header(COOKIE, "sessionid=abc")
        .send()
        .await
        .expect("logout");
    assert_eq!(
        the_set_cookie(res.headers()),
        "sessionid=\"\"; Domain=.example.local; expires=Thu, 01 Jan 1970 00:00:00 GMT; \
         Max-Age=0; Path=/example/; SameSite=Lax"
    );
    assert!(varies_on_cookie(res.headers()));
}

#[tokio::test]
async fn flush_without_a_cookie_varies_but_sets_no_cookie() {
    // test_flush_empty_without_session_cookie_doesnt_set_cookie.
    let base = serve_layer(plain(memory())).await;
    let res = bare()
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 200);
    assert!(set_cookies(res.headers()).is_empty());
    assert!(varies_on_cookie(res.headers()));
}

#[tokio::test]
async fn save_every_request_renews_the_cookie_of_an_untouched_session() {
    // test_save_every_request_with_non_empty_session_renews_session_cookie, and the
    // CVE-2026-35192 fix: the renewed cookie always comes with Vary: Cookie.
    let store = memory();
    let layer = SessionLayer::builder(store.clone())
        .secure(false)
        .save_every_request(true)
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = key_of(&the_set_cookie(res.headers()));
    let v1 = store.load(&key).await.expect("load").expect("live").version;
    let res = c
        .get(format!("{base}/untouched"))
        .send()
        .await
        .expect("get");
    assert_eq!(key_of(&the_set_cookie(res.headers())), key);
    assert!(varies_on_cookie(res.headers()));
    let v2 = store.load(&key).await.expect("load").expect("live").version;
    assert!(v2 > v1, "saved again");
    // Still no empty session is ever created.
    let res = bare()
        .get(format!("{base}/untouched"))
        .send()
        .await
        .expect("get");
    assert!(set_cookies(res.headers()).is_empty());
}

#[tokio::test]
async fn an_emptied_keyed_session_is_still_saved() {
    // test_empty_session_saved.
    let store = memory();
    let base = serve_layer(plain(store.clone())).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = key_of(&the_set_cookie(res.headers()));
    let res = c.post(format!("{base}/del/a")).send().await.expect("del");
    let sc = the_set_cookie(res.headers());
    assert_eq!(key_of(&sc), key, "cookie re-set with the same key");
    assert!(varies_on_cookie(res.headers()));
    let rec = store.load(&key).await.expect("load").expect("still stored");
    assert!(rec.data.is_empty());
}

// ---------------------------------------------------------------------------------
// Concurrency, outages, touch
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disjoint_changes_both_persist_on_memory() {
    disjoint_changes_both_persist(memory()).await;
}

#[tokio::test]
async fn conflicts_that_keep_winning_answer_409() {
    let settings = SessionSettings {
        save_attempts: 1,
        ..SessionSettings::default()
    };
    let layer = SessionLayer::builder(memory())
        .secure(false)
        .settings(settings)
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let c = browser();
    c.post(format!("{base}/set/seed/1"))
        .send()
        .await
        .expect("seed");
    let (a, b) = tokio::join!(
        c.post(format!("{base}/together/alpha/a")).send(),
        c.post(format!("{base}/together/beta/b")).send(),
    );
    let mut statuses = [
        a.expect("a").status().as_u16(),
        b.expect("b").status().as_u16(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let _ = SESSION_CONFLICT;
}

#[tokio::test]
async fn a_store_outage_on_save_answers_503_and_keys_stay_out_of_the_logs() {
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = Arc::new(Outage::new(MemoryStore::new()));
    let base = serve_layer(plain(store.clone())).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = key_of(&the_set_cookie(res.headers()));
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // Handler-side failure (the load) and middleware-side failure (the save).
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert_eq!(res.status(), 503);
    assert_eq!(body(res).await, STORE_UNAVAILABLE);
    let res = c
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 503);
    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    // A 400 path logs too.
    let res = bare()
        .post(format!("{base}/vanish"))
        .send()
        .await
        .expect("vanish");
    assert_eq!(res.status(), 400);

    let text = String::from_utf8(logs.lock().expect("logs").clone()).expect("utf8");
    assert!(
        text.contains("connection refused"),
        "the outage is logged: {text}"
    );
    assert!(
        !text.contains(key.as_str()),
        "a session key leaked into the logs: {text}"
    );
    assert!(text.contains("session="), "{text}");
}

#[tokio::test]
async fn reads_touch_a_sliding_session_at_most_once_per_interval() {
    let store = memory();
    let layer = SessionLayer::builder(store.clone())
        .secure(false)
        .touch_interval(Duration::from_secs(60))
        .build()
        .expect("layer");
    let base = serve_layer(layer).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let key = key_of(&the_set_cookie(res.headers()));
    let saved = store.load(&key).await.expect("load").expect("live");

    // Within the interval of the last save: a read changes nothing.
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert!(set_cookies(res.headers()).is_empty());
    assert_eq!(store.load(&key).await.expect("load").expect("live"), saved);

    // Pretend the last save was a day ago: the stored deadline is 13 days out.
    let old_deadline = Timestamp::now().add_secs(13 * 86_400);
    store
        .touch(&key, old_deadline)
        .await
        .expect("age the record");
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert_eq!(body_and_cookie(res).await, ("\"1\"".to_owned(), true));
    let touched = store.load(&key).await.expect("load").expect("live");
    assert_eq!(touched.version, saved.version, "a touch is not a rewrite");
    assert_eq!(touched.data, saved.data);
    assert!(
        touched.expires_at > old_deadline.add_secs(86_000),
        "deadline moved to about two weeks from now"
    );
    // And the next read, right after, does not touch again.
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert!(set_cookies(res.headers()).is_empty());

    // Fixed deadlines never slide.
    let res = c
        .post(format!("{base}/fixed-deadline"))
        .send()
        .await
        .expect("fixed");
    assert_eq!(res.status(), 200);
    let fixed = store
        .load(&key)
        .await
        .expect("load")
        .expect("live")
        .expires_at;
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert!(set_cookies(res.headers()).is_empty());
    assert_eq!(
        store
            .load(&key)
            .await
            .expect("load")
            .expect("live")
            .expires_at,
        fixed
    );
}

async fn body_and_cookie(res: reqwest::Response) -> (String, bool) {
    let has_cookie = !set_cookies(res.headers()).is_empty();
    (body(res).await, has_cookie)
}

// ---------------------------------------------------------------------------------
// The cookie engine
// ---------------------------------------------------------------------------------

fn cookie_engine() -> SessionLayer {
    SessionLayer::cookie_engine()
        .secure(false)
        .signing_keys([NEW_KEY])
        .build()
        .expect("layer")
}

#[tokio::test]
async fn cookie_engine_keeps_the_session_in_the_cookie() {
    let base = serve_layer(cookie_engine()).await;
    let c = browser();
    for i in 1..=20u64 {
        let res = c.post(format!("{base}/incr")).send().await.expect("incr");
        assert_eq!(res.status(), 200);
        assert_eq!(body(res).await, i.to_string());
    }
    let res = c
        .post(format!("{base}/login/ada"))
        .send()
        .await
        .expect("login");
    let value = cookie_value(&the_set_cookie(res.headers()));
    // The client can read its data (signed, not encrypted): documented limit.
    let (payload, _) = value.rsplit_once('.').expect("dot");
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    let text = String::from_utf8(json).expect("json text");
    assert!(
        text.contains("\"count\":20") && text.contains("\"user\":\"ada\""),
        "{text}"
    );

    // Logout deletes the cookie.
    let res = c
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert!(the_set_cookie(res.headers()).starts_with("sessionid=\"\"; expires=Thu, 01 Jan 1970"));
    let res = c
        .get(format!("{base}/get/count"))
        .send()
        .await
        .expect("get");
    assert_eq!(body(res).await, "none");
}

#[tokio::test]
async fn cookie_engine_rejects_tampering_expiry_and_oversize() {
    let base = serve_layer(cookie_engine()).await;
    let res = bare()
        .post(format!("{base}/set/role/user"))
        .send()
        .await
        .expect("set");
    let value = cookie_value(&the_set_cookie(res.headers()));
    // Forge the payload: re-encode with role=admin, keep the tag.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, tag) = value.rsplit_once('.').expect("dot");
    let json = String::from_utf8(b64.decode(payload).expect("b64")).expect("utf8");
    let forged = b64.encode(json.replace("\"user\"", "\"admin\""));
    let res = bare()
        .get(format!("{base}/get/role"))
        .header(COOKIE, format!("sessionid={forged}.{tag}"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        body(res).await,
        "none",
        "a forged cookie is a new, empty session"
    );
    let res = bare()
        .get(format!("{base}/get/role"))
        .header(COOKIE, format!("sessionid={value}"))
        .send()
        .await
        .expect("get");
    assert_eq!(body(res).await, "\"user\"");

    // The deadline travels in the signed payload and is enforced.
    let res = bare()
        .post(format!("{base}/expire-now"))
        .send()
        .await
        .expect("expire");
    let expired = cookie_value(&the_set_cookie(res.headers()));
    let res = bare()
        .get(format!("{base}/get/x"))
        .header(COOKIE, format!("sessionid={expired}"))
        .send()
        .await
        .expect("get");
    assert_eq!(body(res).await, "none");

    // Above 4 KB: 413, no cookie.
    let res = bare()
        .post(format!("{base}/big/5000"))
        .send()
        .await
        .expect("big");
    assert_eq!(res.status(), 413);
    assert!(set_cookies(res.headers()).is_empty());
    let res = bare()
        .post(format!("{base}/big/1000"))
        .send()
        .await
        .expect("small");
    assert_eq!(res.status(), 200);
}

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

fn registry() -> EngineRegistry {
    let r = EngineRegistry::new();
    backend_cache::register(&r);
    session_axum::register(&r);
    r
}

#[tokio::test]
async fn the_layer_comes_from_sessions_toml() {
    let cfg = Config::from_toml(
        r#"
        engine = "memory"
        [expiry]
        default_age_secs = 3600
        [cookie]
        name = "sid"
        secure = false
        same_site = "strict"
        [middleware]
        save_every_request = true
        "#,
    );
    let layer = SessionLayer::from_config(&cfg, &registry())
        .await
        .expect("layer");
    assert_eq!(layer.store().expect("a store").engine(), "memory");
    let base = serve_layer(layer).await;
    let res = bare()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .expect("set");
    let sc = the_set_cookie(res.headers());
    assert!(sc.starts_with("sid="), "{sc}");
    assert!(
        sc.contains("SameSite=Strict") && sc.contains("Max-Age=3600"),
        "{sc}"
    );
    assert!(!sc.contains("Secure"), "{sc}");

    let cfg = Config::from_toml(&format!(
        "engine = \"cookie\"\n[cookie]\nsecure = false\nsigning_keys = [\"{NEW_KEY}\"]"
    ));
    let layer = SessionLayer::from_config(&cfg, &registry())
        .await
        .expect("cookie layer");
    assert!(layer.store().is_none());
    let base = serve_layer(layer).await;
    let c = browser();
    c.post(format!("{base}/set/a/1")).send().await.expect("set");
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert_eq!(body(res).await, "\"1\"");
}

#[tokio::test]
async fn bad_configuration_fails_at_startup_naming_the_key() {
    let r = registry();
    let err = SessionLayer::from_config(
        &Config::from_toml("[cookie]\nhost_prefix = true\ndomain = \"example.com\""),
        &r,
    )
    .await
    .expect_err("host prefix with a domain");
    assert!(
        matches!(&err, Error::Config { key: Some(k), .. } if k == "cookie.domain"),
        "{err}"
    );
    let err = SessionLayer::from_config(&Config::from_toml("engine = \"cookie\""), &r)
        .await
        .expect_err("cookie engine without a key");
    assert!(err.to_string().contains("cookie.signing_keys"), "{err}");
    let err = SessionLayer::from_config(&Config::from_toml("engine = \"nope\""), &r)
        .await
        .expect_err("unknown engine");
    assert!(
        err.to_string().contains("memory"),
        "lists the known engines: {err}"
    );
    let err = SessionLayer::from_config(&Config::from_toml("[cookie]\nsecure = \"yes\""), &r)
        .await
        .expect_err("bad type");
    assert!(
        matches!(&err, Error::Config { key: Some(k), .. } if k == "cookie.secure"),
        "{err}"
    );
    // Building the cookie engine as a store explains itself.
    let err = r
        .build(&Config::from_toml("engine = \"cookie\""))
        .await
        .expect_err("not a store");
    assert!(
        err.to_string().contains("SessionLayer::from_config"),
        "{err}"
    );
}
