//! Login, logout and a visit counter with the session on actix-web, configured from
//! `Sessions.toml` (the same file session-axum's apps read).
//!
//! ```text
//! cargo run -p session-actix --example login
//! curl -c jar -b jar http://127.0.0.1:3000/                 # hello, stranger (1 visit)
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/login/ada # new session key
//! curl -c jar -b jar http://127.0.0.1:3000/                 # hello, ada (2 visits)
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/logout    # cookie deleted
//! ```
//!
//! Without a `Sessions.toml` the `memory` engine is used; point `engine` at `file`
//! or `cache` (registered here) or, with their crates registered, `db` or `cached_db`, or
//! at `cookie` (with `[cookie] signing_keys`) to keep sessions in the cookie.

use std::time::Duration;

use actix_web::{App, HttpServer, web};
use session_actix::{Session, SessionError, SessionMiddleware};
use session_core::{Config, EngineRegistry};

async fn home(session: Session) -> Result<String, SessionError> {
    let user: Option<String> = session.get("user").await?;
    // `update` records the closure, so concurrent requests of one visitor each count.
    let n = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!(
        "hello, {} ({n} visit(s))\n",
        user.as_deref().unwrap_or("stranger")
    ))
}

async fn login(session: Session, user: web::Path<String>) -> Result<String, SessionError> {
    // A real app checks a password first. Then: a fresh key, against session fixation.
    session.cycle_key().await?;
    session.insert("user", &*user).await?;
    Ok(format!("logged in as {user}\n"))
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    // Deletes the stored record and the key; the middleware deletes the cookie.
    session.flush().await?;
    Ok("logged out\n")
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_file::register(&registry);
    session_actix::register(&registry);
    let config = Config::load(None)?;
    let sessions = SessionMiddleware::builder_from_config(&config, &registry)
        .await?
        // This demo speaks plain HTTP; keep the default (Secure) in production.
        .secure(false)
        .build()?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    println!("login demo on http://{addr}/");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/", web::get().to(home))
            .route("/login/{user}", web::post().to(login))
            .route("/logout", web::post().to(logout))
    })
    // The limits a public server needs: slow clients, idle connections, shutdown.
    .client_request_timeout(Duration::from_secs(10))
    .keep_alive(Duration::from_secs(10))
    .max_connections(1024)
    .shutdown_timeout(10)
    .bind(&addr)?
    .run()
    .await?;
    Ok(())
}
