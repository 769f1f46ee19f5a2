//! Accepting HTTP connections: the bounds a slow or greedy client meets before any handler runs.
//!
//! - a connection with no request in flight gets `limits.header_read_timeout_ms` for the next
//!   request's headers (a client trickling its headers, or an idle keep-alive connection, is
//!   closed). Counted here rather than by hyper's own header timer, which with a timer set also
//!   cut connections whose request body was answered before it was read (an early 413);
//! - a request body may not stall: each piece must arrive within `limits.body_read_timeout_ms`
//!   of the previous one, or reading it fails (the handler answers 408 and the connection closes);
//! - one client IP holds at most `rate_limits.connections_per_ip` connections at once (more are
//!   closed on accept), when rate limits are on.
//!
//! It never interprets requests: routing and Matrix errors are `api`'s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What `serve` enforces, read from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// None: no cap.
    pub connections_per_ip: Option<usize>,
}

/// Open connections per client IP.
#[derive(Default)]
struct OpenConnections {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct ConnectionSlot {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl OpenConnections {
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: Option<usize>) -> Option<ConnectionSlot> {
        let mut by_ip = self.by_ip.lock().expect("connections lock");
        let count = by_ip.entry(ip).or_insert(0);
        if cap.is_some_and(|cap| *count >= cap) {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { open: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut by_ip = self.open.by_ip.lock().expect("connections lock");
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish their
/// requests (graceful shutdown) and returns when they have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(OpenConnections::default());
    let (stop, stopped) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Finished connections' tasks are collected as we go, so the set stays small.
        while connections.try_join_next().is_some() {}
        let Some(slot) = open.admit(peer.ip(), limits.connections_per_ip) else {
            tracing::debug!(ip = %peer.ip(), "too many connections from one address; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _slot = slot;
            let busy = Busy::default();
            let service_busy = busy.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let guard = service_busy.start();
                let mut request = request.map(|body| Body::new(IdleTimeoutBody::new(body, limits.body_read_timeout)));
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move {
                    let response = tower_service::Service::call(&mut router, request).await.unwrap_or_else(|never| match never {});
                    // Busy until the response body has been written (the body is dropped then).
                    Ok::<Response, Infallible>(response.map(|body| Body::new(GuardedBody { inner: body, _guard: guard })))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                // No request within the header timeout while nothing is in flight: a client
                // trickling its headers, or an idle keep-alive connection. Closed.
                _ = busy.idle_for(limits.header_read_timeout) => return,
                _ = stopped.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Requests of one connection in flight (from their headers until their response is written),
/// and a signal on every change.
#[derive(Clone, Default)]
struct Busy {
    state: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

struct BusyGuard(Busy);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.state.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.state.1.notify_waiters();
    }
}

impl Busy {
    fn start(&self) -> BusyGuard {
        self.state.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.state.1.notify_waiters();
        BusyGuard(self.clone())
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.state.1.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                if tokio::time::timeout(timeout, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

/// A response body that keeps its connection counted busy until it is written.
struct GuardedBody {
    inner: Body,
    _guard: BusyGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when no data arrives for `timeout`: a client that declares a large
/// body and then sends nothing cannot hold its connection and its handler forever.
struct IdleTimeoutBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeoutBody {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> IdleTimeoutBody {
        IdleTimeoutBody { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

/// The body stalled.
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stopped arriving")
    }
}

impl std::error::Error for BodyTimeout {}

impl http_body::Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body read failed because the body stalled (see [`IdleTimeoutBody`]).
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<BodyTimeout>() {
            return true;
        }
        current = error.source();
    }
    false
}
