//! The swarm's management port (2377/tcp): the server ([`serve`]) and the clients
//! (managers' Raft traffic, forwarded writes, [`call_app`]).
//!
//! A connection starts with a hello carrying a credential; the caller's [`Accept`]
//! function says what it allows ([`Access`]): the cluster secret makes a member (Raft,
//! forwarded writes and app messages), a join token only app messages. The Raft requests
//! go to the local manager's Raft, found in a [`RaftSlot`] the swarm service fills while
//! this node is a manager; app messages go to the caller's [`AppHandler`].
//!
//! Whatever a peer sends, the server never panics: a refused hello, a bad, oversized or
//! truncated frame, a request the credential does not allow, or a stalled connection is
//! dropped (the connection closes) and counted in [`RpcStats`]. The wire format is in the
//! `wire` module.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::error::ClusterError;
use super::state::Role;
use super::types::RaftHandle;
use super::wire::{
    self, Failure, FrameError, Hello, MAX_FRAME, MAX_HELLO, MAX_MEMBER_FRAME, Request, Response,
    Welcome,
};

/// How long a new connection has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay silent between requests (managers send heartbeats far
/// more often).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a frame may take once its first byte arrived.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// What a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The cluster secret: Raft, forwarded writes and app messages.
    Member,
    /// A join token for this role: app messages only.
    Join(Role),
}

/// A boxed future, as the [`AppHandler`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides what a hello's credential allows; `None` refuses it.
pub type Accept = Arc<dyn Fn(&str) -> Option<Access> + Send + Sync>;

/// Answers an app message (the swarm service's own requests) from a peer with this access.
pub type AppHandler = Arc<dyn Fn(Access, Vec<u8>) -> BoxFuture<Vec<u8>> + Send + Sync>;

/// The local manager's Raft, when this node is a manager: filled and emptied by the
/// owner of the [`super::Manager`] (or by [`super::Manager::start`] and
/// [`super::Manager::shutdown`] when its [`super::TcpNet`] carries the slot).
#[derive(Clone, Default)]
pub struct RaftSlot(Arc<RwLock<Option<RaftHandle>>>);

impl RaftSlot {
    /// An empty slot: Raft requests are answered "not a manager".
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `raft` in the slot, or empty it.
    pub fn set(&self, raft: Option<RaftHandle>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = raft;
    }

    /// The Raft in the slot.
    pub fn get(&self) -> Option<RaftHandle> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The server's counters (relaxed atomics; read them with [`RpcStats::counts`]).
#[derive(Debug, Default)]
pub struct RpcStats {
    connections: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    bad_hello: AtomicU64,
    oversized: AtomicU64,
    truncated: AtomicU64,
    malformed: AtomicU64,
    forbidden: AtomicU64,
    timeouts: AtomicU64,
}

/// A reading of [`RpcStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered.
    pub requests: u64,
    /// Hellos whose credential was refused.
    pub refused: u64,
    /// First frames that were no hello of ours (magic, version, encoding).
    pub bad_hello: u64,
    /// Frames announced over the bound.
    pub oversized: u64,
    /// Connections that ended or stalled inside a frame.
    pub truncated: u64,
    /// Frames that decode to no request.
    pub malformed: u64,
    /// Requests the credential does not allow.
    pub forbidden: u64,
    /// Connections closed for silence (no hello, or idle).
    pub timeouts: u64,
}

impl RpcStats {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn counts(&self) -> RpcCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RpcCounts {
            connections: r(&self.connections),
            requests: r(&self.requests),
            refused: r(&self.refused),
            bad_hello: r(&self.bad_hello),
            oversized: r(&self.oversized),
            truncated: r(&self.truncated),
            malformed: r(&self.malformed),
            forbidden: r(&self.forbidden),
            timeouts: r(&self.timeouts),
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a frame that could not be read (a clean close is no fault).
    fn frame_fault(&self, e: &FrameError) {
        match e {
            FrameError::Closed | FrameError::Io(_) => {}
            FrameError::Oversized(_) => Self::bump(&self.oversized),
            FrameError::Truncated => Self::bump(&self.truncated),
            FrameError::Idle => Self::bump(&self.timeouts),
            FrameError::Malformed(_) => Self::bump(&self.malformed),
        }
    }
}

/// What every connection of a server shares.
struct Ctx {
    accept: Accept,
    raft: RaftSlot,
    app: AppHandler,
    stats: Arc<RpcStats>,
}

/// Serve the management port on `listener` until this future is dropped (which closes
/// every connection it serves too). Each connection runs in its own task.
pub async fn serve(
    listener: TcpListener,
    accept: Accept,
    raft: RaftSlot,
    app: AppHandler,
    stats: Arc<RpcStats>,
) {
    let ctx = Arc::new(Ctx {
        accept,
        raft,
        app,
        stats,
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    RpcStats::bump(&ctx.stats.connections);
                    conns.spawn(connection(stream, ctx.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!("management port: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, ctx: Arc<Ctx>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let stats = &ctx.stats;
    let hello = match wire::read_frame(&mut rd, MAX_HELLO, HELLO_TIMEOUT, HELLO_TIMEOUT).await {
        Ok(body) => body,
        Err(e) => {
            // Whatever came first and was not a hello counts as a bad hello.
            match e {
                FrameError::Malformed(_) => RpcStats::bump(&stats.bad_hello),
                e => stats.frame_fault(&e),
            }
            return;
        }
    };
    let Ok(Hello { credential, .. }) = wire::decode_hello(&hello) else {
        RpcStats::bump(&stats.bad_hello);
        return;
    };
    let Some(access) = (ctx.accept)(&credential) else {
        RpcStats::bump(&stats.refused);
        let _ = wire::write_msg(&mut wr, &Welcome::Refused("credential refused".into())).await;
        return;
    };
    if wire::write_msg(&mut wr, &Welcome::Accepted).await.is_err() {
        return;
    }
    let max = match access {
        Access::Member => MAX_MEMBER_FRAME,
        Access::Join(_) => MAX_FRAME,
    };
    loop {
        let body = match wire::read_frame(&mut rd, max, IDLE_TIMEOUT, FRAME_TIMEOUT).await {
            Ok(b) => b,
            Err(e) => return stats.frame_fault(&e),
        };
        let req: Request = match wire::decode(&body) {
            Ok(r) => r,
            Err(e) => return stats.frame_fault(&e),
        };
        drop(body);
        if access != Access::Member && !req.is_app() {
            RpcStats::bump(&stats.forbidden);
            let _ = wire::write_msg(&mut wr, &Response::Failed(Failure::Forbidden)).await;
            return;
        }
        let answer = handle(&ctx, access, req).await;
        RpcStats::bump(&stats.requests);
        if wire::write_msg(&mut wr, &answer).await.is_err() {
            return;
        }
    }
}

async fn handle(ctx: &Ctx, access: Access, req: Request) -> Response {
    if let Request::App(body) = req {
        return Response::App((ctx.app)(access, body).await);
    }
    let Some(raft) = ctx.raft.get() else {
        return Response::Failed(Failure::NoRaft);
    };
    match req {
        Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
        Request::Vote(r) => Response::Vote(raft.vote(r).await),
        Request::InstallSnapshot(r) => Response::InstallSnapshot(raft.install_snapshot(r).await),
        Request::ClientWrite(c) => Response::ClientWrite(raft.client_write(c).await),
        Request::App(_) => Response::Failed(Failure::Forbidden),
    }
}

/// Why a call failed, kept apart so Raft's network can tell unreachable from failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection could be made (or the hello got no answer).
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server refused the credential.
    #[error("{addr} refused the credential: {reason}")]
    Denied {
        /// The address.
        addr: String,
        /// Its reason.
        reason: String,
    },
    /// The connection failed during the call, or its answer made no sense.
    #[error("call to {addr} failed: {reason}")]
    Broken {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server did not carry the request out.
    #[error("{addr}: {failure}")]
    Failed {
        /// The address.
        addr: String,
        /// Why.
        failure: Failure,
    },
}

impl From<CallError> for ClusterError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Denied { .. } => ClusterError::Denied(e.to_string()),
            e => ClusterError::Rpc(e.to_string()),
        }
    }
}

/// One client connection, after its hello.
pub(crate) struct Client {
    addr: String,
    stream: TcpStream,
}

impl Client {
    /// Connect to `addr` and present `credential`, all within `timeout`.
    pub(crate) async fn connect(
        addr: &str,
        credential: &str,
        timeout: Duration,
    ) -> Result<Client, CallError> {
        let connect_err = |reason: String| CallError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let handshake = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let hello = Hello {
                magic: wire::MAGIC,
                version: wire::VERSION,
                credential: credential.to_string(),
            };
            wire::write_msg(&mut stream, &hello)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            let body = wire::read_frame(&mut stream, MAX_HELLO, timeout, timeout)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            match wire::decode::<Welcome>(&body).map_err(|e| connect_err(e.to_string()))? {
                Welcome::Accepted => Ok(stream),
                Welcome::Refused(reason) => Err(CallError::Denied {
                    addr: addr.to_string(),
                    reason,
                }),
            }
        };
        let stream = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| connect_err(format!("no answer within {timeout:?}")))??;
        Ok(Client {
            addr: addr.to_string(),
            stream,
        })
    }

    /// Send `req` and read its answer, within `timeout`. After an error the connection
    /// is in an unknown state: drop it.
    pub(crate) async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let broken = |reason: String| CallError::Broken {
            addr: self.addr.clone(),
            reason,
        };
        let exchange = async {
            wire::write_msg(&mut self.stream, req)
                .await
                .map_err(|e| e.to_string())?;
            let body = wire::read_frame(&mut self.stream, MAX_MEMBER_FRAME, timeout, timeout)
                .await
                .map_err(|e| e.to_string())?;
            wire::decode::<Response>(&body).map_err(|e| e.to_string())
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| broken(format!("no answer within {timeout:?}")))?
            .map_err(broken)?;
        match answer {
            Response::Failed(failure) => Err(CallError::Failed {
                addr: self.addr.clone(),
                failure,
            }),
            r => Ok(r),
        }
    }
}

/// Send an app message to the management port at `addr` with `credential` and return the
/// answer; connecting, the hello and the exchange all within `timeout`.
pub async fn call_app(
    addr: std::net::SocketAddr,
    credential: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, ClusterError> {
    let addr = addr.to_string();
    let call = async {
        let mut c = Client::connect(&addr, credential, timeout).await?;
        match c.call(&Request::App(body), timeout).await? {
            Response::App(answer) => Ok(answer),
            r => Err(CallError::Broken {
                addr: addr.clone(),
                reason: format!("unexpected answer {}", kind(&r)),
            }),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(ClusterError::Rpc(format!(
            "call to {addr} failed: no answer within {timeout:?}"
        ))),
        Ok(r) => r.map_err(Into::into),
    }
}

/// A response's name, for errors.
pub(crate) fn kind(r: &Response) -> &'static str {
    match r {
        Response::AppendEntries(_) => "AppendEntries",
        Response::Vote(_) => "Vote",
        Response::InstallSnapshot(_) => "InstallSnapshot",
        Response::ClientWrite(_) => "ClientWrite",
        Response::App(_) => "App",
        Response::Failed(_) => "Failed",
    }
}
