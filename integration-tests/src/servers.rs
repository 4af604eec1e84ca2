//! Where the test servers are: URLs exported by `scripts/test`.
//!
//! A backend test never skips: when a server's URL is missing or the server does not
//! answer, the test fails with a message naming the server and how to start it.

/// How to get every test server running and its URLs exported.
pub const HOW_TO_START: &str = "run the whole suite with `scripts/test`, or start the servers with \
`scripts/test --servers-only` and `source target/test-servers.env` before `cargo test`";

fn var_or(name: &str, default: Option<&str>, server: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => match default {
            Some(d) => d.to_owned(),
            None => {
                panic!("{server} is required for this test but {name} is not set: {HOW_TO_START}")
            }
        },
    }
}

/// PostgreSQL URL (`SESSIONS_TEST_POSTGRES_URL`, default the standard loopback server).
pub fn postgres_url() -> String {
    var_or(
        "SESSIONS_TEST_POSTGRES_URL",
        Some("postgres://postgres@127.0.0.1:5432/test"),
        "PostgreSQL",
    )
}

/// MySQL/MariaDB URL (`SESSIONS_TEST_MYSQL_URL`, default the standard loopback server).
pub fn mysql_url() -> String {
    var_or(
        "SESSIONS_TEST_MYSQL_URL",
        Some("mysql://root@127.0.0.1:3306/test"),
        "MariaDB",
    )
}

/// Redis URL (`SESSIONS_TEST_REDIS_URL`, default the standard loopback server).
pub fn redis_url() -> String {
    var_or(
        "SESSIONS_TEST_REDIS_URL",
        Some("redis://127.0.0.1:6379"),
        "Redis",
    )
}

/// Redis Cluster node URLs (`SESSIONS_TEST_REDIS_CLUSTER_URLS`, comma-separated; required).
pub fn redis_cluster_urls() -> Vec<String> {
    var_or(
        "SESSIONS_TEST_REDIS_CLUSTER_URLS",
        None,
        "A 3-node Redis Cluster",
    )
    .split(',')
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
    .collect()
}

/// Memcached URL (`SESSIONS_TEST_MEMCACHED_URL`; required).
pub fn memcached_url() -> String {
    var_or("SESSIONS_TEST_MEMCACHED_URL", None, "Memcached")
}

/// Panics with a message naming `server` and how to start it: for a test whose server
/// did not answer.
pub fn unreachable(server: &str, url: &str, error: impl std::fmt::Display) -> ! {
    panic!("{server} at {url} is not reachable ({error}): {HOW_TO_START}")
}

/// A short random suffix for per-run namespaces (tables, prefixes, directories).
pub fn unique_suffix() -> String {
    let key = session_core::SessionKey::generate().expect("OS randomness");
    key.as_str()[..12].to_owned()
}

/// The port of a server URL (`scheme://[user[:password]@]host:port[/path]`), for a
/// proxy put in front of it.
pub fn port_of(url: &str) -> u16 {
    let rest = url.rsplit('@').next().unwrap_or(url);
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    rest.split('/')
        .next()
        .and_then(|hostport| hostport.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// A free TCP port on the loopback interface (bound once, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A private `redis-server` on a loopback port, for fault tests that stop and restart
/// it without disturbing the shared server. Killed when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` on `port` (no persistence) and waits until it accepts
    /// connections (at most 5 s).
    pub fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start redis-server ({e}): install it with `apt-get install redis-server`")
            });
        let server = PrivateRedis {
            port,
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis-server did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
