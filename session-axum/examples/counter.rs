//! A per-visitor counter kept in the session.
//!
//! ```text
//! cargo run -p session-axum --example counter
//! curl -c jar -b jar http://127.0.0.1:3000/   # 1 visit
//! curl -c jar -b jar http://127.0.0.1:3000/   # 2 visits
//! ```

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use backend_cache::MemoryStore;
use session_axum::{Session, SessionError, SessionLayer};

async fn counter(session: Session) -> Result<String, SessionError> {
    // `update` records the closure, so concurrent requests of one visitor each count.
    let n = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n} visit(s)\n"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layer = SessionLayer::builder(Arc::new(MemoryStore::new()))
        // This demo speaks plain HTTP; keep the default (Secure) in production.
        .secure(false)
        .build()?;
    let app = Router::new().route("/", get(counter)).layer(layer);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("counter on http://{addr}/");
    axum::serve(listener, app).await?;
    Ok(())
}
