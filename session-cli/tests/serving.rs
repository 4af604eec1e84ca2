//! `sessions demo` as a server facing hostile clients, on the built binary over
//! loopback: half-sent headers are cut off at the header timeout, a connection limit
//! keeps slow clients from taking every file descriptor, a stalled body is answered
//! at the request timeout, and SIGTERM/SIGINT exit within the shutdown deadline even
//! while a slow client is connected. Every wait is bounded.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The longest any step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

/// A running `sessions demo`, killed on drop.
struct Demo {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo on the memory engine, a free loopback port and `flags`.
    fn start(flags: &[&str]) -> Demo {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = support::sessions();
        let mut child = cmd
            .args(["demo", "--host", "127.0.0.1", "--port", "0"])
            .args(flags)
            .env("SESSION_ENGINE", "memory")
            .current_dir(dir.path()) // no Sessions.toml here
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn `sessions demo`");
        let addr = support::stdout_lines(&mut child).demo_address(Instant::now() + WAIT);
        Demo {
            child,
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection that sent the start of a request and then stalls.
    fn slow_client(&self) -> TcpStream {
        let mut s = TcpStream::connect_timeout(&self.addr, WAIT).expect("connect");
        s.write_all(b"GET /state HTTP/1.1\r\nHost: demo\r\nX-Slow: ")
            .expect("write half a request");
        s
    }

    /// One complete `GET /state` on a new connection: the status line, and how long it
    /// took.
    fn get_state(&self) -> (String, Duration) {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&self.addr, WAIT).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(b"GET /state HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            .expect("write a request");
        let mut response = Vec::new();
        if let Err(e) = s.read_to_end(&mut response) {
            panic!("no response within {WAIT:?}: {e}");
        }
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.lines().next().unwrap_or_default().to_owned();
        (status, start.elapsed())
    }

    /// How many file descriptors the demo process has open.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Sends `signal` (`TERM`, `INT`) with the `kill` command.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Reads until the server closes `s`; returns how long that took (from `since`).
fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {} // a 408 or similar before closing is fine
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return since.elapsed(),
            Err(e) => panic!("the connection stayed open for {WAIT:?}: {e}"),
        }
    }
}

#[test]
fn a_half_sent_request_is_closed_at_the_header_timeout() {
    let demo = Demo::start(&["--header-timeout", "1s"]);
    let start = Instant::now();
    let half = demo.slow_client();
    let silent = TcpStream::connect_timeout(&demo.addr, WAIT).expect("connect");
    let t = closed_after(half, start);
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_secs(4),
        "half-sent headers: closed after {t:?}, wanted about 1 s"
    );
    eprintln!("half-sent headers closed after {t:?} (header timeout 1 s)");
    let t = closed_after(silent, start);
    eprintln!("a silent connection closed after {t:?}");
    assert!(
        t < Duration::from_secs(4),
        "a connection that sends nothing: closed after {t:?}"
    );
    let (status, _) = demo.get_state();
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn slow_clients_beyond_the_connection_limit_neither_take_descriptors_nor_stop_requests() {
    let demo = Demo::start(&["--header-timeout", "2s", "--max-connections", "4"]);
    let (status, _) = demo.get_state();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let base_fds = demo.open_fds();

    // 4 slow clients hold every slot: a normal request waits for one.
    let held: Vec<TcpStream> = (0..4).map(|_| demo.slow_client()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = demo.get_state();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        took >= Duration::from_millis(1200),
        "served after {took:?} while 4 of 4 slots were held: the limit did not hold"
    );
    drop(held);

    // 4 + 12 slow clients: the process opens at most 4 more descriptors, and a normal
    // request is served once the slow ones ahead of it time out, 4 every 2 s.
    let start = Instant::now();
    let slow: Vec<TcpStream> = (0..16).map(|_| demo.slow_client()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let fds = demo.open_fds();
    assert!(
        fds <= base_fds + 4,
        "{fds} descriptors open with 16 slow clients (was {base_fds}); the limit is 4"
    );
    let (status, _) = demo.get_state();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "a normal request behind 16 slow clients took {took:?}"
    );
    eprintln!(
        "a normal request behind 16 slow clients (limit 4, header timeout 2 s): {took:?}; descriptors {base_fds} -> {fds}"
    );
    drop(slow);
}

#[test]
fn a_stalled_request_body_is_answered_at_the_request_timeout() {
    let demo = Demo::start(&["--request-timeout", "1s", "--header-timeout", "5s"]);
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&demo.addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(
        b"POST /cart/add HTTP/1.1\r\nHost: demo\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nitem=ap",
    )
    .expect("write a request with a short body");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("an answer before the read timeout");
    let took = start.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = head.lines().next().unwrap_or_default();
    eprintln!("a stalled body: {status:?} after {took:?} (request timeout 1 s)");
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}, wanted about 1 s"
    );
}

fn exits_within_the_deadline_on(signal: &str) {
    let mut demo = Demo::start(&["--header-timeout", "60s", "--shutdown-timeout", "1s"]);
    let (status, _) = demo.get_state();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let _slow = demo.slow_client();
    let _silent = TcpStream::connect_timeout(&demo.addr, WAIT).expect("connect");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    demo.signal(signal);
    let exit = demo.wait_exit(Duration::from_secs(10));
    let took = start.elapsed();
    eprintln!("SIG{signal} with two slow clients: exit after {took:?} (deadline 1 s)");
    let exit = exit.unwrap_or_else(|| panic!("still running 10 s after SIG{signal}"));
    assert!(exit.success(), "SIG{signal}: {exit:?}");
    assert!(
        took < Duration::from_secs(3),
        "SIG{signal}: exited after {took:?}; the deadline is 1 s"
    );
}

#[test]
fn sigterm_exits_within_the_shutdown_deadline_while_a_slow_client_is_connected() {
    exits_within_the_deadline_on("TERM");
}

#[test]
fn sigint_exits_within_the_shutdown_deadline_while_a_slow_client_is_connected() {
    exits_within_the_deadline_on("INT");
}
