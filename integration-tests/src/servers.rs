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
