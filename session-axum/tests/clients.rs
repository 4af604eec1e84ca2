//! Client tracking over real HTTP on loopback: with `track_clients`, a signed-in
//! session records the `User-Agent` and, when the server provides axum's
//! `ConnectInfo<SocketAddr>`, the peer address; without it, only the agent; with
//! tracking off, neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use backend_cache::MemoryStore;
use session_axum::{Session, SessionError, SessionLayer};
use session_core::SessionMeta;

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.login("ada", None).await?;
    Ok("in")
}

/// What the stored session recorded, as `principal|user agent|address|last seen?`.
async fn meta(session: Session) -> Result<String, SessionError> {
    let m: SessionMeta = session.meta().await?;
    let or = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    Ok(format!(
        "{}|{}|{}|{}",
        or(m.principal),
        or(m.user_agent),
        or(m.client_addr),
        m.last_seen.is_some()
    ))
}

fn app(track: bool) -> Router {
    let layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
        .secure(false)
        .track_clients(track)
        .build()
        .expect("layer");
    Router::new()
        .route("/login", post(login))
        .route("/meta", get(meta))
        .layer(layer)
}

/// Serves `app` on a loopback port, with or without the peer address.
async fn serve(app: Router, connect_info: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        } else {
            axum::serve(listener, app).await
        }
    });
    format!("http://{addr}")
}

/// Signs in with `agent`, then reads what the stored session recorded.
async fn recorded(base: &str, agent: &str) -> String {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .user_agent(agent)
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client");
    let res = c.post(format!("{base}/login")).send().await.expect("login");
    assert_eq!(res.status(), 200);
    let res = c.get(format!("{base}/meta")).send().await.expect("meta");
    assert_eq!(res.status(), 200);
    res.text().await.expect("body")
}

#[tokio::test]
async fn the_agent_and_the_peer_address_are_recorded() {
    let base = serve(app(true), true).await;
    let meta = recorded(&base, "probe/1.0").await;
    assert_eq!(meta, "ada|probe/1.0|127.0.0.1|true");
}

#[tokio::test]
async fn without_connect_info_only_the_agent_is_recorded() {
    let base = serve(app(true), false).await;
    let meta = recorded(&base, "probe/2.0").await;
    assert_eq!(meta, "ada|probe/2.0|-|true");
}

#[tokio::test]
async fn with_tracking_off_no_client_is_recorded() {
    let base = serve(app(false), true).await;
    let meta = recorded(&base, "probe/3.0").await;
    assert_eq!(meta, "ada|-|-|true");
}
