//! A loopback TCP proxy that injects network faults between a client and a server:
//! added latency, dropped connections, and a blackhole (bytes accepted, held, never
//! answered until the fault heals), switched at run time.
//!
//! Used by the drills that put a fault between an app and its store (the
//! `network_faults` test of session-cli, the late-write tests of cached_db). It is own
//! code, bounded and loopback-only: `toxiproxy` or `tc netem` are not available to an
//! unprivileged test, and what is needed (pause, delay, reset) is a hundred lines of
//! tokio.
//!
//! ```no_run
//! # async fn demo() {
//! use integration_tests::fault_proxy::{FaultProxy, Mode};
//! let proxy = FaultProxy::start(6379).await; // in front of a local Redis
//! let url = format!("redis://127.0.0.1:{}/", proxy.port());
//! proxy.set(Mode::Blackhole); // held from now on ...
//! proxy.set(Mode::Pass); // ... and delivered in order
//! # let _ = url; }
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward as is.
    Pass,
    /// Forward every chunk after this delay.
    Delay(Duration),
    /// Reset every open connection; accept new ones and reset them at once.
    Refuse,
    /// Accept, hold every byte (TCP backpressure), answer nothing; delivered in order
    /// once the mode changes, as retransmission would.
    Blackhole,
}

/// A loopback TCP proxy to `upstream` whose behaviour [`Mode`] switches at run time.
pub struct FaultProxy {
    port: u16,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections end with Refuse.
        let _ = self.mode.send(Mode::Refuse);
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listen");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode, rx) = watch::channel(Mode::Pass);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(connection(client, upstream, rx));
            }
        });
        FaultProxy { port, mode, accept }
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches the behaviour for every open and future connection.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Ends a connection with a reset rather than a FIN.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn connection(client: TcpStream, upstream: u16, mut rx: watch::Receiver<Mode>) {
    if *rx.borrow() == Mode::Refuse {
        return reset(client);
    }
    let server = match tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", upstream)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return reset(client),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pump(&mut cr, &mut sw, rx.clone());
    let down = pump(&mut sr, &mut cw, rx.clone());
    let refused = rx.wait_for(|m| *m == Mode::Refuse);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = refused => {}
    }
    if let (Ok(c), Ok(s)) = (cr.reunite(cw), sr.reunite(sw)) {
        reset(c);
        reset(s);
    }
}

/// Copies `from` to `to` chunk by chunk. A reader stamps each chunk with its arrival
/// and queues it (at most 64 chunks, then TCP backpressure); the writer holds it while
/// blackholed and delivers it no sooner than its arrival plus the delay, so latency is
/// added to every chunk without serialising them.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Mode>,
) {
    let (tx, mut queue) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((arrived, chunk)) = queue.recv().await {
            let mode = match rx.wait_for(|m| *m != Mode::Blackhole).await {
                Ok(m) => *m,
                Err(_) => return,
            };
            match mode {
                Mode::Refuse => return,
                Mode::Delay(d) => tokio::time::sleep_until((arrived + d).into()).await,
                Mode::Pass | Mode::Blackhole => {}
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The write side drains what was read before the reader saw the end.
    let (_, ()) = tokio::join!(read, write);
}
