//! The API socket and its connections: the socket is made where no other user can
//! reach it before it is finished, and every connection is served on a task of its own
//! under the server's bounds ([`ApiLimits`]).
//!
//! - **A connection limit.** At most [`ApiLimits::max_connections`] connections are
//!   served at once; one past it is closed as soon as it is accepted (counted as
//!   `api_connections_refused`), so idle clients cannot take every fd of the daemon.
//! - **A header timeout.** A connection that has not sent a whole request head within
//!   [`ApiLimits::header_timeout`] (from its opening, or from the end of its last
//!   answer) is closed (`api_header_timeouts`); the body must follow within
//!   [`ApiLimits::body_timeout`] (`api_body_timeouts`, answered 408). Either way the
//!   fds that came with the unfinished request are closed with it.
//! - **Slow calls run off the server's thread** (see the handlers in the parent
//!   module): one call waiting on the engine or the kernel stalls neither the accept
//!   loop nor other connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};

use super::fdpass::FdStream;

/// Mode of the API socket: owner and group may connect (and the credentials check then
/// admits root and the daemon's user only).
pub const SOCKET_MODE: u32 = 0o660;

/// Default of [`ApiLimits::header_timeout`].
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ApiLimits::body_timeout`].
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ApiLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 512;

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The API server's bounds and whom it serves.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// Longest wait for a whole request head, from the connection's opening or its last
    /// answer (default [`HEADER_TIMEOUT`]); then the connection is closed.
    pub header_timeout: Duration,
    /// Longest wait for a request's body once its head is in (default
    /// [`BODY_TIMEOUT`]); then the request is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// Most connections served at once (default [`MAX_CONNECTIONS`]); more are closed
    /// at once.
    pub max_connections: usize,
    /// The daemon's user: the one uid besides root whose connections are served
    /// (default: this process's effective uid).
    pub owner_uid: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            owner_uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// The API server's counters, shown under `Api` in `GET /stats`.
#[derive(Debug, Default)]
pub(super) struct ApiCounters {
    /// Connections being served now.
    pub(super) connections: AtomicU64,
    /// Connections closed at once: [`ApiLimits::max_connections`] were being served.
    pub(super) connections_refused: AtomicU64,
    /// Connections closed because no whole request head came in time.
    pub(super) header_timeouts: AtomicU64,
    /// Requests answered 408 because their body did not come in time.
    pub(super) body_timeouts: AtomicU64,
    /// Requests refused 403: the caller is neither root nor the daemon's user.
    pub(super) forbidden: AtomicU64,
    /// Sandboxes refused 400: more published ports, or a longer host port range, than
    /// the daemon takes.
    pub(super) port_limit: AtomicU64,
}

impl ApiCounters {
    /// Count one.
    pub(super) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// By name, as `GET /stats` shows them.
    pub(super) fn named(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("api_connections_refused", get(&self.connections_refused)),
            ("api_header_timeouts", get(&self.header_timeouts)),
            ("api_body_timeouts", get(&self.body_timeouts)),
            ("api_forbidden", get(&self.forbidden)),
            ("api_port_limit", get(&self.port_limit)),
        ]
    }
}

/// Bind the API socket at `socket` with its final mode ([`SOCKET_MODE`]) before anyone
/// else can reach it: it is bound inside a fresh directory only this user may enter
/// (mode 0700), given its mode there, and only then renamed into place. `staged` sees
/// the socket in its private directory (tests look at it there).
pub(super) fn bind_socket(
    socket: &Path,
    staged: impl FnOnce(&Path),
) -> io::Result<std::os::unix::net::UnixListener> {
    let name = socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = socket.with_file_name(format!(".{name}.{}.d", std::process::id()));
    // Left by a daemon of this PID that died here: nothing else makes this name.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let _cleanup = RemoveDir(private.clone());
    let tmp = private.join(&name);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    staged(&tmp);
    std::fs::rename(&tmp, socket)?;
    Ok(listener)
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Accept and serve connections on `listener` with `app` until `shutdown` completes;
/// then stop accepting, let requests in flight finish (a grace period), and return.
pub(super) async fn accept_loop<S>(
    listener: UnixListener,
    app: S,
    limits: &ApiLimits,
    counters: Arc<ApiCounters>,
    shutdown: impl Future,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let io = tokio::select! {
            r = listener.accept() => match r {
                Ok((io, _)) => io,
                // As axum's own listeners do: a failed accept (EMFILE, say) is retried
                // after a pause instead of ending the server.
                Err(e) => {
                    tracing::warn!(error = %e, "API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ApiCounters::bump(&counters.connections_refused);
            tracing::debug!(limit = max, "API: connection refused, too many open");
            drop(io);
            continue;
        };
        let stream = FdStream::new(io);
        let conn = serve_connection(stream, app.clone(), limits.header_timeout, stop_rx.clone());
        let counters = counters.clone();
        counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    ApiCounters::bump(&counters.header_timeouts);
                    tracing::debug!("API: connection closed, no request head in time");
                } else {
                    tracing::debug!(error = %e, "API: connection ended with an error");
                }
            }
            counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("API: connections still open after the shutdown grace period");
    }
}

/// Serve one connection: HTTP/1.1 with the header timeout, the peer's credentials and
/// fds as axum's connect info; a graceful close once `stop` turns true.
async fn serve_connection<S>(
    stream: FdStream,
    app: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let peer = stream.peer().clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        let mut app = app.clone();
        app.call(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
