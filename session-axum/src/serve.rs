//! [`serve`]: an axum app on a TCP listener with the limits a public server needs
//! (feature `serve`).
//!
//! `axum::serve` has no timeouts and no connection limit: a client that sends half its
//! headers holds a connection (and a file descriptor) for as long as it likes, a few
//! hundred of them exhaust the descriptors, and a graceful shutdown waits for them
//! forever. [`serve`] puts the well-kept pieces that close those holes together:
//!
//! - **header read timeout**: hyper's HTTP/1 connection with
//!   `header_read_timeout` (and [`hyper_util::rt::TokioTimer`]); it also bounds how long
//!   an idle keep-alive connection waits for its next request;
//! - **request and body timeouts**: `tower_http`'s [`TimeoutLayer`] (408 when the
//!   handler, session save included, takes longer) and [`RequestBodyTimeoutLayer`]
//!   (a body that stops arriving fails the request);
//! - **a connection limit**: a [`tokio::sync::Semaphore`]; a connection is accepted
//!   only when a permit is free, so excess clients wait in the kernel's backlog instead
//!   of costing a descriptor;
//! - **the peer address**: every request carries axum's `ConnectInfo<SocketAddr>`
//!   extension (as with `into_make_service_with_connect_info`), which handlers can
//!   extract and the session layer records with `[middleware] track_clients`;
//! - **graceful shutdown with a deadline**: [`hyper_util::server::graceful`] lets
//!   in-flight requests finish; connections still open at the deadline are dropped.
//!
//! The loop that ties them is own code (about sixty lines): no well-kept crate offers
//! an accept loop with a permit per connection and a shutdown deadline. It serves
//! HTTP/1.1 only: `hyper_util`'s automatic HTTP/1-or-2 detection reads the first bytes
//! of a connection with no timeout (a client that connects and sends nothing would
//! hold it forever), and browsers speak HTTP/2 only over TLS, which a reverse proxy in
//! front terminates. Protocol upgrades (WebSocket) are not served.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use session_axum::serve::{ServeOptions, serve, shutdown_signal};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, app, ServeOptions::default(), shutdown_signal()).await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_layer::Layer;

/// The limits [`serve`] applies. `ServeOptions::default()` gives the defaults below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept (default 10 s).
    pub header_read_timeout: Duration,
    /// How long a request may take from its headers to its response, body included
    /// (default 30 s); a slower request gets 408 Request Timeout.
    pub request_timeout: Duration,
    /// At most this many connections are open at once (default 1024; at least 1).
    /// Further clients wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// After the shutdown signal, how long open connections get to finish before they
    /// are dropped (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the usual shutdown signal for
/// [`serve`]. If a handler cannot be installed, that signal is ignored (logged).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Serves `app` on `listener` with the limits in `options` until `shutdown` resolves,
/// then lets open connections finish for up to `options.shutdown_timeout` and drops
/// the rest. Returns once every connection is closed.
///
/// Errors accepting a connection (a client that reset it, descriptors exhausted) are
/// logged and the loop goes on (after a 100 ms pause for the latter); the function
/// itself does not fail today, the `io::Result` leaves room for it.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    // `with_state` builds every route once, as `axum::serve` does (through
    // `into_make_service`): a router called as it is builds each handler's route, and
    // applies every layer to it, again on every request.
    let app = app
        .layer(RequestBodyTimeoutLayer::new(options.request_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .with_state(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 100 ms");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Every request of the connection carries its peer address, as axum's
        // `into_make_service_with_connect_info` does: `ConnectInfo<SocketAddr>`.
        let app = Extension(ConnectInfo(peer)).layer(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    let open = graceful.count();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.shutdown_timeout) => {
            tracing::warn!(
                open_at_signal = open,
                deadline = ?options.shutdown_timeout,
                "connections still open at the shutdown deadline are dropped"
            );
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Accept errors that concern one connection only (as `axum::serve` classifies them).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::get;

    use super::*;

    /// A layer that wraps nothing and counts how often it is applied.
    #[derive(Clone)]
    struct Applied(Arc<AtomicUsize>);

    impl<S> Layer<S> for Applied {
        type Service = S;
        fn layer(&self, inner: S) -> S {
            self.0.fetch_add(1, Ordering::Relaxed);
            inner
        }
    }

    #[tokio::test]
    async fn layers_are_applied_once_not_per_request() {
        let applied = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(Applied(applied.clone()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}/", listener.local_addr().expect("its address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, ServeOptions::default(), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let get = || async {
            client
                .get(&url)
                .send()
                .await
                .expect("an answer")
                .text()
                .await
                .expect("a body")
        };
        assert_eq!(get().await, "ok");
        let after_first = applied.load(Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(get().await, "ok");
        }
        assert_eq!(
            applied.load(Ordering::Relaxed),
            after_first,
            "the layer was applied again for later requests"
        );
        stop.send(()).expect("the server is running");
        server
            .await
            .expect("the server task")
            .expect("the server stopped cleanly");
    }
}
