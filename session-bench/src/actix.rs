//! Requests per second of an actix-web 4 handler that reads and writes one session
//! value, in process (the app built as `actix_web::test::init_service` does and called
//! through `Service::call`, no network), behind:
//! - our `session_actix::SessionMiddleware` over our Redis store (`engine = "cache"`);
//! - actix-session 0.11's `SessionMiddleware` over its `RedisSessionStore`;
//! - no session middleware (a handler doing the same bookkeeping in a static), for the
//!   middleware's overhead.
//!
//! Both session setups use the same Redis server (`SESSIONS_TEST_REDIS_URL`, the
//! loopback server by default), signed cookies (actix-session cannot send unsigned
//! ones) and a two-week expiry. The request mix is the axum comparison's
//! ([`crate::layer`]): every round runs every setup once, in rotating order; every
//! request carries the cookie of one of `sessions` existing sessions, round robin, and
//! every answer is checked against the counter its session must show.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Service, ServiceFactory, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpResponse, web};
use integration_tests::servers;

use crate::harness::R;
use crate::layer::LayerRow;
use crate::ours::from_toml;
use crate::wrong;

/// The 64-byte key both session setups sign their cookies with.
const KEY: &[u8; 64] = b"session-bench actix comparison signing key, 64 bytes long.......";

async fn ours(session: session_actix::Session) -> Result<String, session_actix::SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0);
    session.insert("n", &(n + 1)).await?;
    Ok(n.to_string())
}

async fn theirs(session: actix_session::Session) -> actix_web::Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(n.to_string())
}

static BARE: AtomicU64 = AtomicU64::new(0);

async fn bare() -> HttpResponse {
    HttpResponse::Ok().body(BARE.fetch_add(1, Ordering::Relaxed).to_string())
}

/// Builds the app's service as `actix_web::test::init_service` does, its start-up error
/// made a [`crate::harness::BenchError`] instead of a panic.
async fn init<A, S, B>(
    app: A,
) -> R<impl Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>>
where
    A: IntoServiceFactory<S, actix_http::Request>,
    S: ServiceFactory<
            actix_http::Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    S::InitError: std::fmt::Debug,
{
    match app.into_factory().new_service(AppConfig::default()).await {
        Ok(s) => Ok(s),
        Err(e) => wrong!("the actix-web app did not start: {e:?}"),
    }
}

type Answer = (StatusCode, Option<String>, Vec<u8>);
type Call = Box<dyn Fn(Option<&str>) -> Pin<Box<dyn Future<Output = R<Answer>>>>>;

/// Wraps an initialised app into one request function: status, the `Set-Cookie`
/// name=value, and the body.
fn caller<S, B>(app: S) -> Call
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
        + 'static,
    B: MessageBody + 'static,
{
    let app = Rc::new(app);
    Box::new(move |cookie| {
        let mut req = actix_web::test::TestRequest::get().uri("/");
        if let Some(c) = cookie {
            req = req.insert_header((header::COOKIE, c.to_owned()));
        }
        let req = req.to_request();
        let app = Rc::clone(&app);
        Box::pin(async move {
            let res = match app.call(req).await {
                Ok(res) => res,
                Err(e) => return wrong!("the app answered an error: {e}"),
            };
            let status = res.status();
            let set_cookie = res
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_owned);
            let body = match actix_web::body::to_bytes(res.into_body()).await {
                Ok(b) => b,
                Err(e) => {
                    let e: Box<dyn std::error::Error> = e.into();
                    return wrong!("reading the body failed: {e}");
                }
            };
            Ok((status, set_cookie, body.to_vec()))
        })
    })
}

struct Setup {
    name: &'static str,
    call: Call,
    cookies: Vec<String>,
    /// The body each next request must answer: per session, or one shared counter for
    /// the setup without sessions.
    next: Vec<u64>,
}

async fn setup(name: &'static str, call: Call, sessions: usize, needs_cookie: bool) -> R<Setup> {
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (status, set_cookie, body) = call(None).await?;
        if status != StatusCode::OK {
            return wrong!(
                "{name}: warm-up request answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        match (set_cookie, needs_cookie) {
            (Some(c), _) => cookies.push(c),
            (None, false) => cookies.push(String::new()),
            (None, true) => return wrong!("{name}: no session cookie on the first request"),
        }
    }
    let next = if needs_cookie {
        let (_, _, body) = call(Some(&cookies[0])).await?;
        if body != b"1" {
            return wrong!(
                "{name}: the session was not read back (answered {:?})",
                String::from_utf8_lossy(&body)
            );
        }
        let mut next = vec![1; cookies.len()];
        next[0] = 2;
        next
    } else {
        vec![BARE.load(Ordering::Relaxed)]
    };
    Ok(Setup {
        name,
        call,
        cookies,
        next,
    })
}

/// Wall-time bound of one setup's share of a round: the loop stops at `requests`
/// requests or after this long, whichever comes first.
const ROUND_BUDGET: Duration = Duration::from_secs(10);

/// Up to `requests` requests (and at most [`ROUND_BUDGET`]), each checked: status 200
/// and the body the session's counter must show (so a middleware that loses or mixes up
/// sessions fails the run).
async fn run_one(s: &mut Setup, requests: usize) -> R<f64> {
    let mut want = String::with_capacity(20);
    let start = Instant::now();
    let mut done = 0;
    for i in 0..requests {
        if start.elapsed() > ROUND_BUDGET {
            break;
        }
        let slot = i % s.cookies.len();
        let cookie = &s.cookies[slot];
        let cookie = (!cookie.is_empty()).then_some(cookie.as_str());
        let (status, _, body) = (s.call)(cookie).await?;
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
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Runs the comparison: `requests` per setup per round, `rounds` rounds, `run` naming
/// this invocation's Redis keys. Runs on the calling thread (actix-web's services are
/// not `Send`), inside a `LocalSet`.
pub async fn run(requests: usize, rounds: usize, sessions: usize, run: &str) -> R<Vec<LayerRow>> {
    tokio::task::LocalSet::new()
        .run_until(compare(requests, rounds, sessions, run))
        .await
}

async fn compare(requests: usize, rounds: usize, sessions: usize, run: &str) -> R<Vec<LayerRow>> {
    let url = servers::redis_url();
    let prefix = format!("bench-actix-{run}:");
    let their_prefix = format!("bench-actix-session-{run}:");
    let result = measure(requests, rounds, sessions, &url, &prefix, &their_prefix).await;
    let cleaned = delete_prefixes(&url, &[&prefix, &their_prefix]).await;
    let rows = result?;
    cleaned?;
    Ok(rows)
}

/// Deletes the sessions both setups left in Redis (`SCAN MATCH prefix*`, then `DEL`),
/// bounded in `SCAN` calls.
async fn delete_prefixes(url: &str, prefixes: &[&str]) -> R<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    for prefix in prefixes {
        let mut cursor: u64 = 0;
        for _ in 0..100_000 {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

async fn measure(
    requests: usize,
    rounds: usize,
    sessions: usize,
    url: &str,
    prefix: &str,
    their_prefix: &str,
) -> R<Vec<LayerRow>> {
    let store = from_toml(&format!(
        "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = {prefix:?}\n"
    ))
    .await
    .map_err(|e| {
        format!("our Redis store at {url} (start Redis or set SESSIONS_TEST_REDIS_URL): {e}")
    })?;
    let our_mw = session_actix::SessionMiddleware::builder(Arc::clone(&store))
        .secure(false)
        .signing_keys([String::from_utf8_lossy(KEY).into_owned()])
        .build()?;

    let their_prefix = their_prefix.to_owned();
    let their_store = actix_session::storage::RedisSessionStore::builder(url)
        .cache_keygen(move |key| format!("{their_prefix}{key}"))
        .build()
        .await
        .map_err(|e| format!("actix-session's Redis store at {url}: {e}"))?;
    let their_mw = actix_session::SessionMiddleware::builder(
        their_store,
        actix_web::cookie::Key::from(&KEY[..]),
    )
    .cookie_secure(false)
    .cookie_content_security(actix_session::config::CookieContentSecurity::Signed)
    .session_lifecycle(
        actix_session::config::PersistentSession::default()
            .session_ttl(actix_web::cookie::time::Duration::weeks(2)),
    )
    .build();

    let ours_app = init(App::new().wrap(our_mw).route("/", web::get().to(ours))).await?;
    let theirs_app = init(App::new().wrap(their_mw).route("/", web::get().to(theirs))).await?;
    let bare_app = init(App::new().route("/", web::get().to(bare))).await?;

    let mut setups = [
        setup("session-actix (Redis)", caller(ours_app), sessions, true).await?,
        setup(
            "actix-session 0.11 (Redis)",
            caller(theirs_app),
            sessions,
            true,
        )
        .await?,
        setup("no session middleware", caller(bare_app), sessions, false).await?,
    ];
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
