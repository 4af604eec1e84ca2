//! The per-request middleware: hand the handler a lazy session, then apply Django's
//! response rules (`SessionMiddleware.process_response`) once the handler is done.
//!
//! The rules themselves (which cookie to read, when to save, set or delete the cookie,
//! `Vary: Cookie`, the touch policy) are session-http's, the same for every framework:
//! see [`session_http::flow`]. This service only moves the request's `Cookie` headers
//! in, the session into the request's extensions, and the resulting `Set-Cookie` and
//! `Vary` out (and the peer address, from axum's [`ConnectInfo<SocketAddr>`] extension
//! when the server provides it, for `[middleware] track_clients`); a failed save answers with the layer's error response (see
//! [`crate::error`] and [`crate::SessionLayerBuilder::error_response`]), and a
//! response carrying [`crate::error::DiscardSession`] (every [`crate::SessionError`]
//! response does) stores nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use tower_service::Service;
use tracing::Instrument;

use crate::error::DiscardSession;
use crate::layer::Shared;

/// The service [`crate::SessionLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        SessionService { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared.clone();
        // The peer address, where the server recorded it (`axum::serve` with
        // `into_make_service_with_connect_info`, or `session_axum::serve`).
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let request = shared.start_from_request(req.headers(), peer);
        // Built only when a subscriber wants DEBUG: a disabled span still costs a
        // `log` check per request where `tracing`'s `log` feature is on.
        let span = if tracing::enabled!(kind: tracing::metadata::Kind::SPAN, tracing::Level::DEBUG)
        {
            tracing::debug_span!(
                "session_request",
                method = %req.method(),
                path = req.uri().path(),
                session = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        if !span.is_disabled()
            && let Some(k) = request.session().original_key()
        {
            span.record("session", k.fingerprint());
        }
        req.extensions_mut().insert(request.session().clone());
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = async move {
            let res = inner.call(req).await?;
            let (mut parts, body) = res.into_parts();
            let discard = parts.extensions.remove::<DiscardSession>().is_some();
            match shared.finish(&request, parts.status, discard).await {
                Ok(out) => {
                    out.apply(&mut parts.headers);
                    Ok(Response::from_parts(parts, Body::new(body)))
                }
                Err(e) => Ok((shared.error_response.0)(&e)),
            }
        };
        Box::pin(fut.instrument(span))
    }
}
