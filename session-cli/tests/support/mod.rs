//! What the tests of the built `sessions` binary share: the binary without the
//! developer's `SESSION_*` variables, and the address a started `sessions demo` prints.

#![allow(dead_code)] // every test file uses a part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::mpsc;
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
