//! Client tracking over real HTTP on loopback: with `track_clients`, a signed-in
//! session records the `User-Agent` and the peer address (`peer_addr()`); with
//! tracking off, neither. The actix-web server runs on a thread of its own (its own
//! actix System); the test talks to it with a plain HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use backend_cache::MemoryStore;
use session_actix::{Session, SessionError, SessionMiddleware};

async fn login(session: Session) -> Result<HttpResponse, SessionError> {
    session.login("ada", None).await?;
    Ok(HttpResponse::Ok().body("in"))
}

async fn meta(session: Session) -> Result<HttpResponse, SessionError> {
    Ok(HttpResponse::Ok().json(session.meta().await?))
}

/// A running server, stopped on drop.
struct Server {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // `stop` resolves once the server has stopped; it needs no runtime of its own.
        block_on(handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Drives `f` to completion on this thread (a tiny executor for `ServerHandle::stop`).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn start(track: bool) -> Server {
    let middleware = SessionMiddleware::builder(Arc::new(MemoryStore::new()))
        .secure(false)
        .track_clients(track)
        .build()
        .expect("middleware");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(middleware.clone())
                    .route("/login", web::post().to(login))
                    .route("/meta", web::get().to(meta))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run();
            tx.send(server.handle()).expect("send the handle");
            let _ = server.await;
        });
    });
    let handle = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server started");
    Server {
        addr,
        handle,
        thread: Some(thread),
    }
}

/// One request on a new connection; the response's head and body.
fn request(addr: SocketAddr, head: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

/// Signs in as `agent`, then reads what the stored session recorded.
fn recorded(server: &Server, agent: &str) -> serde_json::Value {
    let (head, _) = request(
        server.addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: sessionid="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("login sets the cookie: {head}"))
        .to_owned();
    let (head, body) = request(
        server.addr,
        &format!(
            "GET /meta HTTP/1.1\r\nHost: t\r\nCookie: sessionid={cookie}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn the_agent_and_the_peer_address_are_recorded() {
    let server = start(true);
    let meta = recorded(&server, "probe/1.0");
    assert_eq!(meta["principal"], "ada", "{meta}");
    assert_eq!(meta["user_agent"], "probe/1.0", "{meta}");
    assert_eq!(meta["client_addr"], "127.0.0.1", "{meta}");
}

#[test]
fn with_tracking_off_no_client_is_recorded() {
    let server = start(false);
    let meta = recorded(&server, "probe/2.0");
    assert_eq!(meta["principal"], "ada", "{meta}");
    assert!(meta.get("user_agent").is_none(), "{meta}");
    assert!(meta.get("client_addr").is_none(), "{meta}");
}
