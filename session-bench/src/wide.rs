//! Requests that read one key of a session, by the session's number of keys
//! (`--only wide`): our axum layer over the memory engine and over SQLite, in process
//! (`tower::ServiceExt::oneshot`), sessions of 10 and of 1,000 keys (each value a
//! 16-character string), and the same handler with no session layer. Each request
//! carries the cookie of one of 64 sessions of its size, round robin, and reads one key
//! (`k5`: in the middle of the session's keys in their stored order, `k0`, `k1`, `k10`,
//! `k100`, ..., so a lookup that walks the keys in order passes about half of them),
//! which the answer echoes; nothing is written, so the layer saves nothing.
//! Rounds run every setup in rotating order; the figure is µs per request (median over
//! rounds) and the 1,000-key setup over the 10-key one (the goal of issue 20: at most
//! 2x). The same sessions are then written: each request sets the key it reads (to the
//! value it holds), so the layer saves the session; the write rows measure what a change
//! costs as the session grows.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use session_axum::{Session, SessionError, SessionLayer};
use session_core::SessionStore;

use crate::harness::{R, median};
use crate::layer::call;
use crate::wrong;

/// Sessions per setup.
const SESSIONS: usize = 64;

/// Fills the session with `n` keys `k0`..: the setup's first request.
async fn fill(session: Session, Path(n): Path<usize>) -> Result<String, SessionError> {
    for i in 0..n {
        session
            .insert(&format!("k{i}"), &format!("value-{i:010}"))
            .await?;
    }
    Ok(n.to_string())
}

/// The key each request reads (see the module docs).
const READ: &str = "k5";

/// The value [`fill`] gives [`READ`], which every answer echoes.
const VALUE: &str = "value-0000000005";

/// Reads one key.
async fn read_one(session: Session) -> Result<String, SessionError> {
    Ok(session.get::<String>(READ).await?.unwrap_or_default())
}

/// Writes one key (the value it holds already) and answers it: the session is saved.
async fn write_one(session: Session) -> Result<String, SessionError> {
    session.insert(READ, VALUE).await?;
    Ok(VALUE.to_owned())
}

/// The handler without sessions: the same answer, from a constant.
async fn bare() -> &'static str {
    VALUE
}

#[derive(Clone)]
struct Setup {
    name: String,
    app: Router,
    cookies: Vec<String>,
    /// The request's path: `/` reads, `/write` writes.
    path: &'static str,
}

/// Our layer over `store`, with [`SESSIONS`] sessions of `keys` keys.
async fn ours(name: String, store: Arc<dyn SessionStore>, keys: usize) -> R<Setup> {
    let layer = SessionLayer::builder(store).secure(false).build()?;
    let app = Router::new()
        .route("/", get(read_one))
        .route("/write", get(write_one))
        .route("/fill/{n}", get(fill))
        .layer(layer)
        .with_state(());
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let (status, cookie, _) = call(&app, &format!("/fill/{keys}"), None).await?;
        match (status, cookie) {
            (StatusCode::OK, Some(c)) => cookies.push(c),
            (s, c) => return wrong!("{name}: filling a session answered {s}, cookie {c:?}"),
        }
    }
    Ok(Setup {
        name,
        app,
        cookies,
        path: "/",
    })
}

/// `requests` requests, each checked (status 200, the value of `k5`, no new cookie);
/// µs per request.
async fn run_one(s: &Setup, requests: usize) -> R<f64> {
    let start = Instant::now();
    for i in 0..requests {
        let cookie = s
            .cookies
            .get(i % s.cookies.len().max(1))
            .map(String::as_str);
        let (status, set_cookie, body) = call(&s.app, s.path, cookie).await?;
        // A write may renew the cookie, never change the key.
        let cookie_ok = set_cookie.is_none() || (s.path != "/" && set_cookie.as_deref() == cookie);
        if status != StatusCode::OK || body != VALUE.as_bytes() || !cookie_ok {
            return wrong!(
                "{}: request {i} answered {status} {:?} (cookie {set_cookie:?})",
                s.name,
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / requests as f64)
}

/// Runs the comparison: `requests` per setup per round, `rounds` rounds; a Markdown
/// table.
pub async fn run(requests: usize, rounds: usize) -> R<String> {
    let dir = tempfile::tempdir()?;
    let mut setups = vec![Setup {
        name: "no session layer".into(),
        app: Router::new().route("/", get(bare)).with_state(()),
        cookies: Vec::new(),
        path: "/",
    }];
    for engine in ["memory", "sqlite"] {
        for keys in [10, 1_000] {
            let store = match engine {
                "memory" => crate::ours::from_toml("engine = \"memory\"\n").await?,
                _ => {
                    let url = format!(
                        "sqlite://{}",
                        dir.path().join(format!("w{keys}.db")).display()
                    );
                    crate::groups::db_store(&url, "sessions").await? as Arc<dyn SessionStore>
                }
            };
            setups.push(ours(format!("{engine}, {keys} keys"), store, keys).await?);
        }
    }
    // The same sessions, each request writing the key it read (and so saving).
    let writes: Vec<Setup> = setups[1..]
        .iter()
        .map(|s| Setup {
            name: format!("{}, write", s.name),
            path: "/write",
            ..s.clone()
        })
        .collect();
    setups.extend(writes);
    for s in &setups {
        run_one(s, requests / 10 + 1).await?;
    }
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        for j in 0..setups.len() {
            let i = (j + round) % setups.len();
            us[i].push(run_one(&setups[i], requests).await?);
        }
    }
    let med: Vec<f64> = us.iter().map(|v| median(v)).collect();
    let mut md = String::from(
        "| setup | µs/request (median) | range | over no layer, µs |\n|---|--:|--:|--:|\n",
    );
    for (s, (m, v)) in setups.iter().zip(med.iter().zip(&us)) {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        writeln!(
            md,
            "| {} | {m:.2} | {lo:.2}-{hi:.2} | {:.2} |",
            s.name,
            m - med[0]
        )?;
    }
    writeln!(md)?;
    for (e, (ten, thousand)) in [("memory", (1, 2)), ("sqlite", (3, 4))] {
        writeln!(
            md,
            "{e}: a request reading one key of a 1,000-key session costs {:.2}x one of a 10-key session",
            med[thousand] / med[ten]
        )?;
        writeln!(
            md,
            "{e}: a request writing one key of a 1,000-key session costs {:.2}x one of a 10-key session",
            med[thousand + 4] / med[ten + 4]
        )?;
    }
    Ok(md)
}
