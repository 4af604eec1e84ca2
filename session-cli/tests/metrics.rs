//! `GET /metrics` of the built `sessions demo`: after a known mix of requests (a new
//! visitor, page views, a cart add, a login, a logout, a stale cookie), the Prometheus
//! page carries exactly the counts that mix makes; and a demo running the background
//! cleanup stops on SIGTERM.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::COOKIE;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn op(page: &str, operation: &str, outcome: &str) -> Option<f64> {
    sample(
        page,
        &format!(
            "session_store_operations_total{{engine=\"memory\",operation=\"{operation}\",outcome=\"{outcome}\"}}"
        ),
    )
}

fn action(page: &str, action: &str) -> Option<f64> {
    sample(
        page,
        &format!("session_request_actions_total{{action=\"{action}\"}}"),
    )
}

#[tokio::test]
async fn the_metrics_page_counts_a_known_request_mix_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("Sessions.toml");
    // The `metrics` layer is not listed: the demo adds it. The cleanup runs hourly, so
    // it removes nothing during the test but must stop with the server.
    std::fs::write(
        &config,
        "engine = \"memory\"\n[cleanup]\ninterval_secs = 3600\n",
    )
    .expect("write config");
    let mut demo = support::spawn_demo(&config, dir.path(), "error");
    demo.wait_ready(Instant::now() + START_TIMEOUT);
    let base = demo.base.clone();
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // 1. A new visitor: the page view creates the session.
    let res = c.get(format!("{base}/")).send().await.expect("view 1");
    assert_eq!(res.status(), StatusCode::OK);
    // 2. A second view: loaded, updated.
    c.get(format!("{base}/")).send().await.expect("view 2");
    // 3. A cart add (303, not followed): loaded, updated.
    let res = c
        .post(format!("{base}/cart/add"))
        .form(&[("item", "kiwi")])
        .send()
        .await
        .expect("add");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // 4. Login: loaded, key cycled (a create and a delete), updated.
    c.post(format!("{base}/login"))
        .form(&[("username", "ada")])
        .send()
        .await
        .expect("login");
    // 5. Logout: flushed (a delete, no load).
    c.post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    // 6. A well-formed key the store does not know: one load that misses.
    let res = reqwest::Client::new()
        .get(format!("{base}/state"))
        .header(COOKIE, format!("sessionid={}", "q".repeat(32)))
        .send()
        .await
        .expect("stale");
    assert_eq!(res.status(), StatusCode::OK);

    let res = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4"),
    );
    assert!(
        res.headers().get(reqwest::header::SET_COOKIE).is_none(),
        "a scrape makes no session"
    );
    let page = res.text().await.expect("page");

    assert_eq!(op(&page, "create", "created"), Some(2.0), "{page}");
    assert_eq!(op(&page, "load", "hit"), Some(3.0), "{page}");
    assert_eq!(op(&page, "load", "miss"), Some(1.0), "{page}");
    assert_eq!(op(&page, "update", "ok"), Some(3.0), "{page}");
    assert_eq!(op(&page, "delete", "deleted"), Some(2.0), "{page}");
    assert_eq!(op(&page, "update", "conflict"), Some(0.0), "{page}");
    assert_eq!(op(&page, "load", "error"), Some(0.0), "{page}");
    assert!(!page.contains("session_store_errors_total{"), "{page}");
    // The in-process engine's durations are sampled (one call in 16, drawn at random):
    // of the 4 loads, none to all were timed, and the histogram agrees with itself.
    // A histogram with no observation yet may be left off the page: absent reads as 0.
    let timed = sample(
        &page,
        "session_store_operation_duration_seconds_count{engine=\"memory\",operation=\"load\"}",
    )
    .unwrap_or(0.0);
    assert!(timed <= 4.0, "{page}");
    assert_eq!(
        sample(
            &page,
            "session_store_operation_duration_seconds_bucket{engine=\"memory\",operation=\"load\",le=\"+Inf\"}"
        )
        .unwrap_or(0.0),
        timed,
        "{page}"
    );
    assert_eq!(sample(&page, "session_requests_total"), Some(6.0), "{page}");
    assert_eq!(action(&page, "loaded"), Some(3.0), "{page}");
    assert_eq!(action(&page, "saved"), Some(4.0), "{page}");
    assert_eq!(action(&page, "created"), Some(1.0), "{page}");
    assert_eq!(action(&page, "cycled"), Some(1.0), "{page}");
    assert_eq!(action(&page, "flushed"), Some(1.0), "{page}");
    assert_eq!(action(&page, "refused_deleted"), None, "{page}");

    // SIGTERM: the server and the background cleanup stop, and the process exits.
    demo.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = demo.child.try_wait().expect("wait") {
            assert!(status.success(), "the demo exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
