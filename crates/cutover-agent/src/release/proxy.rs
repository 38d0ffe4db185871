//! The reverse proxy that holds an application's public port.
//!
//! It works per HTTP request, not per TCP connection: each request reads the
//! current upstream when it arrives, so a keep-alive client connection moves
//! to the new release at the next request after a switch, while requests
//! already in flight finish on the old one. (Splicing TCP connections with
//! `copy_bidirectional` would pin a keep-alive client to the old release until
//! that release is stopped, and then break its connection.) Each upstream
//! counts its in-flight requests, so the old release is stopped only once it
//! is drained.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// One release the proxy can send requests to.
#[derive(Debug)]
pub struct Upstream {
    pub release: String,
    pub port: u16,
    in_flight: AtomicUsize,
}

impl Upstream {
    pub fn new(release: &str, port: u16) -> Arc<Self> {
        Arc::new(Self {
            release: release.to_string(),
            port,
            in_flight: AtomicUsize::new(0),
        })
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
    /// Waits until no request is in flight on this upstream, or `timeout`.
    /// True when drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a request against its upstream until the response body is done.
struct InFlight(Arc<Upstream>);

impl InFlight {
    fn new(upstream: Arc<Upstream>) -> Self {
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(upstream)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted until it is fully sent.
struct Guarded {
    inner: Incoming,
    _guard: InFlight,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

struct Shared {
    current: RwLock<Option<Arc<Upstream>>>,
    stats: ProxyStats,
}

/// A bound proxy; dropping it stops accepting connections.
pub struct Proxy {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Binds the public address (for example `0.0.0.0:8000`).
    pub async fn bind(listen: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            current: RwLock::new(None),
            stats: ProxyStats::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            shared,
            local_addr,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends new requests to `upstream`; returns the one it replaced.
    pub fn switch(&self, upstream: Arc<Upstream>) -> Option<Arc<Upstream>> {
        let mut current = self.shared.current.write().expect("proxy lock");
        current.replace(upstream)
    }

    pub fn current(&self) -> Option<Arc<Upstream>> {
        self.shared.current.read().expect("proxy lock").clone()
    }

    pub fn requests(&self) -> u64 {
        self.shared.stats.requests.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.shared.stats.errors.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_client(stream, peer, shared.clone()));
    }
}

/// Serves one client connection. Its upstream connections are driven by the
/// same task rather than spawned: a request and its response then pass
/// between client and upstream without waking another task, which may sit
/// on another thread.
async fn serve_client(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (upstreams_tx, mut upstreams_rx) = tokio::sync::mpsc::unbounded_channel();
    let link = Arc::new(Link {
        current: std::sync::Mutex::new(None),
        upstreams: upstreams_tx,
    });
    let peer_ip =
        HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header");
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        let link = link.clone();
        let peer_ip = peer_ip.clone();
        async move { Ok::<_, Infallible>(forward(request, &shared, &link, peer, peer_ip).await) }
    });
    let mut serve = std::pin::pin!(
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
    );
    let mut upstreams: Vec<Pin<Box<UpstreamConnection>>> = Vec::new();
    std::future::poll_fn(|cx| {
        let done = serve.as_mut().poll(cx).is_ready();
        while let Poll::Ready(Some(connection)) = upstreams_rx.poll_recv(cx) {
            upstreams.push(Box::pin(connection));
        }
        // A finished (or failed) upstream connection is dropped; its sender
        // reports closed and the next request opens a new one.
        upstreams.retain_mut(|connection| connection.as_mut().poll(cx).is_pending());
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
}

/// Headers that belong to one connection, not to the request or response.
static HOP_BY_HOP: [HeaderName; 8] = [
    hyper::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// How often a request is retried when the upstream cannot take it: on a
/// refused connection (a release that just stopped or restarted) any request
/// without a body; on a connection lost mid-request only idempotent ones.
const RETRIES: u32 = 3;

/// The upstream connection of one client connection. HTTP/1 serves a
/// connection's requests one after another, so each client connection gets
/// its own upstream connection: no pool to contend on. It is reused while the
/// proxy points at the same release and replaced at the first request after
/// a switch. New connections go to the client connection's task to be driven.
struct Link {
    current: std::sync::Mutex<Option<(Arc<Upstream>, SendRequest<ProxyBody>)>>,
    upstreams: tokio::sync::mpsc::UnboundedSender<UpstreamConnection>,
}

type UpstreamConnection = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, ProxyBody>;

async fn connect(port: u16, link: &Link) -> Result<SendRequest<ProxyBody>, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to port {port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with port {port} failed: {e}"))?;
    if let Err(unsent) = link.upstreams.send(connection) {
        // The client connection is gone; drive the upstream on its own.
        tokio::spawn(unsent.0);
    }
    Ok(sender)
}

/// The upstream connection in use by one request; back to its link on drop.
struct Slot<'a> {
    link: &'a Link,
    current: Option<(Arc<Upstream>, SendRequest<ProxyBody>)>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.link.current.lock().expect("link lock") = self.current.take();
    }
}

async fn forward(
    request: Request<Incoming>,
    shared: &Shared,
    link: &Link,
    peer: SocketAddr,
    peer_ip: HeaderValue,
) -> Response<ProxyBody> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let forwarded_for = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(before) => HeaderValue::from_str(&format!("{before}, {}", peer.ip())).ok(),
        None => Some(peer_ip),
    };
    if let Some(value) = forwarded_for {
        parts.headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    parts
        .headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert(HeaderValue::from_static("http"));
    // Origin form: the upstream gets the path, the client's Host header stays.
    let uri: hyper::Uri = match parts.uri.path_and_query() {
        Some(pq) if parts.uri.authority().is_some() => hyper::Uri::from(pq.clone()),
        Some(_) => parts.uri.clone(),
        None => hyper::Uri::from_static("/"),
    };
    let bodyless = body.is_end_stream();
    let idempotent = matches!(
        parts.method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    );
    let mut body = Some(body.boxed());
    // Taken out for the request (requests on one connection come one at a
    // time) and put back by `Slot`'s drop, also when the client goes away.
    let mut slot = Slot {
        link,
        current: link.current.lock().expect("link lock").take(),
    };
    let link = &mut slot.current;
    let mut attempt = 0;
    loop {
        let Some(upstream) = shared.current.read().expect("proxy lock").clone() else {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no release is serving\n");
        };
        let reuse = matches!(link, Some((u, s)) if Arc::ptr_eq(u, &upstream) && !s.is_closed());
        if !reuse {
            *link = None;
            match connect(upstream.port, slot.link).await {
                Ok(sender) => *link = Some((upstream.clone(), sender)),
                Err(error) => {
                    if bodyless && attempt < RETRIES {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                        continue;
                    }
                    shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, release = %upstream.release, "upstream connection failed");
                    return plain(StatusCode::BAD_GATEWAY, "the release did not answer\n");
                }
            }
        }
        let sender = &mut link.as_mut().expect("connected above").1;
        if sender.ready().await.is_err() {
            *link = None;
            if bodyless && attempt < RETRIES {
                attempt += 1;
                continue;
            }
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            return plain(
                StatusCode::BAD_GATEWAY,
                "the release closed the connection\n",
            );
        }
        let guard = InFlight::new(upstream.clone());
        let mut outgoing = Request::new(
            body.take()
                .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed()),
        );
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri.clone();
        *outgoing.headers_mut() = if bodyless {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        match sender.send_request(outgoing).await {
            Ok(response) => {
                let (mut head, inner) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                let body = Guarded {
                    inner,
                    _guard: guard,
                };
                return Response::from_parts(head, body.boxed());
            }
            Err(error) => {
                drop(guard);
                *link = None;
                if bodyless && idempotent && attempt < RETRIES {
                    attempt += 1;
                    continue;
                }
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, release = %upstream.release, "upstream request failed");
                return plain(StatusCode::BAD_GATEWAY, "the release did not answer\n");
            }
        }
    }
}

pub fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
