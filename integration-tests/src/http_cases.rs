//! One table of HTTP behaviour cases for every framework adapter, so a rule cannot
//! drift between them.
//!
//! A [`Case`] is a list of requests, each with what its response must show: status,
//! `Set-Cookie` (none, the deleting cookie, or a session cookie with given attributes
//! and a key that is new or the same as before), `Vary: Cookie`, body and headers. The
//! cases cover what session-axum's own HTTP tests cover, Django's
//! `SessionMiddlewareTests` included (each such case names the Django test it mirrors).
//!
//! A framework adapter joins by implementing [`HttpDriver`]: serve [`TestApp`] (whose
//! routes are framework-free: every request goes to [`TestApp::handle`]) behind the
//! framework's session middleware, built from a `Sessions.toml` text, on a loopback
//! port. [`run_http_cases`] then plays every case against it over real HTTP, keeping the
//! client's cookie as a browser would, and returns what failed.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use integration_tests::http_cases::{HttpDriver, Served, TestApp, run_http_cases};
//! # use session_core::{Config, EngineRegistry};
//! struct MyFramework;
//!
//! impl HttpDriver for MyFramework {
//!     fn name(&self) -> &'static str {
//!         "my-framework"
//!     }
//!     async fn serve(
//!         &self,
//!         config: &Config,
//!         registry: &EngineRegistry,
//!         app: Arc<TestApp>,
//!     ) -> session_core::Result<Served> {
//!         // Build the middleware from `config` and `registry`, route every request to
//!         // `app.handle(..)`, map its errors to the framework's session error
//!         // response, bind 127.0.0.1:0 and return the base URL.
//!         # unimplemented!()
//!     }
//! }
//!
//! # async fn run() {
//! let failures = run_http_cases(&MyFramework, || {
//!     Arc::new(backend_cache::MemoryStore::new()) as Arc<dyn session_core::SessionStore>
//! })
//! .await;
//! assert!(failures.is_empty(), "{failures:#?}");
//! # }
//! ```

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_core::{
    Capabilities, Config, EngineContext, EngineRegistry, Error, Expiry, Inserted, Record, Result,
    Session, SessionKey, SessionStore, Timestamp, async_trait,
};
use tokio::sync::{Barrier, Notify};

/// How long a coordinated step may wait before the case fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Signing keys for the rotation cases (at least 32 bytes each).
pub const OLD_KEY: &str = "old-signing-key-0123456789abcdefghijklmnop";
/// The key that replaces [`OLD_KEY`].
pub const NEW_KEY: &str = "new-signing-key-0123456789abcdefghijklmnop";

/// The HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

/// What a [`TestApp`] route answers (before the middleware adds its headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// A `Vary` header the handler sets itself.
    pub vary: Option<&'static str>,
}

impl Reply {
    fn ok(body: impl Into<String>) -> Self {
        Reply {
            status: 200,
            body: body.into(),
            vary: None,
        }
    }
}

/// Rendezvous points for handlers that must overlap.
#[derive(Debug)]
struct Coord {
    /// Two requests meet here after loading and before writing.
    pair: Barrier,
    /// The racing writer says it has changed the session.
    loaded: Notify,
    /// The racing writer may finish.
    proceed: Notify,
}

/// The application every driver serves. Its routes are plain functions of the
/// request's method, path and session, so each framework's routing is one catch-all
/// handler that calls [`TestApp::handle`]:
///
/// | route | does |
/// |---|---|
/// | `GET /get/{k}` | the value of `k` as JSON, or `none` |
/// | `POST /set/{k}/{v}`, `POST /del/{k}` | insert or remove a key |
/// | `POST /incr` | `update` a counter, answer its new value |
/// | `POST /login/{user}` | `cycle_key`, then store the user |
/// | `POST /logout` | `flush` |
/// | `GET /untouched` | never touches the session |
/// | `POST /fail/{status}` | change the session, answer `status` |
/// | `POST /browser-close`, `/expire-now`, `/fixed-deadline` | set an expiry |
/// | `POST /big/{n}` | store an `n`-byte string |
/// | `POST /keys/{n}` | insert `n` keys, one by one |
/// | `POST /vanish` | save, delete the record behind the session's back, change it again |
/// | `POST /together/{k}/{v}` | load, meet a second request, then write |
/// | `POST /slow-write` | write, then wait until the case lets it finish |
/// | `GET /vary-accept` | read the session and set `Vary: Accept-Encoding` itself |
#[derive(Debug)]
pub struct TestApp {
    coord: Coord,
}

type Handled = std::result::Result<Reply, Error>;

/// `f`, or a timeout error naming `what` after [`STEP_TIMEOUT`].
async fn within<F: std::future::Future>(what: &str, f: F) -> Result<F::Output> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| Error::Timeout {
            engine: format!("http-cases: {what}"),
            after: STEP_TIMEOUT,
        })
}

impl TestApp {
    fn new() -> Self {
        TestApp {
            coord: Coord {
                pair: Barrier::new(2),
                loaded: Notify::new(),
                proceed: Notify::new(),
            },
        }
    }

    /// Answers one request. A session error is returned as is: the driver answers it
    /// with its framework's session error response (which tells the middleware to
    /// store nothing); an unknown route answers 404.
    pub async fn handle(&self, method: Method, path: &str, session: &Session) -> Handled {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            (Method::Get, ["get", k]) => Ok(Reply::ok(match session.get_value(k).await? {
                Some(v) => v.to_string(),
                None => "none".into(),
            })),
            (Method::Post, ["set", k, v]) => {
                session.insert(k, v).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["del", k]) => {
                session.remove(k).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["incr"]) => {
                let n = session
                    .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok(Reply::ok(n.to_string()))
            }
            (Method::Post, ["login", user]) => {
                session.cycle_key().await?;
                session.insert("user", user).await?;
                Ok(Reply::ok("welcome"))
            }
            (Method::Post, ["logout"]) => {
                session.flush().await?;
                Ok(Reply::ok("bye"))
            }
            (Method::Get, ["untouched"]) => Ok(Reply::ok("ok")),
            (Method::Post, ["fail", status]) => {
                session.insert("doomed", &true).await?;
                Ok(Reply {
                    status: status.parse().unwrap_or(500),
                    body: "failed".into(),
                    vary: None,
                })
            }
            (Method::Post, ["browser-close"]) => {
                session.set_expiry(Expiry::BrowserClose);
                session.insert("x", &1).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["expire-now"]) => {
                session.insert("x", &1).await?;
                session.set_expiry(Expiry::At(Timestamp::now().add_secs(-10)));
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["fixed-deadline"]) => {
                session.insert("x", &1).await?;
                session.set_expiry(Expiry::At(Timestamp::now().add_secs(600)));
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["big", n]) => {
                session
                    .insert("blob", &"x".repeat(n.parse().unwrap_or(0)))
                    .await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["keys", n]) => {
                for i in 0..n.parse::<usize>().unwrap_or(0) {
                    session.insert(&format!("k{i}"), &i).await?;
                }
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["vanish"]) => {
                // Django's test_session_update_error_redirect.
                session.insert("x", &1).await?;
                session.save().await?;
                if let Some(k) = session.key() {
                    session.store().delete(&k).await?;
                }
                session.insert("y", &2).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["together", k, v]) => {
                session.load().await?;
                within("the other request", self.coord.pair.wait()).await?;
                session.insert(k, v).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Post, ["slow-write"]) => {
                session.insert("late", &"write").await?;
                self.coord.loaded.notify_one();
                within("the go-ahead", self.coord.proceed.notified()).await?;
                Ok(Reply::ok("ok"))
            }
            (Method::Get, ["vary-accept"]) => {
                let a: Option<String> = session.get("a").await?;
                Ok(Reply {
                    status: 200,
                    body: a.unwrap_or_else(|| "none".into()),
                    vary: Some("Accept-Encoding"),
                })
            }
            _ => Ok(Reply {
                status: 404,
                body: "no such route".into(),
                vary: None,
            }),
        }
    }
}

/// A running server: its base URL (`http://127.0.0.1:port`) and how to stop it.
pub struct Served {
    /// `http://127.0.0.1:port`, no trailing slash.
    pub base: String,
    /// Stops the server (called when the case is done).
    pub stop: Box<dyn FnOnce()>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("base", &self.base).finish()
    }
}

/// A framework adapter under test.
pub trait HttpDriver {
    /// The framework's name, for failure reports.
    fn name(&self) -> &'static str;

    /// Serves `app` on a fresh loopback port behind the framework's session middleware
    /// built by its `from_config` from `config` through `registry`. Every request goes
    /// to [`TestApp::handle`] with the request's session; an `Err` is answered with the
    /// framework's session error response, a [`Reply::vary`] is set as the response's
    /// `Vary` header.
    #[allow(async_fn_in_trait)] // drivers run in their framework's own runtime
    async fn serve(
        &self,
        config: &Config,
        registry: &EngineRegistry,
        app: Arc<TestApp>,
    ) -> Result<Served>;
}

/// What a request sends as its `Cookie` header.
#[derive(Clone, Debug)]
pub enum Send {
    /// No `Cookie` header.
    Nothing,
    /// The cookie the client holds, as a browser sends it (none when it holds none).
    Jar,
    /// A cookie the case kept earlier with [`Req::keep`].
    Kept(&'static str),
    /// These bytes; `{jar}` in them is replaced by the held `name=value`.
    Raw(Vec<u8>),
    /// The held cookie's value changed by a function, under the held name.
    Forged(fn(&str) -> String),
}

/// One request of a case.
#[derive(Clone, Debug)]
pub struct Req {
    method: Method,
    path: String,
    send: Send,
    keep: Option<&'static str>,
}

/// A `GET` that sends the held cookie.
pub fn get(path: impl Into<String>) -> Req {
    Req {
        method: Method::Get,
        path: path.into(),
        send: Send::Jar,
        keep: None,
    }
}

/// A `POST` that sends the held cookie.
pub fn post(path: impl Into<String>) -> Req {
    Req {
        method: Method::Post,
        ..get(path)
    }
}

impl Req {
    /// Sends no cookie.
    pub fn fresh(self) -> Self {
        self.sending(Send::Nothing)
    }

    /// Sends `send` as the `Cookie` header.
    pub fn sending(mut self, send: Send) -> Self {
        self.send = send;
        self
    }

    /// After the response, keeps the cookie then held under `name` (see
    /// [`Send::Kept`]).
    pub fn keep(mut self, name: &'static str) -> Self {
        self.keep = Some(name);
        self
    }
}

/// Which session key a session cookie must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyIs {
    /// Any key.
    Any,
    /// The key of the cookie the client held (the same session).
    Same,
    /// Not the key of the cookie the client held (a new session).
    New,
}

/// What the response's `Set-Cookie` must be.
#[derive(Clone, Debug)]
pub enum CookieIs {
    /// No `Set-Cookie`.
    Absent,
    /// Exactly this header (Django's deleting cookie).
    Exactly(String),
    /// A deleting cookie (empty value, `Max-Age=0`).
    Deletion,
    /// One session cookie.
    Session {
        /// Which key it carries.
        key: KeyIs,
        /// Substrings it must contain.
        has: Vec<&'static str>,
        /// Substrings it must not contain (compared case-insensitively).
        lacks: Vec<&'static str>,
        /// The range its `Max-Age` must be in.
        max_age: Option<RangeInclusive<i64>>,
    },
}

/// What a response must show.
#[derive(Clone, Debug)]
pub struct Expect {
    status: u16,
    cookie: CookieIs,
    /// `Some(v)`: whether `Vary` names `Cookie`; `None`: either.
    vary: Option<bool>,
    body: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
}

/// A 200 with no `Set-Cookie` and no `Vary: Cookie`; refine with the methods.
pub fn ok() -> Expect {
    Expect {
        status: 200,
        cookie: CookieIs::Absent,
        vary: Some(false),
        body: None,
        headers: Vec::new(),
    }
}

/// A response with `status`, no `Set-Cookie` and no `Vary: Cookie`.
pub fn status(status: u16) -> Expect {
    Expect { status, ..ok() }
}

impl Expect {
    /// A session cookie carrying `key`; it implies `Vary: Cookie`.
    pub fn cookie(mut self, key: KeyIs) -> Self {
        self.cookie = CookieIs::Session {
            key,
            has: Vec::new(),
            lacks: Vec::new(),
            max_age: None,
        };
        self.vary = Some(true);
        self
    }

    /// A session cookie with a new key.
    pub fn new_cookie(self) -> Self {
        self.cookie(KeyIs::New)
    }

    /// A session cookie with the held key.
    pub fn same_cookie(self) -> Self {
        self.cookie(KeyIs::Same)
    }

    /// The session cookie contains `attr`.
    pub fn has(mut self, attr: &'static str) -> Self {
        if let CookieIs::Session { has, .. } = &mut self.cookie {
            has.push(attr);
        }
        self
    }

    /// The session cookie does not contain `attr` (case-insensitively).
    pub fn lacks(mut self, attr: &'static str) -> Self {
        if let CookieIs::Session { lacks, .. } = &mut self.cookie {
            lacks.push(attr);
        }
        self
    }

    /// The session cookie's `Max-Age` is in `range`.
    pub fn max_age(mut self, range: RangeInclusive<i64>) -> Self {
        if let CookieIs::Session { max_age, .. } = &mut self.cookie {
            *max_age = Some(range);
        }
        self
    }

    /// Exactly this deleting cookie, with `Vary: Cookie`.
    pub fn deletes(mut self, exact: &str) -> Self {
        self.cookie = CookieIs::Exactly(exact.to_owned());
        self.vary = Some(true);
        self
    }

    /// Some deleting cookie, with `Vary: Cookie`.
    pub fn deletion(mut self) -> Self {
        self.cookie = CookieIs::Deletion;
        self.vary = Some(true);
        self
    }

    /// `Vary` names `Cookie`.
    pub fn varies(mut self) -> Self {
        self.vary = Some(true);
        self
    }

    /// `Vary` may or may not name `Cookie`.
    pub fn any_vary(mut self) -> Self {
        self.vary = None;
        self
    }

    /// The body is exactly `body`.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The response carries header `name` with exactly `value` (all its values joined
    /// by `, `).
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// One step of a case.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send a request, check its response.
    Send(Req, Expect),
    /// Start `slow` (which must go to `/slow-write`), run `during` while it waits, then
    /// let it finish and check it: a logout racing a save.
    Race {
        /// The slow request.
        slow: Req,
        /// Its expected response.
        expect: Expect,
        /// What happens while it waits.
        during: Vec<Step>,
    },
    /// Send two requests at once (both to `/together/..`): exactly the statuses
    /// `statuses` (in any order) must come back.
    Together(Req, Req, [u16; 2]),
    /// Switch the store off (`true`: every call fails like a refused connection) or on.
    Outage(bool),
    /// Move the held session's stored deadline to `secs` from now, without a save.
    AgeHeld(i64),
    /// Build the middleware again from this configuration (same store, same client):
    /// a redeployment, e.g. with rotated signing keys.
    Redeploy(String),
}

impl From<(Req, Expect)> for Step {
    fn from((r, e): (Req, Expect)) -> Self {
        Step::Send(r, e)
    }
}

/// A behaviour case: a configuration and the steps a client takes.
#[derive(Clone, Debug)]
pub struct Case {
    /// What the case shows.
    pub name: &'static str,
    /// The Django test it mirrors, if any.
    pub django: Option<&'static str>,
    /// The `Sessions.toml` the middleware is built from; `engine = "case"` (the case's
    /// store) unless it names another engine.
    pub config: String,
    /// The steps.
    pub steps: Vec<Step>,
}

fn case(name: &'static str, config: &str, steps: Vec<Step>) -> Case {
    Case {
        name,
        django: None,
        config: config.to_owned(),
        steps,
    }
}

fn django(name: &'static str, test: &'static str, config: &str, steps: Vec<Step>) -> Case {
    Case {
        django: Some(test),
        ..case(name, config, steps)
    }
}

fn s(r: Req, e: Expect) -> Step {
    Step::Send(r, e)
}

/// Plain HTTP in the cases: `secure = false` except where the flags are the point.
const PLAIN: &str = "[cookie]\nsecure = false\n";

/// The deleting cookie Django sends with default settings.
pub const DJANGO_DELETION: &str =
    "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax";

fn signed(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[cookie]\nsecure = false\nsigning_keys = [{}]\n",
        keys.join(", ")
    )
}

fn cookie_engine() -> String {
    format!("engine = \"cookie\"\n{}", signed(&[NEW_KEY]))
}

fn swap_tag_end(v: &str) -> String {
    let (body, tag) = v.rsplit_once('.').unwrap_or((v, ""));
    let end = if tag.ends_with("AA") { "BA" } else { "AA" };
    format!("{body}.{}{end}", &tag[..tag.len().saturating_sub(2)])
}

fn reversed_key(v: &str) -> String {
    let (key, tag) = v.split_once('.').unwrap_or((v, ""));
    format!("{}.{tag}", key.chars().rev().collect::<String>())
}

fn unsigned(v: &str) -> String {
    v.split_once('.').map_or(v, |(k, _)| k).to_owned()
}

fn forged_payload(v: &str) -> String {
    // Re-encode the cookie engine's payload with role=admin, keeping the tag.
    use base64_free::{decode, encode};
    let (payload, tag) = v.rsplit_once('.').unwrap_or((v, ""));
    let json = decode(payload).unwrap_or_default();
    let forged = String::from_utf8_lossy(&json).replace("\"user\"", "\"admin\"");
    format!("{}.{tag}", encode(forged.as_bytes()))
}

/// Minimal unpadded base64url, so the case table needs no extra dependency for one
/// forgery.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in text.bytes() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

/// Every case. See the module docs for what a case is.
pub fn http_cases() -> Vec<Case> {
    use KeyIs::*;
    let two_weeks = "Max-Age=1209600";
    vec![
        // ----- Flows a user notices -----
        case("login cycles the key and a counter persists", PLAIN, {
            let mut steps = vec![
                s(post("/set/cart/apple"), ok().new_cookie()),
                s(post("/login/ada"), ok().new_cookie()),
            ];
            for i in 1..=20 {
                steps.push(s(post("/incr"), ok().same_cookie().body(i.to_string())));
            }
            steps.push(s(get("/get/cart"), ok().varies().body("\"apple\"")));
            steps.push(s(get("/get/user"), ok().varies().body("\"ada\"")));
            steps
        }),
        case(
            "the pre-login key is dead after login (session fixation)",
            PLAIN,
            vec![
                s(post("/set/a/1").keep("planted"), ok().new_cookie()),
                s(post("/login/ada"), ok().new_cookie()),
                s(
                    get("/get/user").sending(Send::Kept("planted")),
                    ok().deletion().body("none"),
                ),
            ],
        ),
        case(
            "a logout racing a save is not resurrected (400)",
            PLAIN,
            vec![
                s(post("/set/user/ada").keep("ada"), ok().new_cookie()),
                Step::Race {
                    slow: post("/slow-write"),
                    expect: status(400)
                        .body(crate::http_cases::messages::INTERRUPTED)
                        .header("content-type", "text/plain; charset=utf-8"),
                    during: vec![s(post("/logout"), ok().deletes(DJANGO_DELETION))],
                },
                s(
                    get("/get/user").sending(Send::Kept("ada")),
                    ok().deletion().body("none"),
                ),
            ],
        ),
        django(
            "a session deleted during the request answers 400",
            "test_session_update_error_redirect",
            PLAIN,
            vec![s(
                post("/vanish").fresh(),
                status(400).body(crate::http_cases::messages::INTERRUPTED),
            )],
        ),
        django(
            "server errors neither save nor set a cookie",
            "test_session_save_on_500 / test_session_save_on_5xx",
            PLAIN,
            vec![
                s(post("/fail/500").fresh(), status(500).varies()),
                s(post("/fail/503").fresh(), status(503).varies()),
                s(post("/set/a/1"), ok().new_cookie()),
                s(post("/fail/500"), status(500).varies()),
                s(get("/get/doomed"), ok().varies().body("none")),
                s(get("/get/a"), ok().varies().body("\"1\"")),
            ],
        ),
        case(
            "browser-close sessions get no Max-Age; others get two weeks",
            PLAIN,
            vec![
                s(
                    post("/browser-close").fresh(),
                    ok().new_cookie().lacks("max-age").lacks("expires"),
                ),
                s(
                    post("/set/a/1").fresh(),
                    ok().new_cookie().has(two_weeks).has("; expires="),
                ),
            ],
        ),
        django(
            "the global browser-close setting drops Max-Age",
            "test_session_get_expire_at_browser_close",
            "[expiry]\nexpire_at_browser_close = true\n[cookie]\nsecure = false\n",
            vec![s(
                post("/set/a/1").fresh(),
                ok().new_cookie().lacks("max-age").lacks("expires"),
            )],
        ),
        case(
            "a fixed deadline sets Max-Age to what is left",
            PLAIN,
            vec![s(
                post("/fixed-deadline").fresh(),
                ok().new_cookie().max_age(598..=600),
            )],
        ),
        case(
            "an unknown client key is never adopted",
            PLAIN,
            vec![s(
                post("/set/a/1").sending(Send::Raw(
                    b"sessionid=abcdefghijklmnopqrstuvwxyz012345".to_vec(),
                )),
                ok().new_cookie().lacks("abcdefghijklmnopqrstuvwxyz012345"),
            )],
        ),
        case(
            "an untouched session sends nothing; a read-only one varies",
            PLAIN,
            vec![
                s(get("/untouched"), ok()),
                s(post("/set/a/1"), ok().new_cookie()),
                s(get("/untouched"), ok()),
                s(get("/get/a"), ok().varies().body("\"1\"")),
            ],
        ),
        case(
            "a handler's own Vary is kept and Cookie added once",
            PLAIN,
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(
                    get("/vary-accept"),
                    ok().varies()
                        .body("1")
                        .header("vary", "Accept-Encoding, Cookie"),
                ),
            ],
        ),
        // ----- Signing -----
        case(
            "a cookie signed with a rotated-out but accepted key still works",
            &signed(&[OLD_KEY]),
            vec![
                s(post("/set/a/1").keep("old"), ok().new_cookie().has(".")),
                Step::Redeploy(signed(&[NEW_KEY, OLD_KEY])),
                s(
                    get("/get/a").sending(Send::Kept("old")),
                    ok().varies().body("\"1\""),
                ),
                s(post("/set/b/2"), ok().same_cookie()),
                Step::Redeploy(signed(&[NEW_KEY])),
                s(get("/get/b"), ok().varies().body("\"2\"")),
                s(
                    get("/get/a").sending(Send::Kept("old")),
                    ok().deletion().body("none"),
                ),
            ],
        ),
        case(
            "a tampered signed cookie gets a new session",
            &signed(&[NEW_KEY]),
            vec![
                s(post("/set/a/1").keep("good"), ok().new_cookie()),
                s(
                    post("/set/b/2").sending(Send::Forged(reversed_key)),
                    ok().new_cookie(),
                ),
                s(get("/get/a"), ok().varies().body("none")),
                s(
                    post("/set/b/2").sending(Send::Forged(swap_tag_end)),
                    ok().new_cookie(),
                ),
                s(get("/get/a"), ok().varies().body("none")),
                s(
                    post("/set/b/2").sending(Send::Forged(unsigned)),
                    ok().new_cookie(),
                ),
                s(
                    get("/get/b").sending(Send::Kept("good")),
                    ok().varies().body("none"),
                ),
                s(
                    get("/get/a").sending(Send::Kept("good")),
                    ok().varies().body("\"1\""),
                ),
            ],
        ),
        // ----- Django's SessionMiddlewareTests -----
        django(
            "Secure, HttpOnly and SameSite=Lax by default",
            "test_secure_session_cookie / test_httponly_session_cookie",
            "",
            vec![s(
                post("/set/a/1"),
                ok().new_cookie()
                    .has("; Secure")
                    .has("; HttpOnly")
                    .has("SameSite=Lax")
                    .has("Path=/"),
            )],
        ),
        django(
            "SameSite=Strict",
            "test_samesite_session_cookie",
            "[cookie]\nsame_site = \"strict\"\n",
            vec![s(
                post("/set/a/1"),
                ok().new_cookie().has("SameSite=Strict"),
            )],
        ),
        django(
            "no HttpOnly when asked",
            "test_no_httponly_session_cookie",
            "[cookie]\nhttp_only = false\nsecure = false\n",
            vec![s(
                post("/set/a/1"),
                ok().new_cookie().lacks("httponly").lacks("secure"),
            )],
        ),
        case(
            "the __Host- prefix",
            "[cookie]\nhost_prefix = true\n",
            vec![s(
                post("/set/a/1"),
                ok().new_cookie()
                    .has("__Host-sessionid=")
                    .has("; Secure")
                    .has("Path=/")
                    .lacks("domain"),
            )],
        ),
        django(
            "delete on end sends Django's exact header",
            "test_session_delete_on_end",
            "",
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(post("/logout"), ok().deletes(DJANGO_DELETION).body("bye")),
                s(get("/get/a"), ok().varies().body("none")),
            ],
        ),
        django(
            "delete on end with a custom domain and path",
            "test_session_delete_on_end_with_custom_domain_and_path",
            "[cookie]\nsecure = false\ndomain = \".example.local\"\npath = \"/example/\"\n",
            vec![s(
                post("/logout").sending(Send::Raw(b"sessionid=abc".to_vec())),
                ok().deletes(
                    "sessionid=\"\"; Domain=.example.local; expires=Thu, 01 Jan 1970 00:00:00 GMT; \
                     Max-Age=0; Path=/example/; SameSite=Lax",
                ),
            )],
        ),
        django(
            "a flush without a cookie varies but sets no cookie",
            "test_flush_empty_without_session_cookie_doesnt_set_cookie",
            PLAIN,
            vec![s(post("/logout").fresh(), ok().varies().body("bye"))],
        ),
        django(
            "save_every_request renews the cookie of an untouched session",
            "test_save_every_request_with_non_empty_session_renews_session_cookie",
            "[cookie]\nsecure = false\n[middleware]\nsave_every_request = true\n",
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(get("/untouched"), ok().same_cookie()),
                s(get("/untouched").fresh(), ok()),
            ],
        ),
        django(
            "an emptied keyed session is still saved",
            "test_empty_session_saved",
            PLAIN,
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(post("/del/a"), ok().same_cookie()),
                s(post("/set/b/2"), ok().same_cookie()),
            ],
        ),
        // ----- Concurrency, outages, limits, touch -----
        case(
            "conflicts that keep winning answer 409",
            "save_attempts = 1\n[cookie]\nsecure = false\n",
            vec![
                s(post("/set/seed/1"), ok().new_cookie()),
                Step::Together(
                    post("/together/alpha/a"),
                    post("/together/beta/b"),
                    [200, 409],
                ),
            ],
        ),
        case(
            "disjoint concurrent changes both persist",
            PLAIN,
            vec![
                s(post("/set/seed/1"), ok().new_cookie()),
                Step::Together(
                    post("/together/alpha/a"),
                    post("/together/beta/b"),
                    [200, 200],
                ),
                s(get("/get/alpha"), ok().varies().body("\"a\"")),
                s(get("/get/beta"), ok().varies().body("\"b\"")),
            ],
        ),
        case(
            "a store outage answers 503 with Retry-After, in the handler and on save",
            PLAIN,
            vec![
                s(post("/set/a/1").keep("a"), ok().new_cookie()),
                Step::Outage(true),
                s(
                    get("/get/a"),
                    status(503)
                        .varies()
                        .body(crate::http_cases::messages::UNAVAILABLE)
                        .header("retry-after", "1"),
                ),
                // The handle forgot the session before the store refused the delete:
                // the client is logged out (deleting cookie), the record stays.
                s(
                    post("/logout"),
                    status(503).deletion().header("retry-after", "1"),
                ),
                // A save the middleware cannot make: its error response, no cookie.
                s(
                    post("/set/b/2").fresh(),
                    status(503)
                        .body(crate::http_cases::messages::UNAVAILABLE)
                        .header("retry-after", "1"),
                ),
                Step::Outage(false),
                s(
                    get("/get/a").sending(Send::Kept("a")),
                    ok().varies().body("\"1\""),
                ),
            ],
        ),
        case(
            "a handler's session error stores none of its changes (413 on max_keys)",
            "max_keys = 3\n[cookie]\nsecure = false\n",
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(
                    post("/keys/5"),
                    status(413)
                        .varies()
                        .body(crate::http_cases::messages::TOO_LARGE),
                ),
                s(get("/get/k0"), ok().varies().body("none")),
                s(post("/keys/2"), ok().same_cookie()),
            ],
        ),
        case(
            "reads touch a sliding session at most once per interval",
            "[cookie]\nsecure = false\n[middleware]\ntouch_interval_secs = 60\n",
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(get("/get/a"), ok().varies().body("\"1\"")),
                Step::AgeHeld(13 * 86_400),
                s(
                    get("/get/a"),
                    ok().same_cookie()
                        .max_age(1_209_590..=1_209_600)
                        .body("\"1\""),
                ),
                s(get("/get/a"), ok().varies().body("\"1\"")),
                s(post("/fixed-deadline"), ok().same_cookie()),
                s(get("/get/a"), ok().varies()),
            ],
        ),
        // ----- Bytes on the wire -----
        case(
            "other cookies with accents or Latin-1 bytes keep the session",
            PLAIN,
            vec![
                s(post("/set/a/1"), ok().new_cookie()),
                s(
                    get("/get/a").sending(Send::Raw(b"lang=caf\xe9; {jar}; x=\xff\xfe".to_vec())),
                    ok().varies().body("\"1\""),
                ),
                s(
                    get("/get/a").sending(Send::Raw("theme=déjà; {jar}".as_bytes().to_vec())),
                    ok().varies().body("\"1\""),
                ),
                s(
                    get("/get/a").sending(Send::Raw(b"{jar}; other=\"quoted\"".to_vec())),
                    ok().varies().body("\"1\""),
                ),
            ],
        ),
        case(
            "a non-ASCII session cookie is a malformed key",
            PLAIN,
            vec![
                s(
                    get("/get/a").sending(Send::Raw(b"sessionid=caf\xe9".to_vec())),
                    ok().deletion().body("none"),
                ),
                s(
                    post("/set/a/1").sending(Send::Raw(b"sessionid=caf\xe9".to_vec())),
                    ok().new_cookie(),
                ),
            ],
        ),
        // ----- The cookie engine -----
        case(
            "the cookie engine keeps the session in the cookie",
            &cookie_engine(),
            {
                let mut steps: Vec<Step> = (1..=10)
                    .map(|i| s(post("/incr"), ok().cookie(Any).body(i.to_string())))
                    .collect();
                steps.push(s(post("/login/ada"), ok().cookie(Any)));
                steps.push(s(get("/get/count"), ok().varies().body("10")));
                steps.push(s(post("/logout"), ok().deletes(DJANGO_DELETION)));
                steps.push(s(get("/get/count"), ok().varies().body("none")));
                steps
            },
        ),
        case(
            "the cookie engine rejects tampering, expiry and oversize",
            &cookie_engine(),
            vec![
                s(post("/set/role/user").keep("user"), ok().cookie(Any)),
                s(
                    get("/get/role").sending(Send::Forged(forged_payload)),
                    ok().deletion().body("none"),
                ),
                s(
                    get("/get/role").sending(Send::Kept("user")),
                    ok().varies().body("\"user\""),
                ),
                s(
                    post("/expire-now").fresh().keep("expired"),
                    ok().cookie(Any),
                ),
                s(
                    get("/get/x").sending(Send::Kept("expired")),
                    ok().deletion().body("none"),
                ),
                s(
                    post("/big/5000").fresh(),
                    status(413).body(crate::http_cases::messages::TOO_LARGE),
                ),
                s(post("/big/1000").fresh(), ok().cookie(Any)),
            ],
        ),
    ]
}

/// The response bodies the cases expect (session-http's, repeated here so that the
/// table states them, not imports them).
pub mod messages {
    /// 400 for a session deleted meanwhile.
    pub const INTERRUPTED: &str = "The request's session was deleted before the request \
completed. The user may have logged out in a concurrent request, for example.";
    /// 503 for an unreachable store.
    pub const UNAVAILABLE: &str = "The session store is unavailable right now. Please retry \
shortly.";
    /// 413 for a session over its limits.
    pub const TOO_LARGE: &str = "The session grew too large to be stored; the change was \
not saved.";
}

// ---------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------

/// The store a case's middleware is built on (engine `case`): a real store that can be
/// switched off like a server outage.
#[derive(Clone, Debug)]
struct CaseStore {
    inner: Arc<dyn SessionStore>,
    down: Arc<AtomicBool>,
}

impl CaseStore {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::backend(
                "case",
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for CaseStore {
    fn engine(&self) -> &str {
        "case"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.check()?;
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.check()?;
        self.inner.load(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.check()?;
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.check()?;
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.check()?;
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.check()?;
        self.inner.clear_expired().await
    }
}

/// A response as the runner sees it.
#[derive(Debug)]
struct Seen {
    status: u16,
    set_cookies: Vec<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// The client's state across a case: the cookie it holds and the ones it kept.
#[derive(Default)]
struct Client {
    /// `(name, value)` of the held session cookie.
    jar: Option<(String, String)>,
    kept: Vec<(&'static str, (String, String))>,
}

fn name_value(set_cookie: &str) -> Option<(String, String)> {
    let pair = set_cookie.split(';').next()?;
    let (n, v) = pair.split_once('=')?;
    Some((n.trim().to_owned(), v.trim().to_owned()))
}

fn is_deletion(set_cookie: &str) -> bool {
    set_cookie.contains("Max-Age=0") && name_value(set_cookie).is_some_and(|(_, v)| v == "\"\"")
}

fn key_part(value: &str) -> &str {
    value.split_once('.').map_or(value, |(k, _)| k)
}

impl Client {
    fn cookie_header(&self, send: &Send) -> Option<Vec<u8>> {
        let pair = |(n, v): &(String, String)| format!("{n}={v}");
        match send {
            Send::Nothing => None,
            Send::Jar => self.jar.as_ref().map(pair).map(String::into_bytes),
            Send::Kept(name) => self
                .kept
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, c)| pair(c).into_bytes()),
            Send::Raw(bytes) => {
                let jar = self.jar.as_ref().map(pair).unwrap_or_default();
                let mut out = Vec::new();
                let mut rest = bytes.as_slice();
                while let Some(i) = rest.windows(5).position(|w| w == b"{jar}") {
                    out.extend_from_slice(&rest[..i]);
                    out.extend_from_slice(jar.as_bytes());
                    rest = &rest[i + 5..];
                }
                out.extend_from_slice(rest);
                Some(out)
            }
            Send::Forged(f) => self
                .jar
                .as_ref()
                .map(|(n, v)| format!("{n}={}", f(v)).into_bytes()),
        }
    }

    /// Takes the response's cookie as a browser would.
    fn absorb(&mut self, seen: &Seen) {
        for sc in &seen.set_cookies {
            if is_deletion(sc) {
                self.jar = None;
            } else if let Some(nv) = name_value(sc) {
                self.jar = Some(nv);
            }
        }
    }
}

async fn send(http: &reqwest::Client, base: &str, req: &Req, client: &Client) -> Result<Seen> {
    let url = format!("{base}{}", req.path);
    let mut rb = match req.method {
        Method::Get => http.get(url),
        Method::Post => http.post(url),
    };
    if let Some(bytes) = client.cookie_header(&req.send) {
        let value = reqwest::header::HeaderValue::from_bytes(&bytes)
            .map_err(|e| Error::backend("http-cases", e))?;
        rb = rb.header(reqwest::header::COOKIE, value);
    }
    let res = rb
        .send()
        .await
        .map_err(|e| Error::backend("http-cases", e))?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let set_cookies = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = res
        .text()
        .await
        .map_err(|e| Error::backend("http-cases", e))?;
    Ok(Seen {
        status,
        set_cookies,
        headers,
        body,
    })
}

fn varies_on_cookie(h: &reqwest::header::HeaderMap) -> bool {
    h.get_all(reqwest::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("cookie"))
}

/// The differences between `seen` and `expect`, given the cookie held before.
fn check(seen: &Seen, expect: &Expect, held: Option<&(String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    if seen.status != expect.status {
        out.push(format!(
            "status {} (expected {}), body {:?}",
            seen.status, expect.status, seen.body
        ));
    }
    if let Some(b) = &expect.body
        && &seen.body != b
    {
        out.push(format!("body {:?} (expected {b:?})", seen.body));
    }
    let varies = varies_on_cookie(&seen.headers);
    if let Some(want) = expect.vary
        && varies != want
    {
        out.push(format!(
            "Vary: Cookie {} (expected {})",
            if varies { "sent" } else { "missing" },
            if want { "sent" } else { "none" }
        ));
    }
    for (name, value) in &expect.headers {
        let all: Vec<String> = seen
            .headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let joined = all.join(", ");
        if joined != *value {
            out.push(format!("header {name}: {joined:?} (expected {value:?})"));
        }
    }
    match (&expect.cookie, seen.set_cookies.as_slice()) {
        (CookieIs::Absent, []) => {}
        (CookieIs::Absent, got) => out.push(format!("Set-Cookie {got:?} (expected none)")),
        (CookieIs::Exactly(e), [got]) if got == e => {}
        (CookieIs::Deletion, [got]) if is_deletion(got) => {}
        (
            CookieIs::Session {
                key,
                has,
                lacks,
                max_age,
            },
            [got],
        ) if !is_deletion(got) => {
            let Some((_, value)) = name_value(got) else {
                out.push(format!("Set-Cookie {got:?} has no name=value"));
                return out;
            };
            let held_key = held.map(|(_, v)| key_part(v));
            match key {
                KeyIs::Any => {}
                KeyIs::Same if held_key == Some(key_part(&value)) => {}
                KeyIs::New if held_key != Some(key_part(&value)) => {}
                _ => out.push(format!(
                    "Set-Cookie {got:?}: key should be {key:?} (held {held:?})"
                )),
            }
            for h in has {
                if !got.contains(h) {
                    out.push(format!("Set-Cookie {got:?} lacks {h:?}"));
                }
            }
            let lower = got.to_ascii_lowercase();
            for l in lacks {
                if lower.contains(&l.to_ascii_lowercase()) {
                    out.push(format!("Set-Cookie {got:?} should not contain {l:?}"));
                }
            }
            if let Some(range) = max_age {
                let age = got
                    .split("; ")
                    .find_map(|a| a.strip_prefix("Max-Age="))
                    .and_then(|a| a.parse::<i64>().ok());
                if !age.is_some_and(|a| range.contains(&a)) {
                    out.push(format!("Set-Cookie {got:?}: Max-Age not in {range:?}"));
                }
            }
        }
        (want, got) => out.push(format!("Set-Cookie {got:?} (expected {want:?})")),
    }
    out
}

/// Builds the case's registry: the `case` engine serves the case's store.
fn registry(store: &CaseStore) -> EngineRegistry {
    let registry = EngineRegistry::new();
    let store = store.clone();
    registry.register_store("case", move |_ctx: EngineContext| {
        let store = store.clone();
        async move { Ok(store) }
    });
    registry
}

fn config_text(text: &str) -> String {
    let names_engine = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .any(|l| l.trim_start().starts_with("engine"));
    if names_engine {
        text.to_owned()
    } else {
        format!("engine = \"case\"\n{text}")
    }
}

/// Runs one case on `driver`; returns its failures.
async fn run_case<D: HttpDriver>(
    driver: &D,
    case: &Case,
    store: Arc<dyn SessionStore>,
) -> Vec<String> {
    let store = CaseStore {
        inner: store,
        down: Arc::new(AtomicBool::new(false)),
    };
    let registry = registry(&store);
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => return vec![format!("no HTTP client: {e}")],
    };
    let app = Arc::new(TestApp::new());
    let mut failures = Vec::new();
    let mut client = Client::default();
    let serve = |text: String| {
        let app = app.clone();
        let registry = &registry;
        async move {
            driver
                .serve(&Config::from_toml(&config_text(&text)), registry, app)
                .await
        }
    };
    let mut served = match serve(case.config.clone()).await {
        Ok(s) => s,
        Err(e) => return vec![format!("the middleware did not start: {e}")],
    };
    for (i, step) in case.steps.iter().enumerate() {
        let at = |what: String| format!("step {}: {what}", i + 1);
        match step {
            Step::Send(req, expect) => {
                match send(&http, &served.base, req, &client).await {
                    Ok(seen) => {
                        for f in check(&seen, expect, client.jar.as_ref()) {
                            failures.push(at(format!("{}: {f}", req.path)));
                        }
                        client.absorb(&seen);
                    }
                    Err(e) => failures.push(at(format!("{}: {e}", req.path))),
                }
                if let (Some(name), Some(jar)) = (req.keep, client.jar.clone()) {
                    client.kept.push((name, jar));
                }
            }
            Step::Race {
                slow,
                expect,
                during,
            } => {
                let held = client.jar.clone();
                let slow_fut = send(&http, &served.base, slow, &client);
                let rest = async {
                    let mut out = Vec::new();
                    if within("the slow request", app.coord.loaded.notified())
                        .await
                        .is_err()
                    {
                        out.push("the slow request never reached its handler".to_owned());
                    }
                    let mut inner = Client {
                        jar: held.clone(),
                        kept: Vec::new(),
                    };
                    for step in during {
                        if let Step::Send(r, e) = step {
                            match send(&http, &served.base, r, &inner).await {
                                Ok(seen) => {
                                    out.extend(check(&seen, e, inner.jar.as_ref()));
                                    inner.absorb(&seen);
                                }
                                Err(e) => out.push(e.to_string()),
                            }
                        }
                    }
                    app.coord.proceed.notify_one();
                    (out, inner)
                };
                let (slow_res, (mut out, inner)) = futures::join!(slow_fut, rest);
                match slow_res {
                    Ok(seen) => out.extend(check(&seen, expect, held.as_ref())),
                    Err(e) => out.push(e.to_string()),
                }
                client.jar = inner.jar;
                failures.extend(out.into_iter().map(|f| at(format!("race: {f}"))));
            }
            Step::Together(a, b, statuses) => {
                let (ra, rb) = futures::join!(
                    send(&http, &served.base, a, &client),
                    send(&http, &served.base, b, &client)
                );
                let mut got = [
                    ra.map(|s| s.status).unwrap_or(0),
                    rb.map(|s| s.status).unwrap_or(0),
                ];
                got.sort_unstable();
                let mut want = *statuses;
                want.sort_unstable();
                if got != want {
                    failures.push(at(format!(
                        "together: statuses {got:?} (expected {want:?})"
                    )));
                }
            }
            Step::Outage(down) => store.down.store(*down, Ordering::SeqCst),
            Step::AgeHeld(secs) => {
                let key = client
                    .jar
                    .as_ref()
                    .and_then(|(_, v)| SessionKey::parse(key_part(v)).ok());
                let aged = match key {
                    Some(k) => store.touch(&k, Timestamp::now().add_secs(*secs)).await,
                    None => Err(Error::NotFound),
                };
                if let Err(e) = aged {
                    failures.push(at(format!("cannot age the held session: {e}")));
                }
            }
            Step::Redeploy(text) => {
                let next = match serve(text.clone()).await {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(at(format!("the middleware did not start: {e}")));
                        break;
                    }
                };
                (std::mem::replace(&mut served, next).stop)();
            }
        }
    }
    (served.stop)();
    failures
}

/// Runs every case of [`http_cases`] on `driver`, each on a fresh store from
/// `new_store`, and returns the failures as `framework / case / step: what`.
pub async fn run_http_cases<D, F>(driver: &D, new_store: F) -> Vec<String>
where
    D: HttpDriver,
    F: Fn() -> Arc<dyn SessionStore>,
{
    let mut failures = Vec::new();
    for case in http_cases() {
        for f in run_case(driver, &case, new_store()).await {
            failures.push(format!("{} / {}: {f}", driver.name(), case.name));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in ["", "a", "ab", "abc", "{\"user\":1}", "déjà vu"] {
            let enc = base64_free::encode(text.as_bytes());
            assert!(!enc.contains('='));
            assert_eq!(
                base64_free::decode(&enc).as_deref(),
                Some(text.as_bytes()),
                "{text}"
            );
        }
        assert_eq!(base64_free::encode(b"abc"), "YWJj");
        assert_eq!(base64_free::encode(b"ab"), "YWI");
    }

    #[test]
    fn every_case_has_steps_and_a_unique_name() {
        let cases = http_cases();
        assert!(cases.len() >= 30, "{}", cases.len());
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        assert!(cases.iter().all(|c| !c.steps.is_empty()));
        assert!(cases.iter().filter(|c| c.django.is_some()).count() >= 8);
    }

    #[test]
    fn configs_get_the_case_engine_unless_they_name_one() {
        assert!(config_text("[cookie]\nsecure = false").starts_with("engine = \"case\""));
        assert!(config_text(&cookie_engine()).starts_with("engine = \"cookie\""));
    }
}
