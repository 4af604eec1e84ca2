//! The Memcached text protocol over tokio, with a small connection pool.
//!
//! Only the commands the store needs: `get`, `gets`, `set`, `add`, `cas`, `delete` and
//! `lru_crawler metadump` (for purging a prefix). One request is in flight per
//! connection; concurrency comes from the pool (at most `pool_size` connections, each
//! reused after a clean reply). A connection that saw an I/O error, a protocol error or
//! a timeout is dropped, never reused, since its stream position is unknown; after an
//! I/O error every idle connection is dropped too (they point at the same, probably
//! restarted, server), and idle connections are checked for a closed socket before use,
//! so a restarted server costs at most the one request that noticed it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The reply to a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the protocol's replies
pub(crate) enum Stored {
    /// `STORED`.
    Stored,
    /// `NOT_STORED`: `add` found the key taken.
    NotStored,
    /// `EXISTS`: `cas` found the item changed since `gets`.
    Exists,
    /// `NOT_FOUND`: `cas` found no item.
    NotFound,
}

/// A storage command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreCmd {
    Set,
    Add,
    Cas(u64),
}

/// One connection: buffered reads, whole-request writes.
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    out: Vec<u8>,
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

    /// `get`/`gets`: the value and, for `gets`, its CAS token.
    pub async fn get(
        &mut self,
        key: &[u8],
        with_cas: bool,
    ) -> Result<Option<(Vec<u8>, u64)>, ProtoError> {
        self.out.clear();
        self.out
            .extend_from_slice(if with_cas { b"gets " } else { b"get " });
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        let line = self.read_line().await?;
        if line == b"END" {
            return Ok(None);
        }
        let (len, cas) = parse_value_line(line, with_cas)?;
        let mut data = vec![0u8; len + 2];
        self.stream.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(ProtoError::Protocol("value not followed by CRLF".into()));
        }
        data.truncate(len);
        if self.read_line().await? != b"END" {
            return Err(ProtoError::Protocol("expected END after one value".into()));
        }
        Ok(Some((data, cas)))
    }

    /// `set`/`add`/`cas` with flags 0.
    pub async fn store(
        &mut self,
        cmd: StoreCmd,
        key: &[u8],
        exptime: i64,
        data: &[u8],
    ) -> Result<Stored, ProtoError> {
        use std::io::Write as _;
        self.out.clear();
        self.out.extend_from_slice(match cmd {
            StoreCmd::Set => b"set ",
            StoreCmd::Add => b"add ",
            StoreCmd::Cas(_) => b"cas ",
        });
        self.out.extend_from_slice(key);
        write!(self.out, " 0 {exptime} {}", data.len())?;
        if let StoreCmd::Cas(token) = cmd {
            write!(self.out, " {token}")?;
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        match self.read_line().await? {
            b"STORED" => Ok(Stored::Stored),
            b"NOT_STORED" => Ok(Stored::NotStored),
            b"EXISTS" => Ok(Stored::Exists),
            b"NOT_FOUND" => Ok(Stored::NotFound),
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
    fn looks_alive(&self) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
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

/// `VALUE <key> <flags> <bytes> [<cas>]` -> (bytes, cas).
fn parse_value_line(line: &[u8], with_cas: bool) -> Result<(usize, u64), ProtoError> {
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
    let cas = if with_cas {
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?
    } else {
        0
    };
    Ok((len, cas))
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

    /// An idle live connection, or a new one.
    pub async fn get(&self) -> Result<Lease, ProtoError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ProtoError::Protocol("connection pool closed".into()))?;
        loop {
            let candidate = self.idle().pop();
            match candidate {
                Some(conn) if conn.looks_alive() => {
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
            },
            _permit: permit,
        })
    }

    /// Returns a connection after a clean reply.
    pub fn put(&self, lease: Lease) {
        let current = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        if lease.conn.generation == current {
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
        assert_eq!(
            parse_value_line(b"VALUE k 0 5 77", true).ok().map(|v| v.0),
            Some(5)
        );
        assert_eq!(
            parse_value_line(b"VALUE k 0 5 77", true).ok().map(|v| v.1),
            Some(77)
        );
        assert!(parse_value_line(b"VALUE k 0 x", false).is_err());
        assert!(parse_value_line(b"VALUE k 0 5", true).is_err());
        assert!(matches!(
            parse_value_line(b"SERVER_ERROR out of memory", false),
            Err(ProtoError::Server(_))
        ));
    }

    #[test]
    fn metadump_keys_are_percent_decoded() {
        assert_eq!(percent_decode(b"a%3Ab%25"), b"a:b%");
        assert_eq!(percent_decode(b"plain%"), b"plain%");
        assert_eq!(percent_decode(b"x%zz"), b"x%zz");
    }
}
