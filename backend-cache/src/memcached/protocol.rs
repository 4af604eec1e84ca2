//! The Memcached text protocol over tokio, with a small connection pool.
//!
//! Only the commands the store needs: the meta commands `mg` (value and CAS token) and
//! `ms` (set, add or compare-and-set, returning the new CAS token), the classic `get`,
//! `set`, `delete`, and `lru_crawler metadump` (for purging a prefix). One request is in flight per
//! connection; concurrency comes from the pool (at most `pool_size` connections, each
//! reused after a clean reply). A connection that saw an I/O error, a protocol error or
//! a timeout is dropped, never reused, since its stream position is unknown; after an
//! I/O error every idle connection is dropped too (they point at the same, probably
//! restarted, server), and connections idle for more than half a second are checked for
//! a closed socket before use, so a restarted server costs at most the requests in
//! flight on connections that were busy when it went away.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle connections older than this are probed for a closed socket before reuse.
const PROBE_AFTER_IDLE: Duration = Duration::from_millis(500);

/// Largest value accepted from the server (Memcached's own ceiling is 1 GiB).
const MAX_VALUE_LEN: usize = 1 << 30;

/// Why a Memcached request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtoError {
    /// The socket failed or closed.
    #[error("I/O error talking to Memcached: {0}")]
    Io(#[from] io::Error),
    /// The server refused the request (`SERVER_ERROR ...`, `CLIENT_ERROR ...`, `ERROR`).
    #[error("Memcached replied {0:?}")]
    Server(String),
    /// The reply did not follow the protocol.
    #[error("malformed reply from Memcached: {0}")]
    Protocol(String),
    /// No connection could be made in time.
    #[error("could not connect to Memcached at {addr} within {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
}

impl ProtoError {
    /// Whether the server said the value is over its item size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, ProtoError::Server(m) if m.contains("too large"))
    }
}

/// The reply to a meta set (`ms`), which returns the item's new CAS token on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaStored {
    /// `HD c<cas>`: stored; the item's new CAS token.
    Stored(u64),
    /// `NS`: not stored (an `add` found the key taken).
    NotStored,
    /// `EX`: the CAS token did not match.
    Exists,
    /// `NF`: no item (a CAS on a missing key).
    NotFound,
}

/// One connection: buffered reads, whole-request writes.
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    out: Vec<u8>,
    /// When the connection went back to the pool.
    idle_since: Instant,
    generation: u64,
}

impl Conn {
    async fn read_line(&mut self) -> Result<&[u8], ProtoError> {
        self.read_raw_line().await?;
        match self.line.strip_suffix(b"\r\n") {
            Some(l) => Ok(l),
            None => Err(ProtoError::Protocol("line without CRLF".into())),
        }
    }

    /// A line ending in LF or CRLF (metadump lines end in a bare LF).
    async fn read_lenient_line(&mut self) -> Result<&[u8], ProtoError> {
        self.read_raw_line().await?;
        let l = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        Ok(l.strip_suffix(b"\r").unwrap_or(l))
    }

    async fn read_raw_line(&mut self) -> Result<(), ProtoError> {
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(ProtoError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Memcached closed the connection",
            )));
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), ProtoError> {
        self.stream.get_mut().write_all(&self.out).await?;
        Ok(())
    }

    /// `get`: the value.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
        self.out.clear();
        self.out.extend_from_slice(b"get ");
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        let line = self.read_line().await?;
        if line == b"END" {
            return Ok(None);
        }
        let len = parse_value_line(line)?;
        let data = self.read_value(len).await?;
        if self.read_line().await? != b"END" {
            return Err(ProtoError::Protocol("expected END after one value".into()));
        }
        Ok(Some(data))
    }

    /// `mg <key> v c`: the value and its CAS token (the meta form of `gets`).
    pub async fn meta_get(&mut self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>, ProtoError> {
        self.meta_get_with(key, |value, cas| (value.to_vec(), cas))
            .await
    }

    /// `mg <key> v c`, handing the value and its CAS token to `f`: straight out of the
    /// read buffer when the whole value is there (the usual case), so a load decodes
    /// without copying the value first.
    pub async fn meta_get_with<T>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&[u8], u64) -> T,
    ) -> Result<Option<T>, ProtoError> {
        self.out.clear();
        self.out.extend_from_slice(b"mg ");
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b" v c\r\n");
        self.send().await?;
        let line = self.read_line().await?;
        if line == b"EN" {
            return Ok(None);
        }
        let (len, cas) = parse_meta_value_line(line)?;
        let buffered = self.stream.buffer();
        if buffered.len() >= len + 2 {
            if &buffered[len..len + 2] != b"\r\n" {
                return Err(ProtoError::Protocol("value not followed by CRLF".into()));
            }
            let out = f(&buffered[..len], cas);
            self.stream.consume(len + 2);
            return Ok(Some(out));
        }
        let data = self.read_value(len).await?;
        Ok(Some(f(&data, cas)))
    }

    /// The `len` bytes of a value and the CRLF after them.
    async fn read_value(&mut self, len: usize) -> Result<Vec<u8>, ProtoError> {
        let mut data = Vec::with_capacity(len + 2);
        while data.len() < len + 2 {
            let buf = self.stream.fill_buf().await?;
            if buf.is_empty() {
                return Err(ProtoError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Memcached closed the connection",
                )));
            }
            let take = buf.len().min(len + 2 - data.len());
            data.extend_from_slice(&buf[..take]);
            self.stream.consume(take);
        }
        if !data.ends_with(b"\r\n") {
            return Err(ProtoError::Protocol("value not followed by CRLF".into()));
        }
        data.truncate(len);
        Ok(data)
    }

    /// `ms <key> <len> T<exptime> c [C<cas>] [ME]`: set (or add, or compare-and-set)
    /// returning the new CAS token.
    /// The value is `parts` concatenated (a header and a payload need not be joined
    /// into one buffer first).
    pub async fn meta_set(
        &mut self,
        key: &[u8],
        exptime: i64,
        parts: &[&[u8]],
        cas: Option<u64>,
        add: bool,
    ) -> Result<MetaStored, ProtoError> {
        use std::io::Write as _;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.out.clear();
        self.out.extend_from_slice(b"ms ");
        self.out.extend_from_slice(key);
        write!(self.out, " {len} T{exptime} c")?;
        if let Some(token) = cas {
            write!(self.out, " C{token}")?;
        }
        if add {
            self.out.extend_from_slice(b" ME");
        }
        self.out.extend_from_slice(b"\r\n");
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        let line = self.read_line().await?;
        let (code, rest) = match line.get(..2) {
            Some(c) => (c, &line[2..]),
            None => return Err(reply_error(line)),
        };
        match code {
            b"HD" => {
                let token = rest
                    .split(|b| *b == b' ')
                    .find_map(|p| p.strip_prefix(b"c"))
                    .and_then(parse_decimal)
                    .ok_or_else(|| {
                        ProtoError::Protocol(format!(
                            "ms reply without a CAS token: {:?}",
                            String::from_utf8_lossy(line)
                        ))
                    })?;
                Ok(MetaStored::Stored(token))
            }
            b"NS" => Ok(MetaStored::NotStored),
            b"EX" => Ok(MetaStored::Exists),
            b"NF" => Ok(MetaStored::NotFound),
            _ => Err(reply_error(line)),
        }
    }

    /// `set` with flags 0.
    pub async fn set(&mut self, key: &[u8], exptime: i64, data: &[u8]) -> Result<(), ProtoError> {
        use std::io::Write as _;
        self.out.clear();
        self.out.extend_from_slice(b"set ");
        self.out.extend_from_slice(key);
        write!(self.out, " 0 {exptime} {}\r\n", data.len())?;
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        match self.read_line().await? {
            b"STORED" => Ok(()),
            other => Err(reply_error(other)),
        }
    }

    /// `delete`: whether an item was there.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, ProtoError> {
        self.out.clear();
        self.out.extend_from_slice(b"delete ");
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        match self.read_line().await? {
            b"DELETED" => Ok(true),
            b"NOT_FOUND" => Ok(false),
            other => Err(reply_error(other)),
        }
    }

    /// Every key the server holds that starts with `prefix` (`lru_crawler metadump all`).
    /// Bounded by the server's item count; for purging test namespaces.
    pub async fn keys_with_prefix(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ProtoError> {
        self.out.clear();
        self.out.extend_from_slice(b"lru_crawler metadump all\r\n");
        self.send().await?;
        let mut keys = Vec::new();
        loop {
            let line = self.read_lenient_line().await?;
            if line == b"END" {
                return Ok(keys);
            }
            if line.starts_with(b"ERROR")
                || line.starts_with(b"BUSY")
                || line.starts_with(b"SERVER_ERROR")
                || line.starts_with(b"CLIENT_ERROR")
            {
                return Err(reply_error(line));
            }
            let Some(enc) = line
                .strip_prefix(b"key=")
                .and_then(|r| r.split(|b| *b == b' ').next())
            else {
                continue;
            };
            let key = percent_decode(enc);
            if key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }

    /// Whether an idle connection is still usable: nothing buffered, and the peer has
    /// not closed it (a non-blocking read finds no data and no EOF).
    fn looks_alive(&self, now: Instant) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
        }
        // A connection used within the last moment is trusted without a system call:
        // the probe matters for connections that sat idle through a server restart.
        if now.saturating_duration_since(self.idle_since) < PROBE_AFTER_IDLE {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.get_ref().try_read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

fn reply_error(line: &[u8]) -> ProtoError {
    let text = String::from_utf8_lossy(line).into_owned();
    if line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR") || line == b"ERROR" {
        ProtoError::Server(text)
    } else {
        ProtoError::Protocol(format!("unexpected reply {text:?}"))
    }
}

/// `VA <bytes> <flags...>` (with a `c<cas>` flag) -> bytes and CAS token.
fn parse_meta_value_line(line: &[u8]) -> Result<(usize, u64), ProtoError> {
    let bad = || ProtoError::Protocol(format!("bad mg reply {:?}", String::from_utf8_lossy(line)));
    let Some(rest) = line.strip_prefix(b"VA ") else {
        return Err(reply_error(line));
    };
    let mut parts = rest.split(|b| *b == b' ');
    let len = parts
        .next()
        .and_then(parse_decimal)
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l <= MAX_VALUE_LEN)
        .ok_or_else(bad)?;
    let cas = parts
        .find_map(|p| p.strip_prefix(b"c"))
        .and_then(parse_decimal)
        .ok_or_else(bad)?;
    Ok((len, cas))
}

/// A non-empty run of ASCII digits that fits a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        let d = d.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// `VALUE <key> <flags> <bytes>` -> bytes.
fn parse_value_line(line: &[u8]) -> Result<usize, ProtoError> {
    let bad = || {
        ProtoError::Protocol(format!(
            "bad VALUE line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    if !line.starts_with(b"VALUE ") {
        return Err(reply_error(line));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.split(' ').skip(2);
    let _flags = parts.next().ok_or_else(bad)?;
    let len: usize = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if len > MAX_VALUE_LEN {
        return Err(bad());
    }
    Ok(len)
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Connections to one server.
pub(crate) struct Pool {
    addr: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// Bumped after an I/O error: connections of an older generation are not reused.
    generation: std::sync::atomic::AtomicU64,
}

/// A connection checked out of the pool; returned with [`Pool::put`], or dropped.
pub(crate) struct Lease {
    pub conn: Conn,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(addr: String, size: usize, connect_timeout: Duration) -> Self {
        Pool {
            addr,
            connect_timeout,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle live connection, or a new one. `now` is the caller's clock reading (the
    /// start of its request), which saves reading the clock again here.
    pub async fn get(&self, now: Instant) -> Result<Lease, ProtoError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ProtoError::Protocol("connection pool closed".into()))?;
        loop {
            let candidate = self.idle().pop();
            match candidate {
                Some(conn) if conn.looks_alive(now) => {
                    return Ok(Lease {
                        conn,
                        _permit: permit,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let connect = TcpStream::connect(&self.addr);
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(s) => s?,
            Err(_) => {
                return Err(ProtoError::ConnectTimeout {
                    addr: self.addr.clone(),
                    after: self.connect_timeout,
                });
            }
        };
        stream.set_nodelay(true)?;
        Ok(Lease {
            conn: Conn {
                stream: BufReader::with_capacity(16 * 1024, stream),
                line: Vec::with_capacity(128),
                out: Vec::with_capacity(2048),
                generation: self.generation.load(std::sync::atomic::Ordering::Relaxed),
                idle_since: now,
            },
            _permit: permit,
        })
    }

    /// Returns a connection after a clean reply to a request that started at `started`:
    /// the connection counts as idle from then (earlier than its true return, so at
    /// worst it is probed a little sooner than needed).
    pub fn put(&self, mut lease: Lease, started: Instant) {
        let current = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        if lease.conn.generation == current {
            lease.conn.idle_since = started;
            self.idle().push(lease.conn);
        }
    }

    /// After a failure: the leased connection is dropped by the caller; on an I/O error
    /// the idle ones go too.
    pub fn failed(&self, error: &ProtoError) {
        if matches!(error, ProtoError::Io(_)) {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.idle().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_lines() {
        assert_eq!(parse_value_line(b"VALUE k 0 5").ok(), Some(5));
        assert!(parse_value_line(b"VALUE k 0 x").is_err());
        assert!(parse_value_line(b"VALUE k 0 99999999999").is_err());
        assert!(matches!(
            parse_value_line(b"SERVER_ERROR out of memory"),
            Err(ProtoError::Server(_))
        ));
    }

    #[test]
    fn meta_value_lines() {
        assert_eq!(parse_meta_value_line(b"VA 5 c42").ok(), Some((5, 42)));
        assert_eq!(parse_meta_value_line(b"VA 0 f0 c7").ok(), Some((0, 7)));
        assert!(parse_meta_value_line(b"VA 5").is_err());
        assert!(parse_meta_value_line(b"VA x c1").is_err());
        assert!(parse_meta_value_line(b"VA 5 c").is_err());
        assert!(parse_meta_value_line(b"VA 5 c1x").is_err());
        assert!(parse_meta_value_line(b"VA 99999999999 c1").is_err());
        assert!(parse_meta_value_line(b"VA 5 c99999999999999999999").is_err());
        assert!(matches!(
            parse_meta_value_line(b"SERVER_ERROR busy"),
            Err(ProtoError::Server(_))
        ));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
    }

    #[test]
    fn metadump_keys_are_percent_decoded() {
        assert_eq!(percent_decode(b"a%3Ab%25"), b"a:b%");
        assert_eq!(percent_decode(b"plain%"), b"plain%");
        assert_eq!(percent_decode(b"x%zz"), b"x%zz");
    }
}
