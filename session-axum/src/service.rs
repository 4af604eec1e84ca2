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
use std::task::{Context, Poll, ready};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::response::Parts;
use axum::http::{Request, Response};
use pin_project_lite::pin_project;
use session_http::{RequestSession, ResponseChanges};
use tower_service::Service;

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
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The peer address, where the server recorded it (`axum::serve` with
        // `into_make_service_with_connect_info`, or `session_axum::serve`).
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let request = self.shared.start_from_request(req.headers(), peer);
        // Built only when a subscriber wants DEBUG: a disabled span still costs a
        // `log` check per request where `tracing`'s `log` feature is on.
        let span = if tracing::enabled!(kind: tracing::metadata::Kind::SPAN, tracing::Level::DEBUG)
        {
            let span = tracing::debug_span!(
                "session_request",
                method = %req.method(),
                path = req.uri().path(),
                session = tracing::field::Empty,
            );
            if !span.is_disabled()
                && let Some(k) = request.session().original_key()
            {
                span.record("session", k.fingerprint());
            }
            Some(span)
        } else {
            None
        };
        req.extensions_mut().insert(request.session().clone());
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = {
            let _entered = span.as_ref().map(tracing::Span::enter);
            inner.call(req)
        };
        ResponseFuture {
            state: State::Handler {
                fut,
                request: Some(request),
                shared: self.shared.clone(),
            },
            span,
        }
    }
}

/// What the rules do once the handler answered, when they need a store call (a save,
/// a touch): owned, so it can be boxed. It gives the response's changes, or the layer's
/// error response for a failed save; the response waits beside it, out of the box.
type Finishing = Pin<Box<dyn Future<Output = Result<ResponseChanges, Response<Body>>> + Send>>;

pin_project! {
    /// The future of [`SessionService`]: the handler's future, then the response rules.
    ///
    /// Its own type rather than a boxed `async` block: a request that never touches its
    /// session answers when the handler does, with no allocation of its own
    /// ([`SessionRules::finish_now`](session_http::SessionRules::finish_now)); only a
    /// request whose session must be saved or touched boxes the rest of the work.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        span: Option<tracing::Span>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Handler {
            #[pin]
            fut: F,
            request: Option<RequestSession>,
            shared: Arc<Shared>,
        },
        Finishing {
            fut: Finishing,
            response: Option<(Parts, Body)>,
        },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        loop {
            match this.state.as_mut().project() {
                StateProj::Handler {
                    fut,
                    request,
                    shared,
                } => {
                    let res = ready!(fut.poll(cx))?;
                    let (mut parts, body) = res.into_parts();
                    let discard = parts.extensions.remove::<DiscardSession>().is_some();
                    let body = Body::new(body);
                    let request = request
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    if let Some(out) = shared.finish_now(&request, parts.status) {
                        out.apply(&mut parts.headers);
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    let shared = shared.clone();
                    let status = parts.status;
                    let fut: Finishing = Box::pin(async move {
                        shared
                            .finish(&request, status, discard)
                            .await
                            .map_err(|e| (shared.error_response.0)(&e))
                    });
                    this.state.set(State::Finishing {
                        fut,
                        response: Some((parts, body)),
                    });
                }
                StateProj::Finishing { fut, response } => {
                    let changes = ready!(fut.as_mut().poll(cx));
                    let (mut parts, body) = response
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    return Poll::Ready(Ok(match changes {
                        Ok(out) => {
                            out.apply(&mut parts.headers);
                            Response::from_parts(parts, body)
                        }
                        Err(error_response) => error_response,
                    }));
                }
            }
        }
    }
}
