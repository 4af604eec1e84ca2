//! What the tests of the built `sessions` binary share: the binary without the
//! developer's `SESSION_*` variables, and the address a started `sessions demo` prints.

#![allow(dead_code)] // every test file uses a part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

/// The built `sessions` binary, with none of the developer's `SESSION_*` variables.
pub fn sessions() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessions"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SESSION_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A child's standard output, line by line, read on a thread of its own.
pub struct Lines(mpsc::Receiver<String>);

/// Takes `child`'s piped standard output (spawned with `Stdio::piped()`).
pub fn stdout_lines(child: &mut Child) -> Lines {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Lines(rx)
}

impl Lines {
    /// The address in `sessions demo listening on http://ADDR/`; panics at `deadline`.
    pub fn demo_address(&self, deadline: Instant) -> SocketAddr {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("sessions demo listening on http://") {
                        return url.trim_end_matches('/').parse().expect("an address");
                    }
                }
                Err(e) => panic!("the demo did not print its address in time: {e}"),
            }
        }
    }
}

/// One running `sessions demo`, killed and reaped on drop (a stopped one included).
pub struct DemoInstance {
    pub child: Child,
    /// `http://ADDR`, once [`DemoInstance::wait_ready`] has read it.
    pub base: String,
    /// Its standard output until the address is read (behind a mutex: instances are
    /// shared between tasks).
    lines: Mutex<Option<Lines>>,
}

/// Spawns `sessions --config CONFIG demo` on a free loopback port in `cwd`, logging at
/// `log` (`SESSIONS_LOG`); [`DemoInstance::wait_ready`] waits for its address.
pub fn spawn_demo(config: &Path, cwd: &Path, log: &str) -> DemoInstance {
    let mut child = sessions()
        .arg("--config")
        .arg(config)
        .args(["demo", "--host", "127.0.0.1", "--port", "0"])
        .current_dir(cwd)
        .env("SESSIONS_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn `sessions demo`");
    let lines = stdout_lines(&mut child);
    DemoInstance {
        child,
        base: String::new(),
        lines: Mutex::new(Some(lines)),
    }
}

impl DemoInstance {
    /// Reads the address the demo prints; panics at `deadline`.
    pub fn wait_ready(&mut self, deadline: Instant) {
        let lines = self
            .lines
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .expect("wait_ready is called once");
        self.base = format!("http://{}", lines.demo_address(deadline));
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `signal` (`STOP`, `CONT`) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }
}

impl Drop for DemoInstance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
