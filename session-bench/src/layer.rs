//! Requests per second of a handler that reads and writes one session value, in process
//! (`tower::ServiceExt::oneshot`, no network), behind:
//! - our `SessionLayer` over the in-process memory store;
//! - tower-sessions 0.15's `SessionManagerLayer` over its `MemoryStore` (same cookie
//!   attributes, same sliding two-week expiry);
//! - no session layer (a handler doing the same bookkeeping in a static), for the
//!   layer's overhead;
//! - our `SessionLayer` in front of that handler, which never touches its session, on
//!   requests without a cookie: what the layer costs a request that does not use it
//!   (an asset, a health check).
//!
//! Every round runs every setup once, in rotating order; every request to a setup with
//! sessions carries the cookie of one of `sessions` existing sessions, round robin (the
//! other two get no cookie).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use session_axum::{Session, SessionError, SessionLayer};
use tower::ServiceExt;

use crate::harness::{R, median, quantile};
use crate::wrong;

/// One setup's figures.
#[derive(serde::Serialize)]
pub struct LayerRow {
    /// The setup.
    pub name: String,
    /// Median requests/s over the rounds.
    pub median: f64,
    /// (max - min) / median, percent.
    pub spread_pct: f64,
    /// The first setup's speed over this one's, taken within each round (the setups run
    /// back to back in a round, so what the machine does meanwhile weighs on both
    /// alike), as (median, first quartile, third quartile) over the rounds.
    pub paired: (f64, f64, f64),
    /// Microseconds per request this setup's rounds took more than the same round of the
    /// setup named in [`PAIRED_WITH`] took, median over the rounds (0 for a setup not
    /// compared that way).
    pub extra_us: f64,
}

/// Setups whose cost is also read as the time they add over another setup's, round by
/// round: (setup, the setup it adds to).
pub const PAIRED_WITH: [(&str, &str); 1] =
    [("session-axum, session untouched", "no session layer")];

impl LayerRow {
    /// The rows of setups `names` from their requests/s, `rates[setup][round]` (every
    /// setup measured in every round): per-setup medians and spreads, and the ratios and
    /// differences taken within each round.
    pub fn from_rounds(names: &[&str], rates: &[Vec<f64>]) -> Vec<LayerRow> {
        let first = rates.first().cloned().unwrap_or_default();
        names
            .iter()
            .zip(rates)
            .map(|(name, r)| {
                let m = median(r);
                let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = r.iter().copied().fold(0.0, f64::max);
                let ratios: Vec<f64> = first
                    .iter()
                    .zip(r)
                    .filter(|(_, b)| **b > 0.0)
                    .map(|(a, b)| a / b)
                    .collect();
                let extra: Vec<f64> = PAIRED_WITH
                    .iter()
                    .find(|(setup, _)| setup == name)
                    .and_then(|(_, base)| names.iter().position(|n| n == base))
                    .map(|b| {
                        r.iter()
                            .zip(&rates[b])
                            .filter(|(x, y)| **x > 0.0 && **y > 0.0)
                            .map(|(x, y)| 1e6 / x - 1e6 / y)
                            .collect()
                    })
                    .unwrap_or_default();
                LayerRow {
                    name: (*name).to_owned(),
                    median: m,
                    spread_pct: if m > 0.0 { (hi - lo) / m * 100.0 } else { 0.0 },
                    paired: (
                        median(&ratios),
                        quantile(&ratios, 0.25),
                        quantile(&ratios, 0.75),
                    ),
                    extra_us: median(&extra),
                }
            })
            .collect()
    }
}

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

static UNTOUCHED: AtomicU64 = AtomicU64::new(0);

/// [`bare`] behind our layer (a counter of its own: the setups run interleaved).
async fn untouched() -> String {
    UNTOUCHED.fetch_add(1, Ordering::Relaxed).to_string()
}

struct Setup {
    name: &'static str,
    app: Router,
    cookies: Vec<String>,
    /// The body each next request must answer: per session (the counter the handler
    /// keeps in it), or one shared counter for the setup without sessions.
    next: Vec<u64>,
}

/// One in-process GET of `uri` with `cookie`: the status, the `Set-Cookie` pair (name and
/// value) if any, and the body.
pub async fn call(
    app: &Router,
    uri: &str,
    cookie: Option<&str>,
) -> R<(StatusCode, Option<String>, Vec<u8>)> {
    let mut req = Request::builder().uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let res = app.clone().oneshot(req.body(Body::empty())?).await?;
    let status = res.status();
    let set_cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await?;
    Ok((status, set_cookie, body.to_vec()))
}

/// `counter`: the static the handler counts in, for setups without sessions.
async fn setup(
    name: &'static str,
    app: Router,
    sessions: usize,
    counter: Option<&'static AtomicU64>,
) -> R<Setup> {
    let needs_cookie = counter.is_none();
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (status, set_cookie, _) = call(&app, "/", None).await?;
        if status != StatusCode::OK {
            return wrong!("{name}: warm-up request answered {status}");
        }
        match (set_cookie, needs_cookie) {
            (Some(c), true) => cookies.push(c),
            (None, false) => cookies.push(String::new()),
            (None, true) => return wrong!("{name}: no session cookie on the first request"),
            (Some(_), false) => return wrong!("{name}: a session cookie where none was used"),
        }
    }
    let next = if needs_cookie {
        let (_, _, body) = call(&app, "/", Some(&cookies[0])).await?;
        if body != b"1" {
            return wrong!("{name}: the session was not read back");
        }
        // Every session answered 0 once; the first one 1 as well.
        let mut next = vec![1; cookies.len()];
        next[0] = 2;
        next
    } else {
        vec![counter.map_or(0, |c| c.load(Ordering::Relaxed))]
    };
    Ok(Setup {
        name,
        app,
        cookies,
        next,
    })
}

/// `requests` requests, each checked: status 200 and the body the session's counter
/// must show (so a layer that loses or mixes up sessions fails the run).
async fn run_one(s: &mut Setup, requests: usize) -> R<f64> {
    let mut want = String::with_capacity(20);
    let start = Instant::now();
    for i in 0..requests {
        let slot = i % s.cookies.len();
        let cookie = &s.cookies[slot];
        let cookie = (!cookie.is_empty()).then_some(cookie.as_str());
        let (status, _, body) = call(&s.app, "/", cookie).await?;
        if status != StatusCode::OK {
            return wrong!("{}: request {i} answered {status}", s.name);
        }
        let shared = s.next.len();
        let counter = &mut s.next[slot % shared];
        want.clear();
        write!(want, "{counter}")?;
        if body != want.as_bytes() {
            return wrong!(
                "{}: request {i} answered {:?}, wanted {want}",
                s.name,
                String::from_utf8_lossy(&body)
            );
        }
        *counter += 1;
    }
    Ok(requests as f64 / start.elapsed().as_secs_f64())
}

/// The setups' names, as [`run`] reports them and [`count_one`] takes them.
pub const SETUPS: [&str; 4] = [
    "session-axum",
    "tower-sessions 0.15",
    "no session layer",
    "session-axum, session untouched",
];

/// Our layer over a memory engine of its own, built directly (from configuration the
/// engine would wear the timeout layer, whose timers the instruction count would see).
fn our_layer() -> R<SessionLayer> {
    Ok(
        SessionLayer::builder(Arc::new(backend_cache::MemoryStore::new()))
            .secure(false)
            .build()?,
    )
}

/// Builds the setup named `name` (one of [`SETUPS`]) with `sessions` sessions.
async fn build(name: &str, sessions: usize) -> R<Setup> {
    let Some(&name) = SETUPS.iter().find(|s| **s == name) else {
        return wrong!("unknown middleware setup {name:?} (known: {SETUPS:?})");
    };
    let (app, counter) = match name {
        "session-axum" => (
            Router::new().route("/", get(ours)).layer(our_layer()?),
            None,
        ),
        "tower-sessions 0.15" => {
            let layer =
                tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
                    .with_secure(false)
                    .with_expiry(tower_sessions::Expiry::OnInactivity(
                        tower_sessions::cookie::time::Duration::weeks(2),
                    ));
            (Router::new().route("/", get(theirs)).layer(layer), None)
        }
        "session-axum, session untouched" => (
            Router::new().route("/", get(untouched)).layer(our_layer()?),
            Some(&UNTOUCHED),
        ),
        _ => (Router::new().route("/", get(bare)), Some(&BARE)),
    };
    // Routes built once, as `axum::serve` builds them (`into_make_service` calls
    // `with_state`): an unfinished router builds each handler's route, and applies
    // every layer to it, again on every request.
    setup(name, app.with_state(()), sessions, counter).await
}

/// Runs the comparison: `requests` per setup per round, `rounds` rounds.
pub async fn run(requests: usize, rounds: usize, sessions: usize) -> R<Vec<LayerRow>> {
    let mut setups = Vec::with_capacity(SETUPS.len());
    for name in SETUPS {
        setups.push(build(name, sessions).await?);
    }
    for s in &mut setups {
        run_one(s, requests / 10 + 1).await?;
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        for j in 0..setups.len() {
            let i = (j + round) % setups.len();
            results[i].push(run_one(&mut setups[i], requests).await?);
        }
    }
    let names: Vec<&str> = setups.iter().map(|s| s.name).collect();
    Ok(LayerRow::from_rounds(&names, &results))
}

/// Builds the setup `name` alone (64 sessions, 500 checked warm-up requests) and runs
/// `requests` more: what the instruction count (`crate::instructions`) measures, the
/// process's total at two request counts giving the cost of one request.
pub async fn count_one(name: &str, requests: usize) -> R<()> {
    let mut s = build(name, 64).await?;
    run_one(&mut s, 500).await?;
    run_one(&mut s, requests).await?;
    Ok(())
}
