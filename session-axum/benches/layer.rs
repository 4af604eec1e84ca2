//! Requests per second of a handler that reads and writes one session value, in process
//! (`tower::ServiceExt::oneshot`, no network), behind:
//! - our `SessionLayer` over `backend_cache::MemoryStore`;
//! - tower-sessions 0.15's `SessionManagerLayer` over its `MemoryStore` (same cookie
//!   attributes, same sliding two-week expiry);
//! - no session layer (a handler doing the same bookkeeping in a static), for the
//!   layer's overhead.
//!
//! ```text
//! cargo bench -p session-axum --bench layer [-- --requests 20000 --rounds 5 --sessions 64 [--only session-axum]]
//! ```
//!
//! Each round runs every setup once, in rotating order, on one current-thread runtime;
//! every request carries the cookie of one of `--sessions` existing sessions, round
//! robin. Bounded: `requests * rounds` requests per setup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use backend_cache::MemoryStore;
use session_axum::{Session, SessionError, SessionLayer};
use tower::ServiceExt;

async fn ours(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0);
    session.insert("n", &(n + 1)).await?;
    Ok(n.to_string())
}

async fn theirs(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("n")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    session
        .insert("n", n + 1)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

static BARE: AtomicU64 = AtomicU64::new(0);

async fn bare() -> String {
    BARE.fetch_add(1, Ordering::Relaxed).to_string()
}

struct Setup {
    name: &'static str,
    app: Router,
    /// `Cookie` header values, one per session.
    cookies: Vec<String>,
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(
    app: &Router,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, axum::body::Bytes) {
    let mut req = Request::builder().uri("/");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let req = req.body(Body::empty()).expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let set_cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    // Read the body, as a server would.
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, set_cookie, body)
}

async fn setup(name: &'static str, app: Router, sessions: usize, needs_cookie: bool) -> Setup {
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (status, set_cookie, _) = call(&app, None).await;
        assert_eq!(status, StatusCode::OK, "{name}: warm-up request failed");
        match (set_cookie, needs_cookie) {
            (Some(c), _) => cookies.push(c),
            (None, false) => cookies.push(String::new()),
            (None, true) => panic!("{name}: no session cookie on the first request"),
        }
    }
    if needs_cookie {
        // The sessions are really read back: the second visit sees the first write.
        let (_, _, body) = call(&app, Some(&cookies[0])).await;
        assert_eq!(&body[..], b"1", "{name}: the session was not read back");
    }
    Setup { name, app, cookies }
}

async fn run(s: &Setup, requests: usize) -> f64 {
    let start = Instant::now();
    for i in 0..requests {
        let cookie = &s.cookies[i % s.cookies.len()];
        let cookie = (!cookie.is_empty()).then_some(cookie.as_str());
        let (status, _, _) = call(&s.app, cookie).await;
        if status != StatusCode::OK {
            panic!("{}: request {i} answered {status}", s.name);
        }
    }
    requests as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let requests = arg("--requests", 20_000);
    let rounds = arg("--rounds", 5).max(1);
    let sessions = arg("--sessions", 64).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let our_layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
            .secure(false)
            .build()
            .expect("layer");
        let their_layer = tower_sessions::SessionManagerLayer::new(
            tower_sessions::MemoryStore::default(),
        )
        .with_secure(false)
        .with_expiry(tower_sessions::Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::weeks(2),
        ));
        let setups = [
            setup(
                "session-axum",
                Router::new().route("/", get(ours)).layer(our_layer),
                sessions,
                true,
            )
            .await,
            setup(
                "tower-sessions 0.15",
                Router::new().route("/", get(theirs)).layer(their_layer),
                sessions,
                true,
            )
            .await,
            setup(
                "no session layer",
                Router::new().route("/", get(bare)),
                sessions,
                false,
            )
            .await,
        ];
        // `--only <prefix>`: loop one setup (for profiling) and stop.
        if let Some(only) = arg_str("--only") {
            for s in setups.iter().filter(|s| s.name.starts_with(&only)) {
                let rate = run(s, requests * rounds).await;
                println!("{}: {rate:.0} req/s", s.name);
            }
            return;
        }
        // Warm caches and allocators before measuring.
        for s in &setups {
            run(s, requests / 10 + 1).await;
        }
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
        for round in 0..rounds {
            for j in 0..setups.len() {
                let i = (j + round) % setups.len();
                results[i].push(run(&setups[i], requests).await);
            }
        }
        println!(
            "{requests} requests x {rounds} rounds per setup, {sessions} sessions, in-process oneshot"
        );
        let mut medians = Vec::new();
        for (s, r) in setups.iter().zip(results.iter_mut()) {
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(0.0, f64::max);
            let m = median(r);
            medians.push(m);
            println!(
                "{:<22} median {:>9.0} req/s  (min {:>9.0}, max {:>9.0}, spread {:>4.1}%)  {:>6.2} µs/req",
                s.name,
                m,
                lo,
                hi,
                (hi - lo) / m * 100.0,
                1e6 / m
            );
        }
        let (ours, theirs, none) = (medians[0], medians[1], medians[2]);
        println!("session-axum / tower-sessions: {:.2}x", ours / theirs);
        println!(
            "session-axum overhead over no layer: {:.2} µs/req ({:.0}% of the bare request rate lost)",
            1e6 / ours - 1e6 / none,
            (1.0 - ours / none) * 100.0
        );
    });
}
