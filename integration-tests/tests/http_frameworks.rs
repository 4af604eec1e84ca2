//! The HTTP behaviour cases (`integration_tests::http_cases`) on every framework
//! adapter: one small driver per framework serves the shared test app behind its
//! session middleware, built from the case's `Sessions.toml`, on a loopback port, and
//! the same table of requests and expected responses runs against each.

use std::sync::Arc;

use backend_cache::MemoryStore;
use integration_tests::http_cases::{HttpDriver, Method, Served, TestApp, run_http_cases};
use session_core::{Config, EngineRegistry, Error, SessionStore};

fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new())
}

fn report(failures: &[String]) -> String {
    format!("{} failure(s):\n{}", failures.len(), failures.join("\n"))
}

// ---------------------------------------------------------------------------------
// axum (session-axum)
// ---------------------------------------------------------------------------------

mod axum_driver {
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderValue, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::any;
    use session_axum::{Session, SessionError, SessionLayer};

    async fn handle(
        State(app): State<Arc<TestApp>>,
        method: axum::http::Method,
        uri: Uri,
        session: Session,
    ) -> Response {
        let m = if method == axum::http::Method::POST {
            Method::Post
        } else {
            Method::Get
        };
        match app.handle(m, uri.path(), &session).await {
            Ok(r) => {
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut res = (status, r.body).into_response();
                if let Some(v) = r.vary {
                    res.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static(v));
                }
                res
            }
            Err(e) => SessionError(e).into_response(),
        }
    }

    /// session-axum; `strip_vary` breaks one rule on purpose (see the last test).
    pub struct Axum {
        pub strip_vary: bool,
    }

    impl HttpDriver for Axum {
        fn name(&self) -> &'static str {
            "axum"
        }

        async fn serve(
            &self,
            config: &Config,
            registry: &EngineRegistry,
            app: Arc<TestApp>,
        ) -> session_core::Result<Served> {
            let layer = SessionLayer::from_config(config, registry).await?;
            let mut router = Router::new()
                .route("/{*path}", any(handle))
                .with_state(app)
                .layer(layer);
            if self.strip_vary {
                router = router.layer(axum::middleware::map_response(
                    |mut res: Response| async move {
                        res.headers_mut().remove(header::VARY);
                        res
                    },
                ));
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::backend("axum", e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::backend("axum", e))?;
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            Ok(Served {
                base: format!("http://{addr}"),
                stop: Box::new(move || task.abort()),
            })
        }
    }
}

// ---------------------------------------------------------------------------------
// actix-web (session-actix)
// ---------------------------------------------------------------------------------

mod actix_driver {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::http::header;
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
    use session_actix::{Session, SessionError, SessionMiddleware};

    async fn handle(app: web::Data<TestApp>, req: HttpRequest, session: Session) -> HttpResponse {
        let m = if req.method() == actix_web::http::Method::POST {
            Method::Post
        } else {
            Method::Get
        };
        match app.handle(m, req.path(), &session).await {
            Ok(r) => {
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut res = HttpResponse::build(status);
                if let Some(v) = r.vary {
                    res.insert_header((header::VARY, v));
                }
                res.body(r.body)
            }
            Err(e) => SessionError(e).error_response(),
        }
    }

    /// session-actix.
    pub struct Actix;

    impl HttpDriver for Actix {
        fn name(&self) -> &'static str {
            "actix-web"
        }

        async fn serve(
            &self,
            config: &Config,
            registry: &EngineRegistry,
            app: Arc<TestApp>,
        ) -> session_core::Result<Served> {
            let sessions = SessionMiddleware::from_config(config, registry).await?;
            let data = web::Data::from(app);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .wrap(sessions.clone())
                    .default_service(web::to(handle))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .map_err(|e| Error::backend("actix-web", e))?;
            let addr = server.addrs()[0];
            let server = server.run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            Ok(Served {
                base: format!("http://{addr}"),
                stop: Box::new(move || {
                    actix_web::rt::spawn(async move { handle.stop(false).await });
                }),
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_case_holds_on_axum() {
    let failures = run_http_cases(&axum_driver::Axum { strip_vary: false }, memory).await;
    assert!(failures.is_empty(), "{}", report(&failures));
}

#[actix_web::test]
async fn every_http_case_holds_on_actix_web() {
    let failures = run_http_cases(&actix_driver::Actix, memory).await;
    assert!(failures.is_empty(), "{}", report(&failures));
}

/// The table can fail: a middleware that drops `Vary` is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_fails_the_table() {
    let failures = run_http_cases(&axum_driver::Axum { strip_vary: true }, memory).await;
    assert!(
        failures.iter().any(|f| f.contains("Vary: Cookie missing")),
        "{}",
        report(&failures)
    );
}
