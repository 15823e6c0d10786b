//! The accept loop and per-connection limits (`[server]`): a header-read timeout, an
//! idle timeout, a cap on open connections and HTTP/2 stream limits, which the plain
//! `axum::serve` loop does not have. A slow or silent client is disconnected; at the
//! connection cap, the connection idle the longest is closed to admit a new one, so
//! `/healthz` and real requests still get through when idle sockets pile up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::ops::config::ServerLimits;

/// What one connection is doing, for idle detection and eviction.
struct Activity {
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last request start or response end.
    last: AtomicU64,
    epoch: Instant,
    /// Set to close the connection (nothing in flight).
    close: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long it has been idle, or `None` while a request is in flight.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(last))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }
}

/// One request in flight; dropped when its response body is done (or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The open connections, for the cap and eviction.
struct Connections {
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            live: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

    /// A slot for a new connection: at once below the cap; at the cap, after closing
    /// the connection idle the longest (or, if every one is busy, when one ends).
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let idlest = self
            .live
            .lock()
            .values()
            .filter_map(|activity| Some((activity.idle_for()?, activity.clone())))
            .max_by_key(|(idle, _)| *idle)
            .map(|(_, activity)| activity);
        if let Some(activity) = idlest {
            tracing::debug!("connection cap reached: closing the longest-idle connection");
            activity.close.notify_one();
        }
        self.slots.clone().acquire_owned().await.ok()
    }

    fn register(&self) -> (u64, Arc<Activity>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.live.lock().insert(id, activity.clone());
        (id, activity)
    }

    fn remove(&self, id: u64) {
        self.live.lock().remove(&id);
    }
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown`
/// resolves; then stops accepting, lets every connection finish its requests in flight
/// and returns when all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let builder = Arc::new(builder(&limits));
    let connections = Arc::new(Connections::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Accepted first, admitted second: a slot is only freed for a real newcomer.
        let permit = tokio::select! {
            permit = connections.admit() => permit,
            () = &mut shutdown => break,
        };
        let Some(permit) = permit else { break };
        let _ = accepted.0.set_nodelay(true);
        tasks.spawn(connection(
            accepted,
            router.clone(),
            builder.clone(),
            connections.clone(),
            limits.idle_timeout,
            stopped.clone(),
            permit,
        ));
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    stop.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams);
    builder
}

/// Serves one connection until the client closes it, it stays idle too long, the cap
/// evicts it, or shutdown (then requests in flight finish first).
async fn connection(
    (stream, peer): (TcpStream, std::net::SocketAddr),
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Connections>,
    idle_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let (id, activity) = connections.register();
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = tracked.begin();
        let router = router.clone();
        async move {
            // The caller's address, for handlers that limit per client (console sign-in).
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = activity.close.notified() => {}
        () = idle(&activity, idle_timeout) => {}
        () = stop_requested(&mut stopped) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
    connections.remove(id);
}

/// Resolves once shutdown starts (the guard `wait_for` returns is not `Send`: it is
/// dropped here, before the connection is drained).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves once the connection has had nothing in flight for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let wait = match activity.idle_for() {
            Some(idle) if idle >= timeout => return,
            Some(idle) => timeout - idle,
            None => timeout,
        };
        tokio::time::sleep(wait).await;
    }
}
