//! Login and logout with the session, configured from `Sessions.toml`.
//!
//! ```text
//! cargo run -p session-axum --example login
//! curl -c jar -b jar http://127.0.0.1:3000/                 # hello, stranger
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/login/ada # new session key
//! curl -c jar -b jar http://127.0.0.1:3000/                 # hello, ada
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/logout    # cookie deleted
//! ```
//!
//! Without a `Sessions.toml` the `memory` engine is used; point `engine` at `file`,
//! `db`, `cache` or `cached_db` (with their crates registered) to keep sessions
//! elsewhere, or at `cookie` (with `[cookie] signing_keys`) to keep them in the cookie.

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use session_axum::{Session, SessionError, SessionLayer};
use session_core::{Config, EngineRegistry};

async fn home(session: Session) -> Result<String, SessionError> {
    let user: Option<String> = session.get("user").await?;
    Ok(format!(
        "hello, {}\n",
        user.as_deref().unwrap_or("stranger")
    ))
}

async fn login(session: Session, Path(user): Path<String>) -> Result<String, SessionError> {
    // A real app checks a password first. Then: a fresh key, against session fixation
    // (any key an attacker planted before the login is now worthless).
    session.cycle_key().await?;
    session.insert("user", &user).await?;
    Ok(format!("logged in as {user}\n"))
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    // Deletes the stored record and the key; the middleware deletes the cookie.
    session.flush().await?;
    Ok("logged out\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    session_axum::register(&registry);
    let config = Config::load(None)?;
    let layer = SessionLayer::builder_from_config(&config, &registry)
        .await?
        // This demo speaks plain HTTP; keep the default (Secure) in production.
        .secure(false)
        .build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .layer(layer);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("login demo on http://{addr}/");
    axum::serve(listener, app).await?;
    Ok(())
}
