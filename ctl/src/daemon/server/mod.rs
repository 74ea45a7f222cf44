//! The HTTP API on `<state-dir>/tapnet.sock`: Docker's network endpoints with Docker's
//! statuses, headers and error bodies, so the docker CLI and SDKs can drive tapnet, plus
//! tapnet's `/sandboxes` and `/stats`, and Docker's swarm and node endpoints and
//! `GET /info` over the daemon's [`SwarmControl`] (`swarm_routes`).
//!
//! axum serves it on a current-thread tokio runtime confined to the calling thread, under
//! the bounds of [`ApiLimits`] (connections, header and body timeouts; see `listen`).
//! Only root and the daemon's own user are served (`SO_PEERCRED`; others get 403). The
//! handlers call the [`Daemon`] ([`calls`]) on blocking threads beside the runtime, so a
//! slow call stalls neither `_ping` nor `version` nor other connections (calls into the
//! core still wait for its state lock one after another); its errors become Docker's
//! statuses and bodies in [`error`]. Every route also answers under a version prefix (`/v1.47/networks`), which is checked against
//! [`API_VERSION`] and [`MIN_API_VERSION`] as Docker checks it, then stripped before
//! routing.

mod calls;
mod cni_routes;
mod docker_plugin;
mod error;
pub mod fdpass;
pub mod filters;
mod http;
#[cfg(test)]
mod limit_tests;
mod listen;
mod state;
mod swarm;
mod swarm_routes;
#[cfg(test)]
mod swarm_tests;
#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use listen::{ApiLimits, BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, SOCKET_MODE};
pub use swarm::{NOT_A_MANAGER, SwarmControl};

#[cfg(test)]
pub(crate) use error::ipam_status;
use http::{ApiResult, error_response, json, param, path_id, query, read_json};
use listen::ApiCounters;
use state::AppState;

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, SERVER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use self::filters::{LIST_FILTERS, NetworkFilters, PRUNE_FILTERS};
use super::core::Daemon;
use tapnet_api::{
    API_VERSION, ComponentVersion, MIN_API_VERSION, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, PlatformVersion, SandboxAdoptRequest, SandboxCreateRequest,
    VersionResponse,
};

/// How long a shutdown waits for calls still running in the core.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest request body read (axum's default limit).
const MAX_BODY: usize = 2 << 20;

/// Serve the API on `socket` until `shutdown` completes, with the default
/// [`ApiLimits`]; see [`serve_with`].
pub fn serve(socket: &FsPath, daemon: Arc<Daemon>, shutdown: impl Future) -> io::Result<()> {
    serve_with(socket, daemon, ApiLimits::default(), shutdown)
}

/// Serve the API on `socket` until `shutdown` completes, with the default
/// [`ApiLimits`], its swarm and node routes calling `swarm`; see [`serve_with`].
pub fn serve_with_swarm(
    socket: &FsPath,
    daemon: Arc<Daemon>,
    swarm: Arc<dyn SwarmControl>,
    shutdown: impl Future,
) -> io::Result<()> {
    serve_full(
        socket,
        daemon,
        Services {
            swarm: Some(swarm),
            docker_plugin: None,
        },
        ApiLimits::default(),
        shutdown,
    )
}

/// What the daemon serves besides its API.
#[derive(Default)]
pub struct Services {
    /// The swarm service, for the swarm and node routes.
    pub swarm: Option<Arc<dyn SwarmControl>>,
    /// Where to serve Docker's network and IPAM plugin protocols (`docker_plugin`).
    pub docker_plugin: Option<std::path::PathBuf>,
}

/// Serve the API on `socket` and `services` until `shutdown` completes, with the
/// default [`ApiLimits`]; see [`serve_with`].
pub fn serve_daemon(
    socket: &FsPath,
    daemon: Arc<Daemon>,
    services: Services,
    shutdown: impl Future,
) -> io::Result<()> {
    serve_full(socket, daemon, services, ApiLimits::default(), shutdown)
}

/// Most threads running calls into the core at once; more calls wait for one.
const MAX_CALL_THREADS: usize = 64;

/// Serve the API on `socket` until `shutdown` completes, on a current-thread runtime
/// built here (the calling thread is the control thread), under `limits`. Calls into
/// the core run on a pool of blocking threads beside it, so a slow one stalls no other
/// client. A stale socket file left by a dead daemon is removed first; a live one is
/// an error (`AddrInUse`). The socket gets mode [`SOCKET_MODE`] before it appears (see
/// `listen::bind_socket`) and is removed on return. Without a swarm, the swarm and node
/// routes answer 503.
pub fn serve_with(
    socket: &FsPath,
    daemon: Arc<Daemon>,
    limits: ApiLimits,
    shutdown: impl Future,
) -> io::Result<()> {
    serve_full(socket, daemon, Services::default(), limits, shutdown)
}

/// [`serve_with`], with or without a swarm.
fn serve_full(
    socket: &FsPath,
    daemon: Arc<Daemon>,
    services: Services,
    limits: ApiLimits,
    shutdown: impl Future,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("tapnet-api")
        .max_blocking_threads(MAX_CALL_THREADS)
        .build()?;
    let r = rt.block_on(serve_on(socket, daemon, services, limits, shutdown));
    // A call still running in the core is not waited for past the grace period.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    r
}

async fn serve_on(
    socket: &FsPath,
    daemon: Arc<Daemon>,
    services: Services,
    limits: ApiLimits,
    shutdown: impl Future,
) -> io::Result<()> {
    let swarm = services.swarm;
    remove_stale_socket(socket)?;
    let listener = listen::bind_socket(socket, |_| {})?;
    // From here on the socket file is ours: remove it however serving ends.
    let _guard = RemoveOnDrop(socket);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tracing::info!(socket = %socket.display(), "API listening");
    let plugin = match &services.docker_plugin {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            remove_stale_socket(path)?;
            let l = listen::bind_socket(path, |_| {})?;
            l.set_nonblocking(true)?;
            tracing::info!(socket = %path.display(), "Docker network and IPAM plugin listening");
            Some((tokio::net::UnixListener::from_std(l)?, RemoveOnDrop(path)))
        }
        None => None,
    };
    let counters = Arc::new(ApiCounters::default());
    let state = AppState {
        daemon,
        swarm,
        version: Arc::new(version_response()),
        counters: counters.clone(),
        owner_uid: limits.owner_uid,
        body_timeout: limits.body_timeout,
    };
    let plugin_state = state.clone();
    // The version prefix is stripped before routing, so the middleware wraps the router
    // as a service rather than being added with `Router::layer` (which runs after it).
    let app = tower::Layer::layer(
        &axum::middleware::from_fn_with_state(state.clone(), api_version),
        router(state),
    );
    let Some((plugin, _plugin_guard)) = plugin else {
        listen::accept_loop(listener, app, &limits, counters, shutdown).await;
        return Ok(());
    };
    // Both sockets stop with `shutdown`.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plugin_app = docker_plugin::router(plugin_state);
    tokio::join!(
        async {
            shutdown.await;
            let _ = stop.send(true);
        },
        listen::accept_loop(
            listener,
            app,
            &limits,
            counters.clone(),
            wait(stopped.clone())
        ),
        listen::accept_loop(plugin, plugin_app, &limits, counters, wait(stopped)),
    );
    Ok(())
}

struct RemoveOnDrop<'a>(&'a FsPath);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Remove a socket file no one listens on; refuse to touch a live socket or a file that
/// is not a socket.
fn remove_stale_socket(socket: &FsPath) -> io::Result<()> {
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another daemon is already serving {}; stop it first",
                        socket.display()
                    ),
                ));
            }
            std::fs::remove_file(socket)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", socket.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/version", get(version))
        .route("/networks", get(network_list))
        // A network may be called `create` or `prune`: GET and DELETE reach it, as in
        // Docker, whose router tries `/networks/{id}` for them.
        .route(
            "/networks/create",
            post(network_create)
                .get(|s: State<AppState>, u: Uri| network_inspect_named(s, "create", u))
                .delete(|s: State<AppState>| network_remove_named(s, "create")),
        )
        .route(
            "/networks/prune",
            post(network_prune)
                .get(|s: State<AppState>, u: Uri| network_inspect_named(s, "prune", u))
                .delete(|s: State<AppState>| network_remove_named(s, "prune")),
        )
        .route(
            "/networks/{id}",
            get(network_inspect).delete(network_remove),
        )
        .route("/networks/{id}/connect", post(network_connect))
        .route("/networks/{id}/disconnect", post(network_disconnect))
        .route("/sandboxes", get(sandbox_list).post(sandbox_create))
        .route(
            "/sandboxes/{id}",
            get(sandbox_inspect).delete(sandbox_remove),
        )
        .route(
            "/sandboxes/{id}/interfaces",
            get(sandbox_interfaces).post(sandbox_adopt),
        )
        .route("/stats", get(stats))
        .merge(swarm_routes::routes())
        .merge(cni_routes::routes())
        .fallback(page_not_found)
        .method_not_allowed_fallback(page_not_found)
        .with_state(state)
}

fn version_response() -> VersionResponse {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let git_commit = option_env!("TAPNET_GIT_COMMIT")
        .unwrap_or("unknown")
        .to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .to_string();
    let kernel_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let details = [
        ("ApiVersion", API_VERSION),
        ("MinAPIVersion", MIN_API_VERSION),
        ("GitCommit", &git_commit),
        ("GoVersion", "n/a"),
        ("Os", "linux"),
        ("Arch", &arch),
        ("KernelVersion", &kernel_version),
        ("Experimental", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    VersionResponse {
        platform: PlatformVersion {
            name: "tapnet".into(),
        },
        components: vec![ComponentVersion {
            name: "Engine".into(),
            version: version.clone(),
            details,
        }],
        version,
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit,
        go_version: "n/a".into(),
        os: "linux".into(),
        arch,
        kernel_version,
    }
}

// ---- middleware ---------------------------------------------------------------------

/// Check the caller, read the body in time, strip and check a `/v{major}.{minor}`
/// prefix, log, and add the headers Docker puts on every response.
async fn api_version(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<fdpass::Peer>>()
        .map(|p| p.0.clone());
    let mut resp = match admit(&s, peer.as_ref()) {
        Err(e) => error_response(e),
        Ok(()) => match read_body(&s, req).await {
            Err(resp) => resp,
            Ok(mut req) => match strip_version(&mut req) {
                Ok(()) => next.run(req).await,
                Err(e) => error_response(e),
            },
        },
    };
    // Fds ride with one request: what its handler did not take is closed now, not left
    // for the next request on this connection.
    if let Some(n) = peer.map(|p| p.drop_fds()).filter(|n| *n > 0) {
        tracing::debug!(%method, %path, fds = n, "API: closed fds the request did not use");
    }
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "API request");
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    h.insert(
        HeaderName::from_static("ostype"),
        HeaderValue::from_static("linux"),
    );
    h.insert(
        SERVER,
        HeaderValue::from_static(concat!("tapnet/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

/// Docker's socket model: whoever may use the socket may drive the daemon, so only root
/// and the daemon's own user may (the socket's mode already keeps others out; this
/// holds when a group or a changed mode lets them connect).
fn admit(s: &AppState, peer: Option<&fdpass::Peer>) -> Result<(), ApiError> {
    let uid = peer.map_or(u32::MAX, |p| p.uid);
    if uid == 0 || uid == s.owner_uid {
        return Ok(());
    }
    listen::ApiCounters::bump(&s.counters.forbidden);
    let who = if uid == u32::MAX {
        "a caller whose uid is unknown".to_string()
    } else {
        format!("uid {uid}")
    };
    let allowed = match s.owner_uid {
        0 => "only root may".to_string(),
        u => format!("only root and uid {u} may"),
    };
    Err(ApiError::new(
        403,
        format!("permission denied: {who} may not use this daemon ({allowed})"),
    ))
}

/// Read the whole body within the body timeout: a request not completed in time is
/// answered 408 and its connection closed (with the fds it sent).
async fn read_body(s: &AppState, req: Request) -> Result<Request, Response> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(s.body_timeout, limited.collect()).await {
        Ok(Ok(b)) => Ok(Request::from_parts(
            parts,
            axum::body::Body::from(b.to_bytes()),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error_response(ApiError::bad_request(format!(
                "reading request body: larger than {MAX_BODY} bytes"
            ))))
        }
        Ok(Err(e)) => Err(error_response(ApiError::bad_request(format!(
            "reading request body: {e}"
        )))),
        Err(_) => {
            listen::ApiCounters::bump(&s.counters.body_timeouts);
            let mut resp = error_response(ApiError::new(
                408,
                format!(
                    "the request body did not arrive within {:?}",
                    s.body_timeout
                ),
            ));
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
            Err(resp)
        }
    }
}

/// `/v1.47/networks?x` becomes `/networks?x`. A prefix that is not a version (`/vx/…`)
/// is left alone and ends in a 404, as in Docker.
fn strip_version(req: &mut Request) -> Result<(), ApiError> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(());
    };
    let Some(slash) = rest.find('/') else {
        return Ok(());
    };
    let (ver, tail) = rest.split_at(slash);
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ok(());
    }
    check_version(ver)?;
    let new = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        new.parse()
            .map_err(|_| ApiError::bad_request(format!("invalid request path {path:?}")))?,
    );
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| ApiError::bad_request(format!("invalid request path {path:?}")))?;
    Ok(())
}

/// Docker's version middleware: too old or too new is a 400 with Docker's words.
fn check_version(ver: &str) -> Result<(), ApiError> {
    if compare_versions(ver, MIN_API_VERSION).is_lt() {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is \
             {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    if compare_versions(ver, API_VERSION).is_gt() {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    Ok(())
}

/// Compare dotted versions numerically (`1.9` < `1.10`), as moby's `versions.compare`.
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parse(a), parse(b));
    for i in 0..a.len().max(b.len()) {
        let o = a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0));
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

// ---- helpers ------------------------------------------------------------------------

fn filters(uri: &Uri, accepted: &[&str]) -> Result<NetworkFilters, ApiError> {
    let q = query(uri)?;
    NetworkFilters::parse(
        param(&q, "filters").unwrap_or(""),
        accepted,
        SystemTime::now(),
    )
}

// ---- handlers -----------------------------------------------------------------------

async fn page_not_found() -> ApiError {
    ApiError::not_found("page not found")
}

/// `GET|HEAD /_ping`: `OK` and the headers the docker CLI negotiates with (`Swarm`
/// tells it whether this node is a manager).
async fn ping(State(s): State<AppState>) -> Response {
    let swarm = HeaderValue::from_str(&swarm_routes::ping_status(&s).await)
        .unwrap_or(HeaderValue::from_static("inactive"));
    (
        StatusCode::OK,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, must-revalidate"),
            ),
            (PRAGMA, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("docker-experimental"),
                HeaderValue::from_static("false"),
            ),
            (HeaderName::from_static("swarm"), swarm),
        ],
        "OK",
    )
        .into_response()
}

async fn version(State(s): State<AppState>) -> Response {
    json(StatusCode::OK, &*s.version)
}

async fn network_list(State(s): State<AppState>, uri: Uri) -> ApiResult {
    let f = filters(&uri, LIST_FILTERS)?;
    let nets = s.call(move |d| calls::networks(d, &f)).await?;
    Ok(json(StatusCode::OK, &nets))
}

/// `GET /networks/{id}`; `verbose` is accepted (tapnet has no swarm services to add) and
/// `scope` must be the network's, as in Docker.
async fn network_inspect(
    s: State<AppState>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> ApiResult {
    network_inspect_named(s, &path_id(id)?, uri).await
}

async fn network_inspect_named(State(s): State<AppState>, id: &str, uri: Uri) -> ApiResult {
    let q = query(&uri)?;
    let net = {
        let id = id.to_string();
        s.call(move |d| calls::network_inspect(d, &id)).await?
    };
    if let Some(scope) = param(&q, "scope").filter(|v| !v.is_empty()) {
        if scope != net.scope {
            return Err(ApiError::not_found(format!("network {id} not found")));
        }
    }
    Ok(json(StatusCode::OK, &net))
}

async fn network_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: NetworkCreateRequest = read_json(&headers, body)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_request("network name must not be empty"));
    }
    let created = s.call(move |d| calls::network_create(d, req)).await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn network_remove(s: State<AppState>, id: Result<Path<String>, PathRejection>) -> ApiResult {
    network_remove_named(s, &path_id(id)?).await
}

async fn network_remove_named(State(s): State<AppState>, id: &str) -> ApiResult {
    let id = id.to_string();
    s.call(move |d| calls::network_remove(d, &id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn network_connect(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let req: NetworkConnectRequest = read_json(&headers, body)?;
    s.call(move |d| calls::network_connect(d, &id, req)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn network_disconnect(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let req: NetworkDisconnectRequest = read_json(&headers, body)?;
    s.call(move |d| calls::network_disconnect(d, &id, req))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn network_prune(State(s): State<AppState>, uri: Uri) -> ApiResult {
    let f = filters(&uri, PRUNE_FILTERS)?;
    let pruned = s.call(move |d| calls::network_prune(d, &f)).await?;
    Ok(json(StatusCode::OK, &pruned))
}

async fn sandbox_list(State(s): State<AppState>) -> ApiResult {
    let all = s.call(calls::sandboxes).await?;
    Ok(json(StatusCode::OK, &all))
}

async fn sandbox_create(
    State(s): State<AppState>,
    peer: Option<Extension<ConnectInfo<fdpass::Peer>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: SandboxCreateRequest = read_json(&headers, body)?;
    check_ports(&s, &req)?;
    let created = if req.rootless {
        let pid = peer_pid(peer.as_ref())?;
        s.call(move |d| calls::sandbox_create_rootless(d, req, pid))
            .await?
    } else {
        s.call(move |d| calls::sandbox_create(d, req)).await?
    };
    Ok(json(StatusCode::CREATED, &created))
}

/// Refuse published ports past the daemon's bounds (400), before any work is done.
fn check_ports(s: &AppState, req: &SandboxCreateRequest) -> Result<(), ApiError> {
    let ports = calls::mappings(&req.port_bindings)?;
    crate::daemon::core::check_port_bounds(&ports).map_err(|e| {
        listen::ApiCounters::bump(&s.counters.port_limit);
        ApiError::from(e)
    })
}

/// The PID of the process on the other end, which a rootless sandbox is recorded with.
fn peer_pid(peer: Option<&Extension<ConnectInfo<fdpass::Peer>>>) -> Result<u32, ApiError> {
    match peer.map(|p| p.0.0.pid) {
        Some(pid) if pid != 0 => Ok(pid),
        _ => Err(ApiError::bad_request(
            "rootless sandboxes need the caller's process id, which this connection does not \
             carry (is the client in another PID namespace?)",
        )),
    }
}

/// `GET /sandboxes/{id}/interfaces`: what a rootless sandbox's process must create.
async fn sandbox_interfaces(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let ifaces = s.call(move |d| calls::sandbox_interfaces(d, &id)).await?;
    Ok(json(StatusCode::OK, &ifaces))
}

/// `POST /sandboxes/{id}/interfaces`: the TAP fds ride on the request (`SCM_RIGHTS`).
async fn sandbox_adopt(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    peer: Option<Extension<ConnectInfo<fdpass::Peer>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    // The fds first: they belong to this request whatever becomes of it.
    let fds = peer.as_ref().map(|p| p.0.0.take_fds());
    let id = path_id(id)?;
    let req: SandboxAdoptRequest = read_json(&headers, body)?;
    let pid = peer_pid(peer.as_ref())?;
    let uid = peer.as_ref().map_or(u32::MAX, |p| p.0.0.uid);
    let fds = fds
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or_default();
    let adopted = s
        .call(move |d| calls::sandbox_adopt(d, &id, req.interfaces, fds, pid, uid))
        .await?;
    Ok(json(StatusCode::OK, &adopted))
}

async fn sandbox_inspect(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let sb = s.call(move |d| calls::sandbox_inspect(d, &id)).await?;
    Ok(json(StatusCode::OK, &sb))
}

async fn sandbox_remove(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    s.call(move |d| calls::sandbox_remove(d, &id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn stats(State(s): State<AppState>) -> ApiResult {
    let mut stats = s.call(|d| Ok(calls::stats(d))).await?;
    stats.api = tapnet_api::ApiStatsEntry {
        connections: s
            .counters
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        counters: s
            .counters
            .named()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    Ok(json(StatusCode::OK, &stats))
}
