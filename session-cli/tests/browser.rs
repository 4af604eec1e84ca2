//! End-to-end test of `sessions demo` in a real headless Chromium, driven through
//! chromedriver over the W3C WebDriver HTTP protocol.
//!
//! It checks what only a real browser can tell: that the cookie the demo sets is kept and
//! sent back over plain http on 127.0.0.1, that the forms on the page work, that two
//! browser profiles get two sessions, and that one browser signed in as a user can sign
//! the user's other browser out ("Your sessions", "Sign out other devices"). The first
//! test runs once per web framework the demo serves (`--framework axum`, the default,
//! and `--framework actix`). It also takes the README screenshot (from the axum run):
//! `SESSIONS_UPDATE_SCREENSHOT=1 cargo test -p session-cli --test browser` rewrites
//! `docs/demo.png`; every run writes `target/browser/demo.png`.
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`);
//! `scripts/test` installs them. If they are missing the test fails, it never skips.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "install them with \
    `DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver`, \
    or run `scripts/test`, which installs them";
/// The bound on every single wait: process start-up, a page load, a navigation.
const WAIT: Duration = Duration::from_secs(20);
/// The bound on the whole test, so that it can never hang.
const WHOLE_TEST: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);
const COOKIE: &str = "sessionid";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 800;

// ------------------------------------------------------------------ processes --

/// A child process killed (with everything it started) when dropped, also on panic.
struct Guard {
    name: &'static str,
    child: Child,
    /// The child leads its own process group: kill the whole group.
    group: bool,
    /// Also kill any process whose command line mentions this path (our temp dir), such
    /// as Chromium's crash handler, which leaves the process group.
    marker: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(marker) = &self.marker {
            kill_processes_mentioning(marker);
        }
    }
}

/// Kills, by pid, the processes whose command line contains `marker` (a unique temp dir
/// this test created, so it can only match processes this test started).
fn kill_processes_mentioning(marker: &Path) {
    let marker = marker.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}

/// Starts `sessions demo` on a free port with the default engine (`file`) and no config
/// file, its temp dir (hence its session directory) inside `dir`; returns it and its URL.
async fn start_demo(dir: &Path, framework: &str) -> (Guard, String) {
    // Keep the developer's environment from choosing the engine or the cookie settings.
    let mut cmd = support::sessions();
    let mut child = cmd
        .args(["demo", "--host", "127.0.0.1", "--port", "0"])
        .args(["--framework", framework])
        .current_dir(dir) // no Sessions.toml here
        .env("TMPDIR", dir) // the file engine's default directory: $TMPDIR/sessions
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn `sessions demo`");
    let stdout = child.stdout.take().expect("the demo's stdout");
    let guard = Guard {
        name: "sessions demo",
        child,
        group: false,
        marker: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut base = None;
    while base.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(POLL)
            && let Some(url) = line.strip_prefix("sessions demo listening on ")
        {
            base = Some(url.trim_end_matches('/').to_owned());
        }
    }
    let base =
        base.unwrap_or_else(|| panic!("{} did not print its URL within {WAIT:?}", guard.name));
    // Wait until it answers (GET /state reads the session only, so it sets no cookie).
    let client = http();
    loop {
        match client.get(format!("{base}/state")).send().await {
            Ok(r) if r.status().is_success() => break,
            other => assert!(
                Instant::now() < deadline,
                "the demo at {base} did not answer within {WAIT:?}: {other:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    (guard, base)
}

/// Starts chromedriver on a free port, in its own process group, with its (and so
/// Chromium's) home and config dirs inside `dir`; waits until it is ready.
async fn start_chromedriver(dir: &Path) -> (Guard, String) {
    let port = free_port();
    let log_path = dir.join("chromedriver.log");
    let log = File::create(&log_path).expect("create chromedriver.log");
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log file handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
    let mut guard = Guard {
        name: "chromedriver",
        child,
        group: true,
        marker: Some(dir.to_path_buf()),
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = http();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = client.get(format!("{base}/status")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == json!(true)
        {
            break;
        }
        let exited = guard.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "chromedriver on port {port} was not ready within {WAIT:?} (exit: {exited:?}); \
                 its log:\n{log}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
    (guard, base)
}

// ------------------------------------------------------------------ WebDriver --

/// What the demo page shows, read from the DOM.
#[derive(Debug, Clone, PartialEq)]
struct Page {
    visits: u64,
    cart: Vec<String>,
    /// `Some(name)` when signed in.
    user: Option<String>,
    fingerprint: String,
}

/// One WebDriver session: one browser with its own profile.
struct Browser {
    name: &'static str,
    http: reqwest::Client,
    url: String,
}

impl Browser {
    async fn open(driver: &str, name: &'static str, profile: &Path) -> Browser {
        let http = http();
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "implicit": 0, "pageLoad": WAIT.as_millis() as u64, "script": WAIT.as_millis() as u64 },
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            format!("--user-data-dir={}", profile.display()),
                            format!("--window-size={WIDTH},{HEIGHT}"),
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--hide-scrollbars",
                            "--force-device-scale-factor=1",
                        ],
                    },
                },
            },
        });
        let resp = http
            .post(format!("{driver}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: POST /session to chromedriver failed: {e}"));
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: POST /session: unreadable answer: {e}"));
        let id = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{name}: chromedriver could not start Chromium ({status}): {body}")
            })
            .to_owned();
        let browser = Browser {
            name,
            http,
            url: format!("{driver}/session/{id}"),
        };
        browser
            .call(
                Method::POST,
                "/window/rect",
                json!({ "width": WIDTH, "height": HEIGHT }),
            )
            .await;
        browser
    }

    /// One WebDriver command; `Err` carries the WebDriver error and message.
    async fn try_call(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| format!("HTTP error: {e}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("unreadable answer ({status}): {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            ))
        }
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let what = format!("{method} {path}");
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{}: WebDriver {what} failed: {e}", self.name))
    }

    async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn find_all(&self, css: &str) -> Result<Vec<String>, String> {
        let v = self
            .try_call(
                Method::POST,
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        self.find_all(css)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no element matches `{css}`"))
    }

    async fn text(&self, element: &str) -> Result<String, String> {
        let v = self
            .try_call(
                Method::GET,
                &format!("/element/{element}/text"),
                Value::Null,
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().trim().to_owned())
    }

    /// Reads what the page shows, once; `Err` if it is not (yet) the demo page.
    async fn try_page(&self) -> Result<Page, String> {
        let count = self.text(&self.find("#visit-count").await?).await?;
        let visits = count
            .parse()
            .map_err(|e| format!("#visit-count is {count:?}: {e}"))?;
        let mut cart = Vec::new();
        for el in self.find_all("#cart-items [data-item]").await? {
            cart.push(self.text(&el).await?);
        }
        let user = match self.find_all("#user").await?.first() {
            Some(el) => Some(self.text(el).await?),
            None => {
                self.find("#user-none").await?;
                None
            }
        };
        let fingerprint = self.text(&self.find("#fingerprint").await?).await?;
        Ok(Page {
            visits,
            cart,
            user,
            fingerprint,
        })
    }

    /// Reads the page, waiting (bounded) until it is there.
    async fn page(&self, after: &str) -> Page {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.try_page().await {
                Ok(p) => return p,
                Err(e) if Instant::now() >= deadline => {
                    let (url, text) = self.where_am_i().await;
                    panic!(
                        "{}: the demo page did not show up within {WAIT:?} after {after}: {e}\n\
                         the browser is at {url}, showing:\n{text}",
                        self.name
                    )
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The current URL and the start of the page's text, for failure messages.
    async fn where_am_i(&self) -> (String, String) {
        let url = self
            .try_call(Method::GET, "/url", Value::Null)
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let text = match self.find("body").await {
            Ok(body) => self.text(&body).await.unwrap_or_else(|e| e),
            Err(e) => e,
        };
        (url, text.chars().take(600).collect())
    }

    /// Loads the demo page at `url` and reads it.
    async fn load(&self, url: &str) -> Page {
        self.goto(url).await;
        self.page(&format!("loading {url}")).await
    }

    /// Reloads the page (the browser's own reload) and reads it.
    async fn reload(&self) -> Page {
        self.call(Method::POST, "/refresh", json!({})).await;
        self.page("a reload").await
    }

    /// Clicks the element `css` (a form button), waits until the browser has left the
    /// current page, and reads the page it lands on.
    async fn click(&self, css: &str) -> Page {
        let what = format!("clicking `{css}`");
        let old = self
            .find("html")
            .await
            .unwrap_or_else(|e| panic!("{}: before {what}: {e}", self.name));
        let el = self
            .find(css)
            .await
            .unwrap_or_else(|e| panic!("{}: cannot click: {e}", self.name));
        self.call(Method::POST, &format!("/element/{el}/click"), json!({}))
            .await;
        let deadline = Instant::now() + WAIT;
        // The old document goes stale once the form's POST-redirect-GET has navigated.
        while self
            .try_call(Method::GET, &format!("/element/{old}/name"), Value::Null)
            .await
            .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "{}: {what} did not navigate within {WAIT:?}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
        self.page(&what).await
    }

    /// The number of sessions "Your sessions" lists.
    async fn session_count(&self) -> usize {
        let el = self
            .find("#session-count")
            .await
            .unwrap_or_else(|e| panic!("{}: no \"Your sessions\" panel: {e}", self.name));
        let n = self.text(&el).await.expect("text");
        n.parse()
            .unwrap_or_else(|e| panic!("{}: #session-count is {n:?}: {e}", self.name))
    }

    /// Picks `fruit` in the select box and clicks "Add to cart".
    async fn add(&self, fruit: &str) -> Page {
        let option = self
            .find(&format!("#item option[value=\"{fruit}\"]"))
            .await
            .unwrap_or_else(|e| panic!("{}: no {fruit} to pick: {e}", self.name));
        self.call(Method::POST, &format!("/element/{option}/click"), json!({}))
            .await;
        self.click("#add").await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .find(css)
            .await
            .unwrap_or_else(|e| panic!("{}: cannot type into it: {e}", self.name));
        self.call(
            Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The session cookie as the browser keeps it (WebDriver GET /cookie), if any.
    async fn session_cookie(&self) -> Option<Value> {
        let all = self.call(Method::GET, "/cookie", Value::Null).await;
        let mut found: Vec<Value> = all
            .as_array()
            .map(|a| a.iter().filter(|c| c["name"] == COOKIE).cloned().collect())
            .unwrap_or_default();
        assert!(
            found.len() <= 1,
            "{}: more than one `{COOKIE}` cookie: {all}",
            self.name
        );
        found.pop()
    }

    /// The session cookie's value; fails unless the browser kept a usable one.
    async fn cookie_value(&self, when: &str) -> String {
        let c = self.session_cookie().await.unwrap_or_else(|| {
            panic!(
                "{}: {when}: the browser kept no `{COOKIE}` cookie for http://127.0.0.1 \
                 (a Secure cookie is dropped over plain http; the demo must turn Secure off)",
                self.name
            )
        });
        assert_eq!(
            c["secure"],
            json!(false),
            "{}: {when}: the session cookie is Secure, so the browser will not send it back \
             over plain http: {c}",
            self.name
        );
        assert_eq!(
            c["httpOnly"],
            json!(true),
            "{}: {when}: the session cookie must be HttpOnly: {c}",
            self.name
        );
        c["value"]
            .as_str()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("{}: {when}: empty session cookie: {c}", self.name))
            .to_owned()
    }

    /// Resizes the window (keeping its width) so that the viewport holds the whole page
    /// and no more, for a screenshot without a cut or an empty band.
    async fn fit_window_to_page(&self) {
        let script = "const b = document.body; \
                      return [window.outerHeight - window.innerHeight, Math.ceil(\
                      b.getBoundingClientRect().bottom + window.scrollY \
                      + parseFloat(getComputedStyle(b).marginBottom))];";
        let v = self
            .call(
                Method::POST,
                "/execute/sync",
                json!({ "script": script, "args": [] }),
            )
            .await;
        let (frame, page) = (v[0].as_u64(), v[1].as_u64());
        let (Some(frame), Some(page)) = (frame, page) else {
            panic!("{}: cannot measure the page: {v}", self.name);
        };
        self.call(
            Method::POST,
            "/window/rect",
            json!({ "width": WIDTH, "height": frame + page }),
        )
        .await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: the screenshot is not base64: {e}", self.name));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{}: the screenshot is not a PNG",
            self.name
        );
        png
    }

    /// Ends the WebDriver session, which closes this browser.
    async fn quit(self) {
        let _ = self.try_call(Method::DELETE, "", Value::Null).await;
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("session-cli lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

fn save_screenshot(png: &[u8]) {
    let out = target_dir().join("browser").join("demo.png");
    std::fs::create_dir_all(out.parent().expect("a parent dir")).expect("create target/browser");
    std::fs::write(&out, png).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    eprintln!("screenshot: {}", out.display());
    if std::env::var("SESSIONS_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = workspace_root().join("docs").join("demo.png");
        std::fs::create_dir_all(docs.parent().expect("a parent dir")).expect("create docs/");
        std::fs::write(&docs, png).unwrap_or_else(|e| panic!("write {}: {e}", docs.display()));
        eprintln!("screenshot: {} (updated)", docs.display());
    }
}

// ----------------------------------------------------------------------- test --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_works_in_headless_chromium() {
    in_chromium("axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_actix_web_works_in_headless_chromium() {
    in_chromium("actix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_other_devices_in_headless_chromium() {
    needs_chromium();
    tokio::time::timeout(WHOLE_TEST, run_sign_out_other_devices("axum"))
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {WHOLE_TEST:?}"));
}

fn needs_chromium() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: this test needs Debian's Chromium and chromedriver; {INSTALL_HINT}"
        );
    }
}

async fn in_chromium(framework: &'static str) {
    needs_chromium();
    tokio::time::timeout(WHOLE_TEST, run_in_chromium(framework))
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {WHOLE_TEST:?}"));
}

/// Two browsers (two profiles) sign in as the same user; the first sees both sessions
/// in "Your sessions", signs the other out, and the second's next page load is signed
/// out.
async fn run_sign_out_other_devices(framework: &str) {
    let temp = |prefix| {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create a temp dir")
    };
    let (server_tmp, chrome_tmp) = (temp("sessions-demo-"), temp("sessions-chromium-"));
    let chrome_dir = chrome_tmp.path();
    let (_demo, base) = start_demo(server_tmp.path(), framework).await;
    let (_driver, driver) = start_chromedriver(chrome_dir).await;
    let home = format!("{base}/");

    let a = Browser::open(&driver, "browser A", &chrome_dir.join("profile-a")).await;
    let b = Browser::open(&driver, "browser B", &chrome_dir.join("profile-b")).await;
    for browser in [&a, &b] {
        let p = browser.load(&home).await;
        assert_eq!(p.user, None, "{}: {p:?}", browser.name);
        browser.type_into("#username", "grace").await;
        let p = browser.click("#login").await;
        assert_eq!(p.user.as_deref(), Some("grace"), "{}: {p:?}", browser.name);
    }
    let a_key = a.cookie_value("after login").await;
    let b_key = b.cookie_value("after login").await;
    assert_ne!(a_key, b_key, "two browsers, two sessions");

    // Browser A lists both sessions: its own marked, B's with a sign-out button; the
    // client column shows the browser and the loopback address (client tracking).
    let p = a.reload().await;
    assert_eq!(p.user.as_deref(), Some("grace"));
    assert_eq!(a.session_count().await, 2, "browser A sees two sessions");
    let this = a
        .find("#this-device")
        .await
        .unwrap_or_else(|e| panic!("browser A: its own session is marked: {e}"));
    assert_eq!(a.text(&this).await.as_deref(), Ok("this device"));
    let mut clients = Vec::new();
    for el in a.find_all("#session-list .client").await.expect("clients") {
        clients.push(a.text(&el).await.expect("text"));
    }
    assert_eq!(clients.len(), 2, "{clients:?}");
    for c in &clients {
        assert!(
            c.contains("Chrome") && c.contains("127.0.0.1"),
            "browser A: each session shows its browser and address: {clients:?}"
        );
    }
    let source = a.call(Method::GET, "/source", Value::Null).await;
    let source = source.as_str().unwrap_or_default();
    assert!(source.contains("Your sessions"), "{source}");
    assert!(
        !source.contains(&a_key) && !source.contains(&b_key),
        "the page never shows a session key"
    );

    // "Sign out other devices": A stays signed in, alone; B's next load is signed out.
    let p = a.click("#end-others").await;
    assert_eq!(
        p.user.as_deref(),
        Some("grace"),
        "browser A stays signed in: {p:?}"
    );
    assert_eq!(
        a.session_count().await,
        1,
        "browser A: only its own session is left"
    );
    assert_eq!(a.cookie_value("after signing out the others").await, a_key);
    let q = b.reload().await;
    assert_eq!(
        (q.user.as_deref(), q.visits),
        (None, 1),
        "browser B is signed out on its next page load, with a fresh session: {q:?}"
    );
    assert_ne!(b.cookie_value("after being signed out").await, b_key);

    a.quit().await;
    b.quit().await;
}

async fn run_in_chromium(framework: &str) {
    // Declared first, dropped last: the processes are gone before their dirs are removed.
    let temp = |prefix| {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create a temp dir")
    };
    let (server_tmp, chrome_tmp) = (temp("sessions-demo-"), temp("sessions-chromium-"));
    let chrome_dir = chrome_tmp.path();
    let (_demo, base) = start_demo(server_tmp.path(), framework).await;
    let (_driver, driver) = start_chromedriver(chrome_dir).await;
    let home = format!("{base}/");

    // ---- browser A: the cookie is kept over plain http, and the counter climbs.
    let a = Browser::open(&driver, "browser A", &chrome_dir.join("profile-a")).await;
    let p = a.load(&home).await;
    assert_eq!(p.visits, 1, "browser A: first visit: {p:?}");
    assert!(
        p.cart.is_empty(),
        "browser A: a new session has an empty cart: {p:?}"
    );
    assert_eq!(
        p.user, None,
        "browser A: a new session is signed out: {p:?}"
    );
    let first_key = a.cookie_value("after the first visit").await;
    for n in 2..=3 {
        let p = a.reload().await;
        assert_eq!(
            p.visits, n,
            "browser A: the visit counter must climb across reloads (the browser sends the \
             cookie back): {p:?}"
        );
    }
    assert_eq!(
        a.cookie_value("after two reloads").await,
        first_key,
        "browser A: the session key must not change across plain page views"
    );

    // ---- the cart, through the page's own forms, persisting across a reload.
    let p = a.add("banana").await;
    assert_eq!(
        (p.visits, p.cart.clone()),
        (4, vec!["banana".to_owned()]),
        "browser A: {p:?}"
    );
    let p = a.add("cherry").await;
    assert_eq!(p.cart, ["banana", "cherry"], "browser A: {p:?}");
    let p = a.add("mango").await;
    assert_eq!(p.cart, ["banana", "cherry", "mango"], "browser A: {p:?}");
    let p = a.click("#remove-cherry").await;
    assert_eq!(
        p.cart,
        ["banana", "mango"],
        "browser A: removing cherry: {p:?}"
    );
    let p = a.reload().await;
    assert_eq!(
        (p.visits, p.cart.clone()),
        (8, vec!["banana".to_owned(), "mango".to_owned()]),
        "browser A: the cart must persist across a reload: {p:?}"
    );
    let before_login = p;

    // ---- login cycles the key and keeps the data.
    a.type_into("#username", "ada").await;
    let p = a.click("#login").await;
    assert_eq!(
        p.user.as_deref(),
        Some("ada"),
        "browser A: signed in: {p:?}"
    );
    assert_eq!(
        (p.visits, &p.cart),
        (9, &before_login.cart),
        "browser A: login must keep the counter and the cart: {p:?}"
    );
    let login_key = a.cookie_value("after login").await;
    assert_ne!(
        login_key, first_key,
        "browser A: login must cycle the session key (the cookie value must change)"
    );
    assert_ne!(
        p.fingerprint, before_login.fingerprint,
        "browser A: the fingerprint must change with the key"
    );
    let p = a.reload().await;
    assert_eq!(
        (p.visits, &p.cart, p.user.as_deref()),
        (10, &before_login.cart, Some("ada")),
        "browser A: the cycled session must persist across a reload: {p:?}"
    );

    // The README screenshot: counter > 1, items in the cart, signed in.
    a.fit_window_to_page().await;
    if framework == "axum" {
        save_screenshot(&a.screenshot().await);
    }

    // ---- browser B, its own profile: its own session.
    let b = Browser::open(&driver, "browser B", &chrome_dir.join("profile-b")).await;
    let q = b.load(&home).await;
    assert_eq!(
        (q.visits, q.cart.len(), q.user.as_deref()),
        (1, 0, None),
        "browser B: a second browser must get its own fresh session, not browser A's: {q:?}"
    );
    let b_key = b.cookie_value("after its first visit").await;
    assert_ne!(
        b_key, login_key,
        "browser B must not share browser A's cookie"
    );
    let q = b.add("kiwi").await;
    assert_eq!(
        (q.visits, q.cart.clone()),
        (2, vec!["kiwi".to_owned()]),
        "browser B: {q:?}"
    );
    let p = a.reload().await;
    assert_eq!(
        (p.visits, &p.cart),
        (11, &before_login.cart),
        "browser A must not see browser B's cart or visits: {p:?}"
    );

    // ---- logout clears browser A's session, and only A's.
    let p = a.click("#logout").await;
    assert_eq!(
        (p.visits, p.cart.len(), p.user.as_deref()),
        (1, 0, None),
        "browser A: logout must clear the session (the page after it starts afresh): {p:?}"
    );
    if let Some(c) = a.session_cookie().await {
        assert_ne!(
            c["value"].as_str(),
            Some(login_key.as_str()),
            "browser A: logout must remove or replace the session cookie"
        );
    }
    let q = b.reload().await;
    assert_eq!(
        (q.visits, q.cart.clone(), q.user.as_deref()),
        (3, vec!["kiwi".to_owned()], None),
        "browser B must be untouched by browser A's logout: {q:?}"
    );
    assert_eq!(b.cookie_value("at the end").await, b_key);

    a.quit().await;
    b.quit().await;
}
