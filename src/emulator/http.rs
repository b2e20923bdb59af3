//! HTTP serving for the emulators' REST endpoints (the CA, the hub's registry and service API,
//! DPS's service API), on the shared accept loop ([`super::listener`]) over TLS, bounded so an
//! unauthenticated client can hold neither memory nor connections for long:
//!
//! - **authentication before the body**: each server may give a [`Gate`] that decides from the
//!   request line and headers alone (bearer token, SAS); a refused request is answered without
//!   reading a byte of its body, and an HTTP/1.1 connection is then closed;
//! - **body limits per route** ([`BodyLimits`]): a `Content-Length` over the route's limit is
//!   refused with 413 before reading; a body that grows past it while read is cut off with 413;
//!   the body is read into memory (the handlers parse whole JSON documents) within
//!   [`HttpLimits::body_timeout`], else 408;
//! - **header-read timeout** (HTTP/1.1): a request's head must arrive within
//!   [`HttpLimits::header_read_timeout`] of the connection becoming ready for it, which also
//!   closes keep-alive connections idle that long (slowloris clients included);
//! - **idle timeout** (both versions): a connection with no request in flight for
//!   [`HttpLimits::idle_timeout`] is shut down gracefully (HTTP/2: GOAWAY); a request in flight
//!   (a direct method waiting for its device, a throttled call being shaped) keeps it open;
//! - header size ([`HttpLimits::max_header_bytes`]) and HTTP/2 streams per connection
//!   ([`HttpLimits::max_streams`]) are capped; the number of connections is the listener's cap
//!   ([`HttpLimits::max_connections`]).
//!
//! HTTP/2 or HTTP/1.1 is chosen by ALPN, so no connection waits in version detection.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::listener::{Listener, ListenerCounters, Policy};

/// Timeouts and sizes of one HTTP server. The defaults suit the emulators' APIs; `fleetsim
/// emulate` takes the timeouts and the connection cap as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a request's head may take to arrive (HTTP/1.1), idle keep-alive time included.
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive once its head has.
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// The largest request head (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// Connections served at once (the listener's cap; more wait in the kernel's backlog).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_streams: 64,
            // Clients of an embedded run share pooled (mostly HTTP/2) connections, so a few
            // thousand is far above what they open and far below the descriptor limit.
            max_connections: 4096,
        }
    }
}

/// Decides from the request line and headers whether the request may go on; `Err` is the
/// answer (401 and the like), sent without reading the body.
pub type Gate = Arc<dyn Fn(&Parts) -> Result<(), Box<Response>> + Send + Sync>;

/// The largest body each route takes (method, path as sent).
pub type BodyLimits = Arc<dyn Fn(&Method, &str) -> usize + Send + Sync>;

/// What one HTTP server enforces.
#[derive(Clone)]
pub struct HttpOptions {
    pub limits: HttpLimits,
    pub gate: Option<Gate>,
    pub body_limits: BodyLimits,
}

/// The body limit of a server that sets none per route.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            limits: HttpLimits::default(),
            gate: None,
            body_limits: Arc::new(|_, _| DEFAULT_MAX_BODY),
        }
    }
}

impl HttpOptions {
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn with_body_limits(mut self, limits: BodyLimits) -> Self {
        self.body_limits = limits;
        self
    }

    /// The listener policy these limits ask for.
    pub fn policy(&self) -> Policy {
        Policy {
            max_connections: self.limits.max_connections,
            ..Policy::default()
        }
    }
}

/// Serves `router` on `listener` (TLS done by the listener) until `shutdown`: on shutdown, a
/// request in flight is finished and the connection closed.
pub async fn serve(
    listener: Listener,
    router: axum::Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let options = Arc::new(options);
    let counters = listener.counters();
    listener
        .serve(shutdown, move |tls, closing| {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let served = Served {
                router: router.clone(),
                options: options.clone(),
                counters: counters.clone(),
            };
            serve_connection(tls, h2, served, closing)
        })
        .await;
}

/// Serves one connection another server accepted and found to be HTTP (the hub's shared REST
/// and WebSocket port, [`super::shared_port`]), as [`serve`] serves each of its own.
pub(super) async fn serve_accepted<S>(
    io: S,
    h2: bool,
    router: axum::Router,
    options: Arc<HttpOptions>,
    counters: Arc<ListenerCounters>,
    closing: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = Served {
        router,
        options,
        counters,
    };
    serve_connection(io, h2, served, closing).await;
}

/// What each connection of one server is served with.
struct Served {
    router: axum::Router,
    options: Arc<HttpOptions>,
    counters: Arc<ListenerCounters>,
}

/// When a connection last had a request start or finish, and how many are in flight.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// How long the connection has been without a request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// A request in flight; dropping it (the response is ready, or the request was abandoned) ends it.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// HTTP/2 (`h2`) or HTTP/1.1 on one TLS connection, until the client closes it, it idles past
/// the limit, or `closing`.
async fn serve_connection<S>(io: S, h2: bool, served: Served, closing: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        router,
        options,
        counters,
    } = served;
    let limits = options.limits;
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        let inner = TowerToHyperService::new(router);
        hyper::service::service_fn(move |request| {
            let busy = activity.begin();
            let (inner, options, counters) = (inner.clone(), options.clone(), counters.clone());
            async move {
                // An HTTP/2 stream's handler runs in a task of its own, out of the listener's
                // sight: a panic is caught here for both versions, counted and answered 500.
                let response = AssertUnwindSafe(admit(request, &options, h2, &inner))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|payload| {
                        let message = crate::inject::panic_message(payload.as_ref());
                        tracing::error!(%message, "an HTTP handler panicked");
                        counters.count_panic();
                        status(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                    });
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idled = tokio::select! {
        _ = connection.as_mut() => return,
        _ = closing.cancelled() => false,
        _ = idle(&activity, limits.idle_timeout) => true,
    };
    connection.as_mut().graceful_shutdown();
    if idled {
        // Nothing is in flight, but a client that never finished its HTTP/2 preface would keep
        // a graceful shutdown waiting: it gets the header-read time, then the connection drops.
        let _ = tokio::time::timeout(limits.header_read_timeout, connection).await;
    } else {
        // Shutdown: the listener's drain bounds the wait.
        let _ = connection.await;
    }
}

/// Completes once the connection has had no request in flight for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

/// The gate, then the body within its route's limit and the body timeout, then the router.
async fn admit(
    request: Request<hyper::body::Incoming>,
    options: &HttpOptions,
    h2: bool,
    router: &TowerToHyperService<axum::Router>,
) -> Response {
    let (parts, body) = request.into_parts();
    // From here until the body is read, a refusal leaves the body unread: HTTP/1.1 must close.
    let refuse = |response: Response| closing(response, h2);
    if let Some(gate) = &options.gate
        && let Err(response) = gate(&parts)
    {
        return refuse(*response);
    }
    let limit = (options.body_limits)(&parts.method, parts.uri.path());
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse(too_large(limit));
    }
    let bytes =
        match tokio::time::timeout(options.limits.body_timeout, read_body(body, limit)).await {
            Err(_) => return refuse(status(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
            Ok(Err(BodyError::TooLarge)) => return refuse(too_large(limit)),
            Ok(Err(BodyError::Broken)) => {
                return refuse(status(StatusCode::BAD_REQUEST, "request body is broken"));
            }
            Ok(Ok(bytes)) => bytes,
        };
    let request = Request::from_parts(parts, Body::from(bytes));
    match hyper::service::Service::call(router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads a body of at most `limit` bytes.
async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = Body::new(body).into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn status(code: StatusCode, why: &str) -> Response {
    (code, format!("Error: {why}")).into_response()
}

fn too_large(limit: usize) -> Response {
    status(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body over {limit} bytes"),
    )
}

/// `response` with `Connection: close` on HTTP/1.1 (HTTP/2 streams end on their own).
fn closing(mut response: Response, h2: bool) -> Response {
    if !h2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
