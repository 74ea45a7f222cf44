//! The API server over a real Unix socket, against the real core on the in-memory
//! plumbing: every route, its statuses, headers and error bodies, versioned paths and bad
//! input; then the docker CLI itself, when it is installed.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::{Value, json};

use super::{ApiLimits, Services, SwarmControl, fdpass, serve, serve_full};
use crate::daemon::plumbing::MemoryPlumbing;
use crate::daemon::{Daemon, DaemonConfig};

/// A server on a fresh socket in its own directory, stopped and cleaned up on drop.
pub(super) struct Server {
    pub(super) dir: PathBuf,
    pub(super) socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

pub(super) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tapnet-api-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real core over the in-memory plumbing, its state in `dir`.
fn memory_daemon(dir: &Path) -> Arc<Daemon> {
    let cfg = DaemonConfig {
        state_dir: dir.join("state"),
    };
    Arc::new(Daemon::open(&cfg, Arc::new(MemoryPlumbing::new())).unwrap())
}

impl Server {
    fn start() -> Server {
        Server::start_in(temp_dir("srv"))
    }

    /// A server of the in-memory core with `swarm`.
    pub(super) fn start_swarm(swarm: Option<Arc<dyn SwarmControl>>) -> Server {
        let dir = temp_dir("swarm");
        let daemon = memory_daemon(&dir);
        Server::start_full(dir, daemon, swarm, ApiLimits::default())
    }

    fn start_in(dir: PathBuf) -> Server {
        let daemon = memory_daemon(&dir);
        Server::start_with(dir, daemon, ApiLimits::default())
    }

    /// A server of `daemon` with `limits`, in `dir`.
    pub(super) fn start_with(dir: PathBuf, daemon: Arc<Daemon>, limits: ApiLimits) -> Server {
        Server::start_full(dir, daemon, None, limits)
    }

    fn start_full(
        dir: PathBuf,
        daemon: Arc<Daemon>,
        swarm: Option<Arc<dyn SwarmControl>>,
        limits: ApiLimits,
    ) -> Server {
        let socket = dir.join("tapnet.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sock = socket.clone();
        let thread = std::thread::Builder::new()
            .name("tapnet-api-test".into())
            .spawn(move || {
                let services = Services {
                    swarm,
                    docker_plugin: None,
                };
                serve_full(&sock, daemon, services, limits, rx)
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "server did not come up");
            assert!(!thread.is_finished(), "server exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            dir,
            socket,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }

    /// One request on a fresh connection; returns (status, lower-cased headers, body).
    pub(super) fn raw(&self, req: &str) -> (u16, Vec<(String, String)>, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    pub(super) fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.call_ct(method, path, body, "application/json")
    }

    fn call_ct(&self, method: &str, path: &str, body: Option<&str>, ct: &str) -> (u16, String) {
        let req = match body {
            Some(b) => format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ),
            None => format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        };
        let (status, _, body) = self.raw(&req);
        (status, body)
    }

    pub(super) fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| b.to_string());
        let (status, text) = self.call(method, path, b.as_deref());
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
        };
        (status, v)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

pub(super) fn msg(status: u16, v: &Value) -> (u16, &str) {
    (status, v["message"].as_str().unwrap_or("<no message>"))
}

#[test]
fn ping_get_head_and_versioned() {
    let s = Server::start();
    for path in ["/_ping", "/v1.47/_ping", "/v1.24/_ping"] {
        let (status, h, body) = s.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!((status, body.as_str()), (200, "OK"), "{path}");
        assert_eq!(header(&h, "api-version"), Some("1.47"));
        assert_eq!(header(&h, "ostype"), Some("linux"));
        assert_eq!(header(&h, "docker-experimental"), Some("false"));
        assert_eq!(
            header(&h, "cache-control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(header(&h, "pragma"), Some("no-cache"));
    }
    let (status, h, body) = s.raw("HEAD /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(header(&h, "api-version"), Some("1.47"));
}

#[test]
fn version_has_docker_shape() {
    let s = Server::start();
    let (status, v) = s.json("GET", "/v1.47/version", None);
    assert_eq!(status, 200);
    assert_eq!(v["ApiVersion"], "1.47");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["GoVersion"], "n/a");
    assert_eq!(v["Components"][0]["Name"], "Engine");
    assert!(v["Version"].as_str().is_some_and(|x| !x.is_empty()));
}

#[test]
fn unknown_routes_methods_and_versions() {
    let s = Server::start();
    for (m, p) in [
        ("GET", "/nope"),
        ("GET", "/vfoo/networks"),
        ("PUT", "/networks"),
        ("POST", "/sandboxes/abc"),
    ] {
        let (status, v) = s.json(m, p, None);
        assert_eq!(msg(status, &v), (404, "page not found"), "{m} {p}");
    }
    let (status, v) = s.json("GET", "/v1.99/networks", None);
    assert_eq!(
        msg(status, &v),
        (
            400,
            "client version 1.99 is too new. Maximum supported API version is 1.47"
        )
    );
    let (status, v) = s.json("GET", "/v1.12/networks", None);
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("is too old"));
}

#[test]
fn network_lifecycle() {
    let s = Server::start();
    let (status, v) = s.json("GET", "/v1.47/networks", None);
    assert_eq!(status, 200);
    let mut names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bridge", "host", "none"]);
    assert_eq!(v[0]["Containers"], json!({}));

    let req = json!({"Name": "pets", "Driver": "bridge", "CheckDuplicate": true,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}], "Options": null},
        "Options": {"com.docker.network.driver.mtu": "1400"}, "Labels": {"team": "a"}});
    let (status, v) = s.json("POST", "/networks/create", Some(req.clone()));
    assert_eq!(status, 201, "{v}");
    let id = v["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(v["Warning"], "");

    let (status, v) = s.json("POST", "/v1.47/networks/create", Some(req));
    assert_eq!(
        msg(status, &v),
        (409, "network with name pets already exists")
    );

    for key in ["pets", &id, &id[..5]] {
        let (status, v) = s.json("GET", &format!("/networks/{key}?verbose=false"), None);
        assert_eq!(status, 200, "{key}");
        assert_eq!(v["Name"], "pets");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.9.0.0/24");
        assert_eq!(v["Options"]["com.docker.network.driver.mtu"], "1400");
    }
    let (status, _) = s.json("GET", "/networks/pets?scope=swarm", None);
    assert_eq!(status, 404);
    let (status, v) = s.json("GET", "/networks/cats", None);
    assert_eq!(msg(status, &v), (404, "network cats not found"));

    let (status, v) = s.json(
        "GET",
        "/networks?filters=%7B%22label%22%3A%7B%22team%3Da%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Name"], "pets");

    // A sandbox on pets keeps it from being removed or pruned.
    let (status, sb) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "web", "Networks": [{"Network": "pets", "Aliases": ["w"]}]})),
    );
    assert_eq!(status, 201, "{sb}");
    assert_eq!(sb["Networks"]["pets"]["Interface"], "eth0");
    let (status, v) = s.json("DELETE", "/networks/pets", None);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("has active endpoints")
    );
    let (status, v) = s.json("POST", "/networks/prune", None);
    assert_eq!((status, &v["NetworksDeleted"]), (200, &json!([])));

    // connect / disconnect
    let (status, v) = s.json(
        "POST",
        "/v1.47/networks/bridge/connect",
        Some(json!({"Container": "web", "EndpointConfig": {"Aliases": null, "Links": null}})),
    );
    assert_eq!((status, &v), (200, &Value::Null));
    let (_, v) = s.json("GET", "/networks/bridge", None);
    assert_eq!(v["Containers"][sb["Id"].as_str().unwrap()]["Name"], "web");
    let (status, v) = s.json(
        "POST",
        "/networks/bridge/connect",
        Some(json!({"Container": "ghost"})),
    );
    assert_eq!(msg(status, &v), (404, "No such container: ghost"));
    let (status, _) = s.json(
        "POST",
        "/networks/bridge/disconnect",
        Some(json!({"Container": "web", "Force": false})),
    );
    assert_eq!(status, 200);
    let (status, _) = s.json(
        "POST",
        "/networks/pets/disconnect",
        Some(json!({"Container": "web"})),
    );
    assert_eq!(status, 200);

    let (status, v) = s.json("DELETE", "/v1.47/networks/bridge", None);
    assert_eq!(
        msg(status, &v),
        (403, "bridge is a pre-defined network and cannot be removed")
    );
    let (status, v) = s.json("DELETE", "/networks/pets", None);
    assert_eq!((status, v), (204, Value::Null));
    let (status, _) = s.json("DELETE", "/networks/pets", None);
    assert_eq!(status, 404);
}

#[test]
fn networks_named_like_routes_are_reachable() {
    let s = Server::start();
    for name in ["create", "prune"] {
        let (status, _) = s.json("POST", "/networks/create", Some(json!({"Name": name})));
        assert_eq!(status, 201);
        let (status, v) = s.json("GET", &format!("/v1.47/networks/{name}"), None);
        assert_eq!((status, &v["Name"]), (200, &json!(name)));
        let (status, _) = s.json("DELETE", &format!("/networks/{name}"), None);
        assert_eq!(status, 204);
    }
}

#[test]
fn prune_removes_unused_custom_networks_and_checks_filters() {
    let s = Server::start();
    for (n, label) in [("a", "x"), ("b", "y")] {
        let (status, _) = s.json(
            "POST",
            "/networks/create",
            Some(json!({"Name": n, "Labels": {"k": label}})),
        );
        assert_eq!(status, 201);
    }
    let (status, v) = s.json(
        "POST",
        "/v1.47/networks/prune?filters=%7B%22label%22%3A%5B%22k%3Dx%22%5D%7D",
        None,
    );
    assert_eq!((status, &v["NetworksDeleted"]), (200, &json!(["a"])));
    let (status, v) = s.json(
        "POST",
        "/networks/prune?filters=%7B%22name%22%3A%5B%22b%22%5D%7D",
        None,
    );
    assert_eq!(msg(status, &v), (400, "invalid filter 'name'"));
    let (status, v) = s.json("POST", "/networks/prune?filters=%7B", None);
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.json("POST", "/networks/prune", None);
    assert_eq!((status, &v["NetworksDeleted"]), (200, &json!(["b"])));
    let (status, v) = s.json(
        "GET",
        "/networks?filters=%7B%22type%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(msg(status, &v), (400, "invalid filter: 'type'='x'"));
}

#[test]
fn bad_bodies_are_400_with_docker_texts() {
    let s = Server::start();
    let cases: &[(&str, &str, &str)] = &[
        (
            "{",
            "application/json",
            "invalid JSON: EOF while parsing an object",
        ),
        (
            " ",
            "application/json",
            "invalid JSON: got EOF while reading request body",
        ),
        (
            r#"{"Name": 3}"#,
            "application/json",
            "invalid JSON: invalid type: integer `3`",
        ),
        (
            r#"{"Name":"x","Internal":"yes"}"#,
            "application/json; charset=utf-8",
            "invalid JSON: invalid type: string",
        ),
        (
            r#"{"Name":"x"} {}"#,
            "application/json",
            "unexpected content after JSON",
        ),
        (
            r#"{"Name":"x"}"#,
            "text/plain",
            "Content-Type specified (text/plain) must be 'application/json'",
        ),
        (
            r#"{"Driver":"bridge"}"#,
            "application/json",
            "network name must not be empty",
        ),
        (
            "[]",
            "application/json",
            "invalid JSON: the request body must be a JSON object",
        ),
        (
            "3",
            "application/json",
            "invalid JSON: the request body must be a JSON object",
        ),
    ];
    for (body, ct, want) in cases {
        let (status, text) = s.call_ct("POST", "/networks/create", Some(body), ct);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 400, "{body}: {text}");
        assert!(
            v["message"].as_str().unwrap().starts_with(want),
            "{body}: {text}"
        );
    }
    // No body at all is an empty request: the name is missing.
    let (status, v) = s.json("POST", "/networks/create", None);
    assert_eq!(msg(status, &v), (400, "network name must not be empty"));
    let (status, text) = s.call("POST", "/sandboxes", Some(r#"{"Networks": {"a": 1}}"#));
    assert_eq!(status, 400, "{text}");
    let (status, text) = s.call(
        "POST",
        "/networks/bridge/connect",
        Some(r#"{"Container": ["x"]}"#),
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = s.call(
        "POST",
        "/networks/bridge/disconnect",
        Some(r#"{"Force": "yes"}"#),
    );
    assert_eq!(status, 400, "{text}");
    // Nothing was created by any of it.
    let (_, v) = s.json("GET", "/networks", None);
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[test]
fn sandbox_lifecycle_and_stats() {
    let s = Server::start();
    let (status, v) = s.json("POST", "/sandboxes", None);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["Networks"]["bridge"]["IPAddress"], "172.17.0.2");
    assert_eq!(v["Networks"]["bridge"]["Gateway"], "172.17.0.1");
    assert!(v["NetnsPath"].as_str().unwrap().starts_with("/proc/"));
    let id = v["Id"].as_str().unwrap().to_string();
    let (status, v) = s.json(
        "POST",
        "/v1.47/sandboxes",
        Some(json!({"Name": "db", "Networks": [{"Network": "none"}], "Hostname": "db"})),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = s.json("POST", "/sandboxes", Some(json!({"Name": "db"})));
    assert_eq!(status, 409, "{v}");
    let (status, v) = s.json("GET", "/sandboxes", None);
    assert_eq!((status, v.as_array().unwrap().len()), (200, 2));
    let (status, v) = s.json("GET", &format!("/sandboxes/{}", &id[..10]), None);
    assert_eq!((status, &v["Id"]), (200, &json!(id)));
    let (status, v) = s.json("GET", "/stats", None);
    assert_eq!(status, 200);
    assert_eq!(v["Ports"][0]["Sandbox"], json!(v["Ports"][0]["Sandbox"]));
    for key in ["Ports", "Stages", "Networks", "Switch", "Pool", "Dns"] {
        assert!(v.get(key).is_some(), "stats lacks {key}: {v}");
    }
    // The default bridge's gateway answers DNS: its counters, by name, zeros too.
    let dns = &v["Dns"][0];
    assert_eq!(dns["Network"], "bridge", "{v}");
    for key in [
        "Queries",
        "Answered",
        "Nxdomain",
        "Forwarded",
        "Timeouts",
        "Refused",
    ] {
        assert_eq!(dns[key], 0, "{key}: {v}");
    }
    assert_eq!(dns["Counters"]["dropped"], 0, "{v}");
    let (status, _) = s.json("DELETE", &format!("/sandboxes/{id}"), None);
    assert_eq!(status, 204);
    let (status, v) = s.json("DELETE", &format!("/sandboxes/{id}"), None);
    assert_eq!(msg(status, &v), (404, &*format!("No such container: {id}")));
    let (status, _) = s.json("DELETE", "/v1.47/sandboxes/db", None);
    assert_eq!(status, 204);
}

/// One request with `fds` attached to its bytes, on a kept-alive connection; returns
/// (status, body) of the answer, read by its Content-Length.
pub(super) fn call_with_fds(
    c: &mut UnixStream,
    path: &str,
    body: &str,
    fds: &[RawFd],
) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let cm = [ControlMessage::ScmRights(fds)];
    let iov = [std::io::IoSlice::new(req.as_bytes())];
    let sent = sendmsg::<()>(c.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
    c.write_all(&req.as_bytes()[sent..]).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Whether every copy of a pipe's write end is closed: its read end is at EOF (a copy
/// open anywhere makes the non-blocking read fail with EAGAIN instead).
pub(super) fn write_end_closed(r: &OwnedFd) -> bool {
    nix::fcntl::fcntl(r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    // A child another test forks holds every fd of this process until it execs (the
    // pipe is close-on-exec): a leak keeps the write end open, a fork only until it
    // execs, which on a loaded machine can take a while.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match nix::unistd::read(r, &mut [0u8; 1]) {
            Ok(0) => return true,
            Err(nix::errno::Errno::EAGAIN) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(nix::errno::Errno::EAGAIN) => return false,
            other => panic!("unexpected read of the pipe: {other:?}"),
        }
    }
}

/// A close-on-exec pipe (see [`write_end_closed`]).
pub(super) fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

/// Fds belong to the request they came with: a request that fails (or does not want
/// them) leaves none open in the daemon nor for the next request on the connection; too
/// many in one message are all closed, and fail only that request.
#[test]
fn fds_are_closed_with_their_request() {
    let s = Server::start();
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let adopt = "/sandboxes/sb/interfaces";
    let good = r#"{"Interfaces": ["eth0"]}"#;

    // A body that is not JSON: 400, and the fds sent with it are closed.
    let (r, w) = pipe();
    let (status, body) = call_with_fds(&mut c, adopt, "{", &[w.as_raw_fd(); 2]);
    assert_eq!(status, 400, "{body}");
    drop(w);
    assert!(write_end_closed(&r), "fds of a failed request stayed open");

    // Any other route: its fds are closed once it is answered.
    let (r, w) = pipe();
    let (status, body) = call_with_fds(&mut c, "/networks/prune", "", &[w.as_raw_fd()]);
    assert_eq!(status, 200, "{body}");
    drop(w);
    assert!(
        write_end_closed(&r),
        "fds of an unrelated request stayed open"
    );

    // More than the limit in one message: all closed, that request refused...
    let (r, w) = pipe();
    let many = vec![w.as_raw_fd(); fdpass::MAX_FDS + 1];
    let (status, body) = call_with_fds(&mut c, adopt, good, &many);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        v["message"].as_str().unwrap().contains("lost in transit"),
        "{body}"
    );
    drop(w);
    assert!(write_end_closed(&r), "fds past the limit leaked");

    // ...and the next request on the connection starts afresh: it reaches the core
    // (which has no such sandbox), not the "lost" error.
    let (r, w) = pipe();
    let (status, body) = call_with_fds(&mut c, adopt, good, &[w.as_raw_fd()]);
    assert_eq!(status, 404, "{body}");
    drop(w);
    assert!(write_end_closed(&r));
}

#[test]
fn port_bindings_in_and_ports_out() {
    let s = Server::start();
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "web", "PortBindings": {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
            "81/tcp": null
        }})),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["Ports"]["80/tcp"],
        json!([{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}])
    );
    assert_eq!(v["Ports"]["53/udp"][0]["HostIp"], "127.0.0.1");
    assert!(
        v["Ports"]["81/tcp"][0]["HostPort"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .is_ok()
    );
    let (_, v) = s.json("GET", "/sandboxes/web", None);
    assert_eq!(v["Ports"]["80/tcp"][0]["HostPort"], "8080");
    // Bad bindings are 400 with Docker's texts, and create nothing.
    for (body, text) in [
        (
            json!({"80/sctp": []}),
            "invalid proto: sctp (tapnet publishes tcp and udp ports only)",
        ),
        (json!({"x/tcp": []}), "invalid containerPort: x"),
        (
            json!({"80/tcp": [{"HostPort": "nope"}]}),
            "invalid hostPort: nope",
        ),
        (
            json!({"80/tcp": [{"HostIp": "1.2.3"}]}),
            "invalid IP address: 1.2.3",
        ),
    ] {
        let (status, v) = s.json(
            "POST",
            "/sandboxes",
            Some(json!({"Name": "bad", "PortBindings": body})),
        );
        assert_eq!(msg(status, &v), (400, text));
    }
    // The same host port again: Docker's error.
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "db", "PortBindings": {"90/tcp": [{"HostPort": "8080"}]}})),
    );
    assert_eq!(status, 500, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .ends_with("Bind for 0.0.0.0:8080 failed: port is already allocated"),
        "{v}"
    );
    let (_, v) = s.json("GET", "/sandboxes", None);
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn socket_is_0660_stale_socket_replaced_live_one_refused_and_removed_on_stop() {
    let dir = temp_dir("sock");
    let socket = dir.join("tapnet.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut s = Server::start_in(dir.clone());
    // A program another test starts holds a copy of the stale socket until it execs,
    // and answers a connect meanwhile: the server's own file comes moments later.
    let mode = || std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    let end = Instant::now() + Duration::from_secs(10);
    while mode() != 0o660 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mode(), 0o660);
    // A second server on the same live socket must refuse, not steal it.
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    let err = serve(&socket, memory_daemon(&dir.join("second")), rx).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "the live socket was removed"
    );
    s.stop().unwrap();
    assert!(!socket.exists());
    // A plain file in the way is not removed.
    std::fs::write(&socket, b"x").unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    let err = serve(&socket, memory_daemon(&dir.join("third")), rx).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    let _ = std::fs::remove_file(&socket);
}

pub(super) fn find_docker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// Run the docker CLI against the server; returns (exit status, stdout, stderr).
pub(super) fn docker(
    bin: &Path,
    server: &Server,
    config: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", server.socket.display()))
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn docker_cli_drives_the_api() {
    let Some(bin) = find_docker() else {
        panic!("docker_cli_drives_the_api needs the docker CLI on PATH (.ci/run installs it)");
    };
    let s = Server::start();
    let config = s.dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let d = |args: &[&str]| docker(&bin, &s, &config, args);
    let ok = |args: &[&str]| {
        let (code, out, err) = d(args);
        assert_eq!(code, 0, "docker {args:?}: {out}{err}");
        out
    };

    let out = ok(&["network", "ls"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("NETWORK ID     NAME      DRIVER    SCOPE")
    );
    assert_eq!(lines.count(), 3, "{out}");
    assert!(out.contains(" bridge    bridge    local"), "{out}");

    let id = ok(&[
        "network",
        "create",
        "--subnet",
        "10.7.0.0/24",
        "--gateway",
        "10.7.0.254",
        "--label",
        "team=a",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "pets",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let (code, _, err) = d(&["network", "create", "pets"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Error response from daemon: network with name pets already exists"),
        "{err}"
    );

    let out = ok(&["network", "ls", "--filter", "label=team=a", "-q"]);
    assert_eq!(out.trim(), &id[..12]);
    let out = ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.IPv4}}",
    ]);
    assert!(out.contains("pets bridge true"), "{out}");

    let out = ok(&["network", "inspect", "pets"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], id);
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.7.0.0/24");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "10.7.0.254");
    assert_eq!(v[0]["Labels"]["team"], "a");
    assert_eq!(v[0]["Options"]["com.docker.network.driver.mtu"], "1400");
    let out = ok(&["network", "inspect", "-f", "{{.Name}} {{.Scope}}", &id[..6]]);
    assert_eq!(out.trim(), "pets local");
    let (code, _, err) = d(&["network", "inspect", "cats"]);
    assert_eq!(code, 1);
    assert!(err.contains("network cats not found"), "{err}");

    // connect / disconnect need a sandbox: make one through the API.
    let (status, _) = s.json("POST", "/sandboxes", Some(json!({"Name": "web"})));
    assert_eq!(status, 201);
    ok(&[
        "network", "connect", "--alias", "w", "--ip", "10.7.0.9", "pets", "web",
    ]);
    let out = ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
        "pets",
    ]);
    assert_eq!(out.trim(), "web 10.7.0.9/24");
    let (code, _, err) = d(&["network", "rm", "pets"]);
    assert_eq!(code, 1);
    assert!(err.contains("has active endpoints"), "{err}");
    ok(&["network", "disconnect", "pets", "web"]);
    let (code, _, err) = d(&["network", "connect", "pets", "ghost"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such container: ghost"), "{err}");

    let out = ok(&["network", "rm", "pets"]);
    assert_eq!(out.trim(), "pets");
    let (code, _, err) = d(&["network", "rm", "bridge"]);
    assert_eq!(code, 1);
    assert!(err.contains("pre-defined network"), "{err}");

    ok(&["network", "create", "old"]);
    ok(&["network", "create", "--label", "keep", "kept"]);
    let out = ok(&["network", "prune", "-f", "--filter", "label!=keep"]);
    assert!(out.contains("Deleted Networks:\nold\n"), "{out}");
    let out = ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["bridge", "host", "kept", "none"]
    );
    let out = ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(out.trim(), "1.47 linux");
}
