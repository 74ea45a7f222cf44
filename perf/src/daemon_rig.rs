//! The daemon in this process, driven through its real API, for the scenarios that
//! measure networks and sandboxes made by the daemon (`bridge-api`, `daemon-tcp`).
//!
//! - [`in_private_netns_dir`] runs a scenario on a thread with its own mount namespace
//!   and a private tmpfs on `/run/netns`: the daemon's `tapnet-*` namespaces (and the
//!   kernel baseline's) are invisible to every other process, so neither another
//!   daemon's start-up sweep nor ours can touch the other's namespaces, and if this
//!   process dies, the mount namespace dies with it and takes every named network
//!   namespace along.
//! - [`DaemonRig`] opens a daemon on a fresh state directory, serves its API on a thread,
//!   and on drop removes every sandbox and user network through the daemon (falling
//!   back to deleting the namespaces its records name), stops it and deletes the state.
//! - [`Api`] is a small HTTP/1.1 client of the API socket (hyper), one connection per
//!   request as the `tapnet` CLI makes them.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tapnet_api::SandboxInspect;
use tapnet_ctl::daemon::chain;
use tapnet_ctl::daemon::plumbing::{OsPlumbing, Plumbing, netns};
use tapnet_ctl::daemon::server;
use tapnet_ctl::daemon::{Daemon, DaemonConfig, SOCKET_NAME};
use tapnet_engine::Engine;
use tapnet_engine::EngineConfig;
use tapnet_engine::hostnet::HostNetConfig;
use tapnet_engine::sys::netns::{NETNS_RUN_DIR, NetNs};

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `f` on a new thread that has its own mount namespace, with a fresh tmpfs on
/// `/run/netns` (see the module documentation). Threads `f` starts inherit the mount
/// namespace. Whatever namespace is still mounted there when `f` returns is deleted and
/// reported on stderr.
pub(crate) fn in_private_netns_dir<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("perf-private-ns".into())
            .spawn_scoped(s, move || -> Result<T> {
                unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
                // Nothing mounted here propagates back to the machine's mount namespace.
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    None::<&str>,
                )
                .context("making / a slave mount")?;
                fs::create_dir_all(NETNS_RUN_DIR)
                    .with_context(|| format!("creating {NETNS_RUN_DIR}"))?;
                mount(
                    Some("tmpfs"),
                    NETNS_RUN_DIR,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some("mode=755,size=1m"),
                )
                .with_context(|| format!("mounting a private tmpfs on {NETNS_RUN_DIR}"))?;
                let r = f();
                let left = remove_all_netns();
                if !left.is_empty() {
                    eprintln!(
                        "warning: {} namespace(s) were left behind and are now deleted: {}",
                        left.len(),
                        left.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                let _ = umount2(NETNS_RUN_DIR, MntFlags::MNT_DETACH);
                r
            })
            .context("starting the scenario thread")?;
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Names of the namespaces mounted under /run/netns (in this thread's mount namespace).
pub(crate) fn list_netns() -> Vec<String> {
    fs::read_dir(NETNS_RUN_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Delete every namespace under /run/netns; returns their names.
fn remove_all_netns() -> Vec<String> {
    let names = list_netns();
    for n in &names {
        // The sandbox's resolv.conf directory goes with its namespace.
        let _ = fs::remove_dir_all(Path::new(netns::NETNS_ETC_DIR).join(n));
        match NetNs::open(n) {
            Ok(ns) => {
                let _ = ns.delete();
            }
            Err(_) => {
                let p = Path::new(NETNS_RUN_DIR).join(n);
                let _ = umount2(&p, MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&p);
            }
        }
    }
    names
}

/// An HTTP client of the daemon's socket.
pub(crate) struct Api {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new(socket: &Path) -> Result<Api> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Api {
            socket: socket.to_path_buf(),
            rt,
        })
    }

    /// One request on a new connection; a non-2xx answer is an error with the daemon's
    /// message.
    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let what = format!("{method} {path}");
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .with_context(|| format!("connecting to {}", self.socket.display()))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let conn = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, "tapnet");
            if body.is_some() {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            drop(sender);
            let _ = conn.await;
            if !status.is_success() {
                let msg = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                bail!("daemon answered {status}: {msg}");
            }
            Ok(bytes)
        };
        self.rt
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, fut).await })
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what)
    }

    /// `POST` a JSON body and decode the JSON answer.
    pub(crate) fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let bytes = self.request(Method::POST, path, Some(body))?;
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer to {path}"))
    }

    /// `GET` and decode.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let bytes = self.request(Method::GET, path, None)?;
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer to {path}"))
    }

    /// `DELETE`.
    pub(crate) fn delete(&self, path: &str) -> Result<()> {
        self.request(Method::DELETE, path, None).map(drop)
    }
}

/// A daemon in this process on a throwaway state directory, serving its API.
pub(crate) struct DaemonRig {
    daemon: Arc<Daemon>,
    plumbing: Arc<OsPlumbing>,
    api: Api,
    state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl DaemonRig {
    /// The state directory of a run: beside the daemon's default one (`/run/tapnet` as
    /// root), so that the database sits on the file system a real daemon would use.
    fn state_dir_for(tag: &str) -> PathBuf {
        let def = DaemonConfig::default_state_dir();
        let name = format!(
            "{}-perf-{}-{tag}",
            def.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "tapnet".into()),
            std::process::id()
        );
        def.parent()
            .map(|p| p.join(&name))
            .unwrap_or_else(|| std::env::temp_dir().join(&name))
    }

    /// Open a daemon on a fresh state directory and serve its API. Must run inside
    /// [`in_private_netns_dir`].
    pub(crate) fn start(tag: &str, engine: EngineConfig) -> Result<DaemonRig> {
        let state_dir = Self::state_dir_for(tag);
        if state_dir.exists() {
            fs::remove_dir_all(&state_dir)
                .with_context(|| format!("removing the stale {}", state_dir.display()))?;
        }
        let cfg = DaemonConfig {
            state_dir: state_dir.clone(),
        };
        let plumbing = match OsPlumbing::start(engine, HostNetConfig::default()) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = fs::remove_dir_all(&state_dir);
                bail!("starting the datapath: {}", chain(&e));
            }
        };
        let daemon = match Daemon::open(&cfg, plumbing.clone()) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                plumbing.shutdown();
                let _ = fs::remove_dir_all(&state_dir);
                bail!(
                    "opening the daemon on {}: {}",
                    state_dir.display(),
                    chain(&e)
                );
            }
        };
        let socket = state_dir.join(SOCKET_NAME);
        let mut rig = DaemonRig {
            daemon: daemon.clone(),
            plumbing,
            api: Api::new(&socket)?,
            state_dir,
            stop: None,
            server: None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sock = socket.clone();
        rig.server = Some(
            std::thread::Builder::new()
                .name("perf-daemon-api".into())
                .spawn(move || server::serve(&sock, daemon, rx))
                .context("starting the API thread")?,
        );
        rig.stop = Some(tx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if rig.server.as_ref().is_some_and(|h| h.is_finished()) {
                let r = rig.server.take().map(|h| h.join());
                bail!("the API server stopped at once: {r:?}");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the API is not listening on {} after 10 s",
                    socket.display()
                );
            }
            crate::sys::check_interrupt()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(rig)
    }

    pub(crate) fn api(&self) -> &Api {
        &self.api
    }

    pub(crate) fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The daemon's datapath.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        self.plumbing.engine()
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `POST /networks/create` of a bridge network on `subnet`; returns its id.
    pub(crate) fn create_network(&self, name: &str, subnet: &str) -> Result<String> {
        let v: Value = self.api.post(
            "/networks/create",
            &json!({"Name": name, "Driver": "bridge", "IPAM": {"Config": [{"Subnet": subnet}]}}),
        )?;
        v["Id"]
            .as_str()
            .map(String::from)
            .context("network create answer without Id")
    }

    /// `POST /sandboxes` with one endpoint on `network`.
    pub(crate) fn create_sandbox(&self, name: &str, network: &str) -> Result<SandboxInspect> {
        self.api.post(
            "/sandboxes",
            &json!({"Name": name, "Networks": [{"Network": network}]}),
        )
    }

    /// Everything the daemon holds: sandboxes first (through the daemon, else their
    /// namespaces straight from the records), then user networks.
    fn teardown(&self) {
        for (sb, _) in self.daemon.sandboxes() {
            if let Err(e) = self.daemon.remove_sandbox(&sb.id) {
                eprintln!(
                    "warning: the daemon could not remove sandbox {} ({e}); deleting namespace {}",
                    sb.name, sb.netns
                );
                let _ = netns::remove_netns(&sb.netns);
            }
        }
        // Whatever the daemon still records (a removal that failed after its commit).
        for (sb, _) in self.daemon.sandboxes() {
            let _ = netns::remove_netns(&sb.netns);
        }
        for n in self.daemon.networks() {
            if !n.predefined {
                if let Err(e) = self.daemon.remove_network(&n.id) {
                    eprintln!("warning: could not remove network {}: {e}", n.name);
                }
            }
        }
    }
}

impl Drop for DaemonRig {
    fn drop(&mut self) {
        self.teardown();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: the API server failed: {e}"),
                Err(_) => eprintln!("warning: the API server thread panicked"),
            }
        }
        self.plumbing.shutdown();
        if let Err(e) = fs::remove_dir_all(&self.state_dir) {
            eprintln!(
                "warning: could not remove the state directory {}: {e}",
                self.state_dir.display()
            );
        }
    }
}

/// The namespace of a sandbox, from the `NetnsPath` the API gives.
pub(crate) fn sandbox_netns(sb: &SandboxInspect) -> Result<NetNs> {
    let name = Path::new(&sb.netns_path)
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("sandbox {} has no netns path", sb.name))?;
    NetNs::open(name).with_context(|| format!("opening the namespace of sandbox {}", sb.name))
}

/// Kernel memory that namespaces, TAPs and veths cost: `SUnreclaim` (unreclaimable
/// slab) and `Percpu` of /proc/meminfo, in MiB (machine-wide, so only a rough figure on
/// a shared machine).
pub(crate) fn kernel_mem_mib() -> (f64, f64) {
    let s = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k) && l[k.len()..].starts_with(':'))
            .and_then(|l| {
                l[k.len() + 1..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v / 1024.0)
            .unwrap_or(0.0)
    };
    (get("SUnreclaim"), get("Percpu"))
}
