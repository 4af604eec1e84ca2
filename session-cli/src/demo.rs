//! `sessions demo`: a small web app that shows sessions at work.
//!
//! A visit counter, a cart with add and remove, and login/logout with key cycling, on
//! whatever engine the configuration selects (the file engine by default, so no server
//! is needed). Plain HTML forms, no JavaScript.
//!
//! Every session of a user: signing in records the user name as the session's
//! principal ([`session_core::Session::login`]) with an auth hash, and a signed-in page
//! shows "Your sessions" (the handle's `user_sessions`: created, last seen and, since
//! the demo turns `[middleware] track_clients` on unless the configuration says
//! otherwise, the browser and address), with a sign-out button per session (posting
//! its public id, never its key) and "Sign out other devices"; `GET /api/sessions`
//! answers the same as JSON. On an engine without a per-user index (Memcached, the
//! cookie engine) the panel says so instead of failing the page. "Change password"
//! bumps the user's password version, kept in the demo process's memory (every user
//! starts at version 0, so instances sharing a store agree until a change): the
//! [`session_core::users::AuthCheck`] the middleware is built with then flushes every
//! other session signed in with the old hash on its next request, and the changing
//! session is signed in again with the new hash, as Django's
//! `update_session_auth_hash` keeps it.
//!
//! Operations: `GET /metrics` answers in the Prometheus text format, rendered from
//! `metrics-exporter-prometheus`'s recorder (its own HTTP listener is not used). The
//! store wears the `metrics` layer (added when the configuration's `layers` does not
//! list it) and the middleware the metrics request hook, so the page shows the names of
//! `session_core::metrics`. A `[cleanup]` section starts the background cleanup, which
//! stops when the server does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use session_axum::serve::{ServeOptions, serve, shutdown_signal};
use session_axum::{Session, SessionError, SessionLayer};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use session_core::EngineRegistry;
use session_core::cleanup::{Cleanup, CleanupConfig};
use session_core::metrics::MetricsHook;
use session_core::registry::METRICS_LAYER;

use session_core::users::{AuthCheck, UserSession, auth_check_fn, validate_principal};

use crate::engines;
use crate::fmt::{CliError, CliResult, iso};

/// The web framework the demo runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framework {
    /// axum, through session-axum (and `session_axum::serve`'s limits).
    #[default]
    Axum,
    /// actix-web 4, through session-actix (actix-web's own server limits).
    Actix,
}

/// `demo` options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The web framework to serve the demo with: the same pages and session rules on
    /// either. On actix-web, --header-timeout, --max-connections and
    /// --shutdown-timeout map to its server's settings; --request-timeout is not
    /// applied (actix-web has no whole-request timeout).
    #[arg(long, value_enum, default_value_t = Framework::Axum)]
    pub framework: Framework,
    /// Port to listen on (0 picks a free one).
    #[arg(long, short, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on; keep it on loopback unless you know why.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Close a connection whose request headers have not all arrived after this long
    /// (also how long an idle keep-alive connection is kept), e.g. 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Answer 408 to a request (body included) not done after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Serve at most this many connections at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// On Ctrl-C or SIGTERM, give open connections this long to finish, then exit.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// A duration such as `10s` or `500ms`, above zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be above zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

const FRUITS: [&str; 6] = ["apple", "banana", "cherry", "kiwi", "mango", "pear"];

/// Runs the demo until Ctrl-C or SIGTERM, with `session_axum::serve`'s timeouts,
/// connection limit and shutdown deadline.
pub async fn run(registry: &EngineRegistry, path: Option<&Path>, args: DemoArgs) -> CliResult {
    let mut config = engines::load_with_engine(path, "file")?;
    let mut settings = config.settings()?;
    if settings.engine != session_axum::cookie_engine::ENGINE
        && !settings.layers.iter().any(|l| l == METRICS_LAYER)
    {
        settings.layers.push(METRICS_LAYER.to_owned());
        config = config.with("layers", &settings.layers);
    }
    let where_stored = storage_description(&config, &settings.engine);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| {
            CliError::usage(
                format!("bad --host/--port: {e}"),
                Some("use e.g. --host 127.0.0.1 --port 8000".into()),
            )
        })?;
    let cleanup = CleanupConfig::from_config(&config)?;
    let prometheus = install_prometheus()?;
    if args.framework == Framework::Actix {
        return actix::run(
            registry,
            &config,
            &settings.engine,
            where_stored,
            addr,
            args,
            Operations {
                prometheus,
                cleanup,
            },
        )
        .await;
    }
    let mut builder = SessionLayer::builder_from_config(&config, registry)
        .await?
        .hook(MetricsHook);
    // Browsers refuse to send a Secure cookie back over plain http (Chromium makes an
    // exception for "localhost", not for 127.0.0.1), so the demo, served over plain http
    // on loopback, turns Secure off unless the configuration says otherwise. Production
    // deployments keep the default: Secure on, behind TLS.
    if !config.contains("cookie.secure") {
        builder = builder.secure(false);
    }
    let passwords = Passwords::default();
    builder = builder.auth_check(passwords.auth_check());
    if !config.contains("middleware.track_clients") {
        builder = builder.track_clients(true);
    }
    let layer = builder.build()?;
    let cleanup = start_cleanup(cleanup, layer.store());
    let app = Router::new()
        .route("/", get(index))
        .route("/state", get(state))
        .route("/cart/add", post(cart_add))
        .route("/cart/remove", post(cart_remove))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/password", post(password))
        .route("/sessions/end", post(end_one))
        .route("/sessions/end-others", post(end_other))
        .route("/api/sessions", get(api_sessions))
        .layer(layer)
        .with_state(Arc::new(DemoState {
            where_stored: where_stored.clone(),
            passwords,
        }))
        // Outside the session layer: a scrape neither reads nor makes a session.
        .route("/metrics", get(move || metrics_page(prometheus.clone())));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::store(
            format!("cannot listen on {addr}: {e}"),
            Some("pick another port with --port, or stop what is using it".into()),
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::store(e.to_string(), None))?;
    println!("sessions demo listening on http://{local}/");
    println!(
        "engine: {} — sessions stored {where_stored}",
        settings.engine
    );
    println!("press Ctrl-C to stop");
    let options = ServeOptions {
        header_read_timeout: args.header_timeout,
        request_timeout: args.request_timeout,
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        shutdown_timeout: args.shutdown_timeout,
    };
    serve(listener, app, options, async {
        shutdown_signal().await;
        println!("shutting down");
    })
    .await
    .map_err(|e| CliError::store(format!("server error: {e}"), None))?;
    if let Some(cleanup) = cleanup {
        cleanup.stop().await;
    }
    println!("stopped");
    Ok(())
}

/// What the demo serves and runs beside the pages: `/metrics` and the cleanup.
struct Operations {
    prometheus: PrometheusHandle,
    cleanup: Option<session_core::cleanup::CleanupOptions>,
}

/// Starts the background cleanup the configuration's `[cleanup]` asks for, if the
/// engine has a store to sweep.
fn start_cleanup(
    options: Option<session_core::cleanup::CleanupOptions>,
    store: Option<&std::sync::Arc<dyn session_core::SessionStore>>,
) -> Option<session_core::cleanup::CleanupHandle> {
    match (options, store) {
        (Some(options), Some(store)) => {
            println!(
                "background cleanup every {} (+ up to {} jitter)",
                humantime::format_duration(options.interval),
                humantime::format_duration(options.jitter)
            );
            Some(Cleanup::new(store.clone(), options).spawn())
        }
        _ => None,
    }
}

/// Installs the process-wide Prometheus recorder: the handle renders `/metrics`.
/// Durations get histogram buckets (100 µs to 2.5 s) rather than the exporter's default
/// summaries, so they add up across instances.
fn install_prometheus() -> Result<PrometheusHandle, CliError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(session_core::metrics::STORE_DURATION.to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ],
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError::store(format!("cannot set up the metrics recorder: {e}"), None))
}

async fn metrics_page(handle: PrometheusHandle) -> Response {
    // The in-process engine's counts, to the last call.
    session_core::metrics::publish();
    handle.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

fn storage_description(config: &session_core::Config, engine: &str) -> String {
    match engine {
        "file" => {
            let path = config
                .get::<std::path::PathBuf>("file.path")
                .ok()
                .flatten()
                .unwrap_or_else(backend_file::config::default_dir);
            format!("in {}", path.display())
        }
        "memory" => "in this process's memory (gone when it stops)".into(),
        "cookie" => "in the browser's signed cookie".into(),
        other => format!("by the {other} engine"),
    }
}

/// What every request handler shares: where sessions are stored (for the page) and the
/// users' password versions.
pub(crate) struct DemoState {
    where_stored: String,
    passwords: Passwords,
}

type Shared = axum::extract::State<Arc<DemoState>>;

/// The demo's stand-in for a user table: each user's password version, in this
/// process's memory. A user never seen is at version 0, so every instance of the demo
/// sharing a store agrees on the hash until a password changes.
#[derive(Clone, Default)]
pub(crate) struct Passwords(Arc<Mutex<HashMap<String, u64>>>);

impl Passwords {
    /// The auth hash of `user`'s current password. A real application derives it from
    /// the stored password hash (Django: an HMAC of it); the demo has no passwords, so
    /// it names the version.
    fn auth_hash(&self, user: &str) -> String {
        let versions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hash_of(versions.get(user).copied().unwrap_or(0))
    }

    /// Changes `user`'s password (bumps its version) and returns the new auth hash.
    fn change(&self, user: &str) -> String {
        let mut versions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let v = versions.entry(user.to_owned()).or_insert(0);
        *v += 1;
        hash_of(*v)
    }

    /// The check the middleware runs on every signed-in session it loads.
    fn auth_check(&self) -> Arc<dyn AuthCheck> {
        let passwords = self.clone();
        auth_check_fn(move |user: String| {
            let hash = passwords.auth_hash(&user);
            async move { Ok(Some(hash)) }
        })
    }
}

fn hash_of(version: u64) -> String {
    format!("password-version-{version}")
}

#[derive(Deserialize)]
struct ItemForm {
    item: String,
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
}

#[derive(Deserialize)]
struct EndForm {
    id: String,
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// The "Your sessions" panel of a signed-in page.
async fn sessions_panel(session: &session_core::Session) -> session_core::Result<String> {
    let list = match session.user_sessions().await {
        Ok(list) => list,
        Err(session_core::Error::Unsupported { engine, .. }) => {
            return Ok(format!(
                "<section id=\"sessions\"><h2>Your sessions</h2>\
                 <p class=\"note\" id=\"sessions-unsupported\">The {} engine keeps no \
                 per-user index, so it cannot list your sessions or sign out other \
                 devices.</p></section>",
                escape(&engine)
            ));
        }
        Err(e) => return Err(e),
    };
    let rows: String = list
        .iter()
        .map(|s| {
            let id = escape(&s.id);
            let client = match (&s.meta.user_agent, &s.meta.client_addr) {
                (None, None) => "unknown client".to_owned(),
                (ua, addr) => format!(
                    "{} {}",
                    escape(ua.as_deref().unwrap_or("unknown browser")),
                    addr.as_deref()
                        .map(|a| format!("from {}", escape(a)))
                        .unwrap_or_default()
                ),
            };
            let seen = s
                .meta
                .last_seen
                .map(iso)
                .unwrap_or_else(|| "never".into());
            let action = if s.current {
                "<span class=\"this\" id=\"this-device\">this device</span>".to_owned()
            } else {
                format!(
                    "<form method=\"post\" action=\"/sessions/end\" class=\"inline\">\
                     <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                     <button type=\"submit\" class=\"quiet\" id=\"end-{id}\">sign out</button></form>"
                )
            };
            format!(
                "<li class=\"device\" data-session-id=\"{id}\" data-current=\"{}\">\
                 <span><span class=\"client\">{client}</span><br>\
                 <small>started {} · last seen <span class=\"seen\">{seen}</span></small></span>{action}</li>",
                s.current,
                iso(s.created_at),
            )
        })
        .collect();
    Ok(format!(
        "<section id=\"sessions\"><h2>Your sessions</h2>\
         <p class=\"visits\"><span id=\"session-count\">{}</span> signed-in session(s)</p>\
         <ul id=\"session-list\">{rows}</ul>\
         <form method=\"post\" action=\"/sessions/end-others\">\
         <button type=\"submit\" class=\"secondary\" id=\"end-others\">Sign out other devices</button></form>\
         <p class=\"note\">Each session is named by a hash of its key; signing one out deletes \
         it, so that device is signed out on its next request.</p></section>",
        list.len()
    ))
}

/// The demo page for `session` (framework-free: both front ends render it).
async fn page(session: &session_core::Session, where_stored: &str) -> session_core::Result<String> {
    let visits: u64 = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let user: Option<String> = session.principal().await?;
    let items: String = if cart.is_empty() {
        "<li class=\"empty\">Your cart is empty.</li>".into()
    } else {
        cart.iter()
            .map(|i| {
                let i = escape(i);
                format!(
                    "<li><span class=\"item\" data-item=\"{i}\">{i}</span>\
                     <form method=\"post\" action=\"/cart/remove\" class=\"inline\">\
                     <input type=\"hidden\" name=\"item\" value=\"{i}\">\
                     <button type=\"submit\" class=\"quiet\" id=\"remove-{i}\">remove</button></form></li>"
                )
            })
            .collect()
    };
    let options: String = FRUITS
        .iter()
        .map(|f| format!("<option value=\"{f}\">{f}</option>"))
        .collect();
    let auth = match &user {
        Some(u) => format!(
            "<p class=\"who\">Signed in as <b id=\"user\">{}</b></p>\
             <div class=\"row buttons\"><form method=\"post\" action=\"/logout\"><button type=\"submit\" class=\"secondary\" id=\"logout\">Log out</button></form>\
             <form method=\"post\" action=\"/password\"><button type=\"submit\" class=\"secondary\" id=\"change-password\">Change password</button></form></div>\
             <p class=\"note\">Logging out flushes the session: the record is deleted and the cookie removed. \
             Changing the password signs out every other session of this user; this one stays signed in.</p>",
            escape(u)
        ),
        None => "<p class=\"who\" id=\"user-none\">Not signed in</p>\
             <form method=\"post\" action=\"/login\" class=\"row\">\
             <input name=\"username\" id=\"username\" placeholder=\"any name\" required>\
             <button type=\"submit\" id=\"login\">Log in</button></form>\
             <p class=\"note\">Logging in cycles the session key (against session fixation): \
             the cookie changes, the cart and counter stay.</p>"
            .to_owned(),
    };
    let devices = match &user {
        Some(_) => sessions_panel(session).await?,
        None => String::new(),
    };
    let fingerprint = session
        .key()
        .map(|k| k.fingerprint())
        .unwrap_or_else(|| "(new session: key minted when this response is saved)".into());
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessions demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 2.5rem 1.5rem;
  background: #f3f5f8; color: #1f2933; line-height: 1.45; }}
main {{ max-width: 64rem; margin: 0 auto; }}
h1 {{ margin: 0; font-size: 2rem; letter-spacing: -.02em; }} h1 span {{ color: #0b7a55; }}
.sub {{ color: #52606d; margin: .3rem 0 1.6rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(17rem, 1fr)); gap: 1.2rem; }}
section {{ background: #fff; border: 1px solid #e1e6ec; border-radius: 12px; padding: 1.1rem 1.3rem 1.2rem;
  box-shadow: 0 1px 3px rgba(16, 24, 40, .06); }}
h2 {{ margin: 0 0 .8rem; font-size: .78rem; text-transform: uppercase; letter-spacing: .09em; color: #7b8794; }}
.visits {{ margin: 0; color: #52606d; }}
.count {{ display: block; font-size: 3.4rem; font-weight: 700; line-height: 1.1; color: #0b7a55; }}
.inline {{ display: inline; }} .note {{ color: #66727f; font-size: .88rem; margin: .8rem 0 0; }}
ul {{ list-style: none; margin: 0 0 1rem; padding: 0; }}
li {{ display: flex; justify-content: space-between; align-items: center; padding: .45rem 0; border-bottom: 1px solid #eef1f4; }}
li.empty {{ color: #7b8794; font-style: italic; }} .item {{ font-weight: 600; }}
.row {{ display: flex; gap: .5rem; }} .who {{ font-size: 1.1rem; margin: 0 0 .9rem; }}
input, select {{ font: inherit; padding: .4rem .6rem; border: 1px solid #cbd2d9; border-radius: 7px; background: #fff; min-width: 0; flex: 1; }}
button {{ font: inherit; cursor: pointer; padding: .4rem .9rem; border-radius: 7px; border: 1px solid #0b7a55;
  background: #0b7a55; color: #fff; font-weight: 600; }}
button.secondary {{ background: #fff; color: #0b7a55; }}
button.quiet {{ background: none; border: none; color: #b42318; font-weight: 500; font-size: .88rem; padding: .1rem .3rem; }}
#sessions {{ grid-column: 1 / -1; }} li.device small {{ color: #66727f; }} button {{ white-space: nowrap; }} .this {{ color: #0b7a55; font-weight: 600; font-size: .88rem; white-space: nowrap; margin-left: 1rem; }}
.buttons {{ flex-wrap: wrap; }}
footer {{ margin-top: 1.4rem; color: #66727f; font-size: .88rem; }}
code {{ background: #e6eaef; padding: .1rem .35rem; border-radius: 4px; }}
</style></head>
<body><main>
<h1>sessions <span>demo</span></h1>
<p class="sub">Server-side sessions for Rust — stored {where_stored}.</p>
<div class="grid">
<section id="visits"><h2>Visit counter</h2>
<p class="visits"><span class="count" id="visit-count">{visits}</span>time(s) you have loaded this page in this session</p></section>
<section id="cart"><h2>Cart</h2><ul id="cart-items">{items}</ul>
<form method="post" action="/cart/add" class="row"><select name="item" id="item">{options}</select>
<button type="submit" id="add">Add to cart</button></form></section>
<section id="auth"><h2>Account</h2>{auth}</section>
{devices}
</div>
<footer>Session fingerprint: <code id="fingerprint">{fingerprint}</code>
(a short hash: the key itself is only in your cookie).</footer>
</main></body></html>"#,
        where_stored = escape(where_stored),
    );
    Ok(page)
}

/// What `/state` answers.
async fn state_json(session: &session_core::Session) -> session_core::Result<serde_json::Value> {
    let visits: u64 = session.get("visits").await?.unwrap_or(0);
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let user: Option<String> = session.principal().await?;
    Ok(json!({ "visits": visits, "cart": cart, "user": user }))
}

/// A form refused with 400 and this message.
type Refused = &'static str;

/// How a form handler answers (framework-free: each front end renders it).
enum Reply {
    /// Back to the page (303).
    Back,
    /// A plain-text answer with this status.
    Text(u16, String),
}

impl From<Result<(), Refused>> for Reply {
    fn from(r: Result<(), Refused>) -> Self {
        match r {
            Ok(()) => Reply::Back,
            Err(msg) => Reply::Text(400, msg.to_owned()),
        }
    }
}

/// The answer for the user-index errors a handler reports to the client rather than
/// failing with: an anonymous session (401), an engine without the index (501).
fn index_error(e: session_core::Error) -> session_core::Result<Reply> {
    match e {
        session_core::Error::NotSignedIn => Ok(Reply::Text(401, "not signed in".into())),
        e @ session_core::Error::Unsupported { .. } => Ok(Reply::Text(501, e.to_string())),
        e => Err(e),
    }
}

async fn add_item(
    session: &session_core::Session,
    f: ItemForm,
) -> session_core::Result<Result<(), Refused>> {
    let item = f.item.trim().to_owned();
    if item.is_empty() || item.len() > 64 {
        return Ok(Err("an item is 1 to 64 characters"));
    }
    session
        .update("cart", move |cart: Option<Vec<String>>| {
            let mut cart = cart.unwrap_or_default();
            cart.push(item.clone());
            cart
        })
        .await?;
    Ok(Ok(()))
}

async fn remove_item(session: &session_core::Session, f: ItemForm) -> session_core::Result<()> {
    session
        .update("cart", move |cart: Option<Vec<String>>| {
            let mut cart = cart.unwrap_or_default();
            if let Some(i) = cart.iter().position(|c| *c == f.item) {
                cart.remove(i);
            }
            cart
        })
        .await?;
    Ok(())
}

async fn log_in(
    session: &session_core::Session,
    passwords: &Passwords,
    f: LoginForm,
) -> session_core::Result<Result<(), Refused>> {
    let name = f.username.trim().to_owned();
    if name.is_empty() || name.len() > 64 || validate_principal(&name).is_err() {
        return Ok(Err(
            "a user name is 1 to 64 characters, with no control characters",
        ));
    }
    // `login` cycles the key (a key planted before login is useless after) and records
    // the user as the session's principal, with the password's auth hash.
    session
        .login(&name, Some(&passwords.auth_hash(&name)))
        .await?;
    Ok(Ok(()))
}

/// "Change password": every other session of the user is signed out on its next
/// request (its auth hash no longer matches); this one is signed in again with the new
/// hash (Django's `update_session_auth_hash`), under a new key.
async fn change_password(
    session: &session_core::Session,
    passwords: &Passwords,
) -> session_core::Result<Reply> {
    let Some(user) = session.principal().await? else {
        return Ok(Reply::Text(401, "not signed in".into()));
    };
    let hash = passwords.change(&user);
    session.login(&user, Some(&hash)).await?;
    Ok(Reply::Back)
}

/// Signs out the session of this user whose public id is `f.id` (this one: a logout).
async fn end_session(session: &session_core::Session, f: EndForm) -> session_core::Result<Reply> {
    let list = match session.user_sessions().await {
        Ok(list) => list,
        Err(e) => return index_error(e),
    };
    match list.iter().find(|s| s.id == f.id) {
        None => Ok(Reply::Text(404, "no such session of yours".into())),
        Some(s) if s.current => {
            session.logout().await?;
            Ok(Reply::Back)
        }
        Some(_) => match session.end_user_session(&f.id).await {
            Ok(_) => Ok(Reply::Back),
            Err(e) => index_error(e),
        },
    }
}

/// "Sign out other devices".
async fn end_others(session: &session_core::Session) -> session_core::Result<Reply> {
    match session.end_other_sessions().await {
        Ok(n) => {
            tracing::info!(ended = n, "signed out other sessions");
            Ok(Reply::Back)
        }
        Err(e) => index_error(e),
    }
}

/// One session as `GET /api/sessions` shows it: its public id, never its key.
fn session_json(s: &UserSession) -> serde_json::Value {
    json!({
        "id": s.id,
        "current": s.current,
        "created_at": iso(s.created_at),
        "last_seen": s.meta.last_seen.map(iso),
        "expires_at": iso(s.expires_at),
        "user_agent": s.meta.user_agent,
        "client_addr": s.meta.client_addr,
    })
}

/// `GET /api/sessions`: the status and the JSON body.
async fn sessions_json(
    session: &session_core::Session,
) -> session_core::Result<(u16, serde_json::Value)> {
    let user = session.principal().await?;
    match session.user_sessions().await {
        Ok(list) => Ok((
            200,
            json!({
                "user": user,
                "sessions": list.iter().map(session_json).collect::<Vec<_>>(),
            }),
        )),
        Err(session_core::Error::NotSignedIn) => {
            Ok((401, json!({ "user": user, "error": "not signed in" })))
        }
        Err(e @ session_core::Error::Unsupported { .. }) => {
            Ok((501, json!({ "user": user, "error": e.to_string() })))
        }
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------ axum front end --

async fn index(session: Session, demo: Shared) -> Result<Response, SessionError> {
    Ok(Html(page(&session, &demo.where_stored).await?).into_response())
}

async fn state(session: Session) -> Result<Response, SessionError> {
    Ok(Json(state_json(&session).await?).into_response())
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn reply(r: impl Into<Reply>) -> Response {
    match r.into() {
        Reply::Back => Redirect::to("/").into_response(),
        Reply::Text(code, msg) => (status(code), msg).into_response(),
    }
}

async fn cart_add(session: Session, Form(f): Form<ItemForm>) -> Result<Response, SessionError> {
    Ok(reply(add_item(&session, f).await?))
}

async fn cart_remove(session: Session, Form(f): Form<ItemForm>) -> Result<Response, SessionError> {
    remove_item(&session, f).await?;
    Ok(reply(Reply::Back))
}

async fn login(
    session: Session,
    demo: Shared,
    Form(f): Form<LoginForm>,
) -> Result<Response, SessionError> {
    Ok(reply(log_in(&session, &demo.passwords, f).await?))
}

async fn logout(session: Session) -> Result<Response, SessionError> {
    session.logout().await?;
    Ok(reply(Reply::Back))
}

async fn password(session: Session, demo: Shared) -> Result<Response, SessionError> {
    Ok(reply(change_password(&session, &demo.passwords).await?))
}

async fn end_one(session: Session, Form(f): Form<EndForm>) -> Result<Response, SessionError> {
    Ok(reply(end_session(&session, f).await?))
}

async fn end_other(session: Session) -> Result<Response, SessionError> {
    Ok(reply(end_others(&session).await?))
}

async fn api_sessions(session: Session) -> Result<Response, SessionError> {
    let (code, body) = sessions_json(&session).await?;
    Ok((status(code), Json(body)).into_response())
}

// ------------------------------------------------------------- actix-web front end --

/// The same demo on actix-web, through session-actix: same pages, same session rules
/// (session-http's), the same configuration.
mod actix {
    use std::net::SocketAddr;

    use actix_web::http::header;
    use actix_web::{App, HttpResponse, HttpServer, web};
    use session_actix::{Session, SessionError, SessionMiddleware};
    use session_core::metrics::MetricsHook;
    use session_core::{Config, EngineRegistry};

    use super::{DemoArgs, DemoState, EndForm, ItemForm, LoginForm, Operations, Passwords, Reply};
    use crate::fmt::{CliError, CliResult};

    type Shared = web::Data<DemoState>;

    fn reply(r: impl Into<Reply>) -> HttpResponse {
        match r.into() {
            Reply::Back => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .finish(),
            Reply::Text(code, msg) => HttpResponse::build(status(code)).body(msg),
        }
    }

    fn status(code: u16) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(code)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    async fn index(session: Session, demo: Shared) -> Result<HttpResponse, SessionError> {
        let page = super::page(&session, &demo.where_stored).await?;
        Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(page))
    }

    async fn state(session: Session) -> Result<HttpResponse, SessionError> {
        Ok(HttpResponse::Ok().json(super::state_json(&session).await?))
    }

    async fn cart_add(
        session: Session,
        f: web::Form<ItemForm>,
    ) -> Result<HttpResponse, SessionError> {
        Ok(reply(super::add_item(&session, f.into_inner()).await?))
    }

    async fn cart_remove(
        session: Session,
        f: web::Form<ItemForm>,
    ) -> Result<HttpResponse, SessionError> {
        super::remove_item(&session, f.into_inner()).await?;
        Ok(reply(Reply::Back))
    }

    async fn login(
        session: Session,
        demo: Shared,
        f: web::Form<LoginForm>,
    ) -> Result<HttpResponse, SessionError> {
        Ok(reply(
            super::log_in(&session, &demo.passwords, f.into_inner()).await?,
        ))
    }

    async fn logout(session: Session) -> Result<HttpResponse, SessionError> {
        session.logout().await?;
        Ok(reply(Reply::Back))
    }

    async fn password(session: Session, demo: Shared) -> Result<HttpResponse, SessionError> {
        Ok(reply(
            super::change_password(&session, &demo.passwords).await?,
        ))
    }

    async fn end_one(
        session: Session,
        f: web::Form<EndForm>,
    ) -> Result<HttpResponse, SessionError> {
        Ok(reply(super::end_session(&session, f.into_inner()).await?))
    }

    async fn end_other(session: Session) -> Result<HttpResponse, SessionError> {
        Ok(reply(super::end_others(&session).await?))
    }

    async fn api_sessions(session: Session) -> Result<HttpResponse, SessionError> {
        let (code, body) = super::sessions_json(&session).await?;
        Ok(HttpResponse::build(status(code)).json(body))
    }

    /// Serves the demo on actix-web until Ctrl-C or SIGTERM (actix-web's own signal
    /// handling and graceful shutdown).
    pub(super) async fn run(
        registry: &EngineRegistry,
        config: &Config,
        engine: &str,
        where_stored: String,
        addr: SocketAddr,
        args: DemoArgs,
        ops: Operations,
    ) -> CliResult {
        let Operations {
            prometheus,
            cleanup,
        } = ops;
        let mut builder = SessionMiddleware::builder_from_config(config, registry)
            .await?
            .hook(MetricsHook);
        // Plain http on loopback: see the axum front end.
        if !config.contains("cookie.secure") {
            builder = builder.secure(false);
        }
        let passwords = Passwords::default();
        builder = builder.auth_check(passwords.auth_check());
        if !config.contains("middleware.track_clients") {
            builder = builder.track_clients(true);
        }
        let sessions = builder.build()?;
        let cleanup = super::start_cleanup(cleanup, sessions.store());
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            CliError::store(
                format!("cannot listen on {addr}: {e}"),
                Some("pick another port with --port, or stop what is using it".into()),
            )
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::store(e.to_string(), None))?;
        let data = web::Data::new(DemoState {
            where_stored: where_stored.clone(),
            passwords,
        });
        let engine = engine.to_owned();
        // actix-web runs on its own single-threaded runtimes (an actix System), not on
        // the CLI's multi-threaded one: the server is built and run on a thread of its
        // own.
        let served = tokio::task::spawn_blocking(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let prometheus = prometheus.clone();
                    App::new()
                        .app_data(data.clone())
                        // A scrape goes through the middleware but neither reads nor
                        // makes a session.
                        .route(
                            "/metrics",
                            web::get().to(move || {
                                let handle = prometheus.clone();
                                async move {
                                    session_core::metrics::publish();
                                    handle.run_upkeep();
                                    HttpResponse::Ok()
                                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                                        .body(handle.render())
                                }
                            }),
                        )
                        .wrap(sessions.clone())
                        .route("/", web::get().to(index))
                        .route("/state", web::get().to(state))
                        .route("/cart/add", web::post().to(cart_add))
                        .route("/cart/remove", web::post().to(cart_remove))
                        .route("/login", web::post().to(login))
                        .route("/logout", web::post().to(logout))
                        .route("/password", web::post().to(password))
                        .route("/sessions/end", web::post().to(end_one))
                        .route("/sessions/end-others", web::post().to(end_other))
                        .route("/api/sessions", web::get().to(api_sessions))
                })
                .client_request_timeout(args.header_timeout)
                .keep_alive(args.header_timeout)
                .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX))
                .shutdown_timeout(args.shutdown_timeout.as_secs().max(1))
                .listen(listener)
                .map_err(|e| CliError::store(format!("cannot serve on {local}: {e}"), None))?;
                println!("sessions demo listening on http://{local}/");
                println!("engine: {engine} — sessions stored {where_stored} (actix-web)");
                println!("press Ctrl-C to stop");
                server
                    .run()
                    .await
                    .map_err(|e| CliError::store(format!("server error: {e}"), None))
            })
        })
        .await
        .map_err(|e| CliError::store(format!("server thread failed: {e}"), None))?;
        if let Some(cleanup) = cleanup {
            cleanup.stop().await;
        }
        served?;
        println!("stopped");
        Ok(())
    }
}
