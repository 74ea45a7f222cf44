//! The API server's bounds and trust: slow calls do not stall other clients, idle and
//! slow connections are closed (with the fds they sent), connections past the limit
//! are refused, `-p` ranges are bounded, and only root and the daemon's user are served.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::{Value, json};

use super::ApiLimits;
use super::tests::{Server, call_with_fds, msg, pipe, temp_dir, write_end_closed};
use crate::daemon::core::{MAX_HOST_PORT_RANGE, MAX_PUBLISHED_PORTS};
use crate::daemon::plumbing::{MemoryPlumbing, Op};
use crate::daemon::{Daemon, DaemonConfig};

fn daemon_on(dir: &Path, plumbing: Arc<MemoryPlumbing>) -> Arc<Daemon> {
    let cfg = DaemonConfig {
        state_dir: dir.join("state"),
    };
    Arc::new(Daemon::open(&cfg, plumbing).unwrap())
}

/// A server on the in-memory plumbing with `limits`; the plumbing too.
fn server(tag: &str, limits: ApiLimits) -> (Server, Arc<MemoryPlumbing>) {
    let dir = temp_dir(tag);
    let plumbing = Arc::new(MemoryPlumbing::new());
    let d = daemon_on(&dir, plumbing.clone());
    (Server::start_with(dir, d, limits), plumbing)
}

/// Read until the server closes the connection (or `within` passes: then `None`).
fn read_to_close(c: &mut UnixStream, within: Duration) -> Option<Vec<u8>> {
    c.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    match c.read_to_end(&mut out) {
        Ok(_) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(out),
        Err(_) => None,
    }
}

/// One keep-alive request on `c`; the answer's status and body.
fn keep_alive_get(c: &mut UnixStream, path: &str) -> (u16, String) {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
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

/// The API counters in `GET /stats`.
fn api_counter(s: &Server, name: &str) -> u64 {
    let (status, v) = s.json("GET", "/stats", None);
    assert_eq!(status, 200, "{v}");
    v["Api"]["Counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no Api counter {name}: {v}"))
}

/// Releases a held plumbing call however the test ends.
struct Release(crate::daemon::plumbing::Hold);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[test]
fn ping_and_version_answer_while_a_slow_call_is_in_flight() {
    let (s, plumbing) = server("slow", ApiLimits::default());
    let hold = Release(plumbing.hold(Op::AddNetwork));
    let socket = s.socket.clone();
    let slow = std::thread::spawn(move || {
        let mut c = UnixStream::connect(&socket).unwrap();
        let body = r#"{"Name": "slow"}"#;
        c.write_all(
            format!(
                "POST /networks/create HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        read_to_close(&mut c, Duration::from_secs(30)).map(|b| String::from_utf8(b).unwrap())
    });
    assert!(
        hold.0
            .wait_entered(Instant::now() + Duration::from_secs(10)),
        "the network create never reached the plumbing"
    );
    // The create is in the plumbing now, and stays there until released: another
    // client is still answered.
    for path in ["/_ping", "/version"] {
        let mut c = UnixStream::connect(&s.socket).unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let got = read_to_close(&mut c, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{path} was not answered while a slow call ran"));
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    }
    hold.0.release();
    let answer = slow.join().unwrap().expect("the slow call was answered");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// How long a read may take while a write is held in the plumbing: far less than the
/// hold (30 s), far more than a read takes, even on a loaded machine.
const READ_WITHIN: Duration = Duration::from_secs(10);

/// `POST path` with JSON `body` on a connection of its own, on a thread: the answer.
fn post_in_background(
    s: &Server,
    path: &'static str,
    body: &'static str,
) -> std::thread::JoinHandle<Option<String>> {
    let socket = s.socket.clone();
    std::thread::spawn(move || {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        read_to_close(&mut c, Duration::from_secs(30)).map(|b| String::from_utf8(b).unwrap())
    })
}

/// `GET path`, which must be answered within [`READ_WITHIN`]: status and JSON body.
fn get_soon(s: &Server, path: &str) -> (u16, Value) {
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let got = read_to_close(&mut c, READ_WITHIN)
        .unwrap_or_else(|| panic!("GET {path} was not answered while a write was held"));
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The names in a list answer, sorted.
fn names(v: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x["Name"].as_str().unwrap())
        .collect();
    out.sort_unstable();
    out
}

/// What a bridge network's inspect shows of its use: its sandboxes and addresses held.
fn bridge_use(v: &Value) -> (usize, u64) {
    let subnets = v["Status"]["IPAM"]["Subnets"].as_object().unwrap();
    let in_use = subnets
        .values()
        .map(|s| s["IPsInUse"].as_u64().unwrap())
        .sum();
    (v["Containers"].as_object().unwrap().len(), in_use)
}

#[test]
fn reads_answer_from_the_last_finished_write_while_a_network_create_is_held() {
    let (s, plumbing) = server("reads-net", ApiLimits::default());
    let (status, v) = s.json("POST", "/sandboxes", Some(json!({"Name": "web"})));
    assert_eq!(status, 201, "{v}");
    let hold = Release(plumbing.hold(Op::AddNetwork));
    let slow = post_in_background(&s, "/networks/create", r#"{"Name": "slow"}"#);
    assert!(
        hold.0
            .wait_entered(Instant::now() + Duration::from_secs(10)),
        "the network create never reached the plumbing"
    );
    // The create holds the plumbing (its record is stored by now): every read is
    // answered, from the state before it.
    let (status, v) = get_soon(&s, "/networks");
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v), ["bridge", "host", "none"]);
    let (status, v) = get_soon(&s, "/networks/bridge");
    assert_eq!(status, 200, "{v}");
    assert_eq!(bridge_use(&v).0, 1, "{v}");
    assert_eq!(get_soon(&s, "/networks/slow").0, 404);
    let (status, v) = get_soon(&s, "/sandboxes");
    assert_eq!((status, names(&v)), (200, vec!["web"]));
    assert_eq!(get_soon(&s, "/sandboxes/web").0, 200);
    let (status, v) = get_soon(&s, "/stats");
    assert_eq!(status, 200, "{v}");
    hold.0.release();
    let answer = slow.join().unwrap().expect("the slow call was answered");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Its write finished: now it is there.
    let (status, v) = s.json("GET", "/networks/slow", None);
    assert_eq!(status, 200, "{v}");
    let (_, v) = s.json("GET", "/networks", None);
    assert_eq!(names(&v), ["bridge", "host", "none", "slow"]);
}

#[test]
fn reads_answer_from_the_last_finished_write_while_a_sandbox_create_is_held() {
    let (s, plumbing) = server("reads-sb", ApiLimits::default());
    let (status, v) = s.json("POST", "/sandboxes", Some(json!({"Name": "web"})));
    assert_eq!(status, 201, "{v}");
    let (_, before) = s.json("GET", "/networks/bridge", None);
    let before = bridge_use(&before);
    let hold = Release(plumbing.hold(Op::Plug));
    let slow = post_in_background(&s, "/sandboxes", r#"{"Name": "slow"}"#);
    assert!(
        hold.0
            .wait_entered(Instant::now() + Duration::from_secs(10)),
        "the sandbox create never reached the plumbing"
    );
    // Its records and address are stored, its namespace made: none of it shows yet.
    let (status, v) = get_soon(&s, "/sandboxes");
    assert_eq!((status, names(&v)), (200, vec!["web"]));
    assert_eq!(get_soon(&s, "/sandboxes/slow").0, 404);
    let (status, v) = get_soon(&s, "/networks/bridge");
    assert_eq!(status, 200, "{v}");
    assert_eq!(bridge_use(&v), before, "{v}");
    let (status, v) = get_soon(&s, "/networks");
    assert_eq!(status, 200, "{v}");
    let (status, v) = get_soon(&s, "/stats");
    assert_eq!(status, 200, "{v}");
    hold.0.release();
    let answer = slow.join().unwrap().expect("the slow call was answered");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // All of it at once.
    let (_, v) = s.json("GET", "/sandboxes", None);
    assert_eq!(names(&v), ["slow", "web"]);
    assert_eq!(s.json("GET", "/sandboxes/slow", None).0, 200);
    let (_, v) = s.json("GET", "/networks/bridge", None);
    assert_eq!(bridge_use(&v), (before.0 + 1, before.1 + 1), "{v}");
}

#[test]
fn published_ports_past_the_limit_are_400() {
    let (s, _) = server("ports", ApiLimits::default());
    // 70,000 ports: every TCP and UDP port from 1 to 35,000.
    let mut bindings = serde_json::Map::new();
    for p in 1..=35_000u32 {
        bindings.insert(format!("{p}/tcp"), Value::Null);
        bindings.insert(format!("{p}/udp"), Value::Null);
    }
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "many", "PortBindings": bindings})),
    );
    assert_eq!(
        msg(status, &v),
        (
            400,
            &*format!(
                "too many published ports: 70000 asked for, at most {MAX_PUBLISHED_PORTS} \
                 per sandbox"
            )
        )
    );
    // One container port with a host range too long to search.
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "wide", "PortBindings": {"80/tcp": [{"HostPort": "1-65535"}]}})),
    );
    assert_eq!(
        msg(status, &v),
        (
            400,
            &*format!(
                "host port range 1-65535 of 80/tcp is too long: 65535 ports, at most \
                 {MAX_HOST_PORT_RANGE}"
            )
        )
    );
    let (_, v) = s.json("GET", "/sandboxes", None);
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    assert_eq!(api_counter(&s, "api_port_limit"), 2);
    // At the limit is fine.
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "edge", "PortBindings": {"80/tcp": [{"HostPort": "20000-21023"}]}})),
    );
    assert_eq!(status, 201, "{v}");
}

/// Short, yet long enough that a client on a loaded machine gets its request out
/// between connect and write.
fn short_timeouts() -> ApiLimits {
    ApiLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..ApiLimits::default()
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_header_timeout() {
    let (s, _) = server("idle", short_timeouts());
    // Nothing sent at all.
    let mut idle = UnixStream::connect(&s.socket).unwrap();
    assert!(
        read_to_close(&mut idle, Duration::from_secs(5)).is_some(),
        "an idle connection stayed open"
    );
    // Idle after a request (keep-alive).
    let mut kept = UnixStream::connect(&s.socket).unwrap();
    assert_eq!(keep_alive_get(&mut kept, "/_ping").0, 200);
    assert!(
        read_to_close(&mut kept, Duration::from_secs(5)).is_some(),
        "an idle kept-alive connection stayed open"
    );
    // The connection's task counts the timeout after the connection is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api_counter(&s, "api_header_timeouts") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(api_counter(&s, "api_header_timeouts") >= 2);
}

#[test]
fn fds_of_a_request_not_completed_in_time_are_closed() {
    let (s, _) = server("abandon", short_timeouts());
    // Half a request head, with fds: the connection is closed, the fds with it.
    let (r, w) = pipe();
    let c = UnixStream::connect(&s.socket).unwrap();
    let part = b"POST /sandboxes/sb/interfaces HTTP/1.1\r\nHost: t\r\n";
    let fds = [w.as_raw_fd(); 3];
    let cm = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(part)];
    sendmsg::<()>(c.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
    drop(w);
    let mut c = c;
    assert!(read_to_close(&mut c, Duration::from_secs(5)).is_some());
    assert!(
        write_end_closed(&r),
        "fds of an unfinished head stayed open"
    );

    // A whole head but half the body: 408, and the fds are closed.
    let (r, w) = pipe();
    let mut c = UnixStream::connect(&s.socket).unwrap();
    let part = b"POST /sandboxes/sb/interfaces HTTP/1.1\r\nHost: t\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Interf";
    let fds = [w.as_raw_fd(); 2];
    let cm = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(part)];
    sendmsg::<()>(c.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
    drop(w);
    let got = read_to_close(&mut c, Duration::from_secs(5)).expect("the slow body was cut off");
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        write_end_closed(&r),
        "fds of an unfinished body stayed open"
    );
    assert!(api_counter(&s, "api_body_timeouts") >= 1);

    // A request that is completed still gets its fds (to the core, which has no such
    // sandbox: 404).
    let (r, w) = pipe();
    let mut c = UnixStream::connect(&s.socket).unwrap();
    let (status, body) = call_with_fds(
        &mut c,
        "/sandboxes/sb/interfaces",
        r#"{"Interfaces": ["eth0"]}"#,
        &[w.as_raw_fd()],
    );
    assert_eq!(status, 404, "{body}");
    drop(w);
    assert!(write_end_closed(&r));
}

#[test]
fn connections_past_the_limit_are_closed_at_once() {
    let limits = ApiLimits {
        max_connections: 4,
        ..ApiLimits::default()
    };
    let (s, _) = server("conns", limits);
    // Four connections the server has taken (each answered a request).
    let mut open: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut c = UnixStream::connect(&s.socket).unwrap();
            assert_eq!(keep_alive_get(&mut c, "/_ping").0, 200);
            c
        })
        .collect();
    // The fifth is closed without an answer.
    let mut fifth = UnixStream::connect(&s.socket).unwrap();
    let _ = fifth.write_all(b"GET /_ping HTTP/1.1\r\nHost: t\r\n\r\n");
    let got = read_to_close(&mut fifth, Duration::from_secs(5)).expect("not closed");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let (status, v) = {
        let c = &mut open[0];
        let (st, body) = keep_alive_get(c, "/stats");
        (st, serde_json::from_str::<Value>(&body).unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(v["Api"]["Counters"]["api_connections_refused"], 1, "{v}");
    assert_eq!(v["Api"]["Connections"], 4, "{v}");
    // Once one closes, a new connection is served (the server sees the close soon).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = UnixStream::connect(&s.socket).unwrap();
        let _ = c.write_all(b"GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let got = read_to_close(&mut c, Duration::from_secs(5)).unwrap_or_default();
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot was never reused");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connect to `path` with effective uid `uid`: only the calling thread's credentials
/// change (the raw system call, not libc's process-wide `setresuid`), on a thread of
/// its own that goes back to root before it ends.
fn connect_as(uid: u32, path: &Path) -> std::io::Result<UnixStream> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let keep = libc::uid_t::MAX;
        // SAFETY: a plain system call on integers; it changes this thread's effective
        // uid only, and the saved uid stays root so the next call can change it back.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, uid, keep) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        let c = UnixStream::connect(&path);
        // SAFETY: as above, back to root.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, 0, keep) };
        assert_eq!(r, 0, "setresuid back: {}", std::io::Error::last_os_error());
        c
    })
    .join()
    .unwrap()
}

fn get_on(mut c: UnixStream, path: &str) -> (u16, Value) {
    let (status, body) = keep_alive_get(&mut c, path);
    let v = if status == 200 && path == "/_ping" {
        Value::String(body)
    } else {
        serde_json::from_str(&body).unwrap_or(Value::Null)
    };
    (status, v)
}

#[test]
#[ignore = "needs root"]
fn callers_other_than_root_and_the_daemon_user_are_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test connects as other users: run it as root"
    );
    // The daemon runs as uid 65534 here; the socket is opened to everyone (as a group
    // or a careless chmod would) so that only the credentials check stands.
    let limits = ApiLimits {
        owner_uid: 65534,
        ..ApiLimits::default()
    };
    let (s, _) = server("cred", limits);
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (status, v) = get_on(connect_as(65533, &s.socket).unwrap(), "/networks");
    assert_eq!(
        msg(status, &v),
        (
            403,
            "permission denied: uid 65533 may not use this daemon (only root and uid 65534 may)"
        )
    );
    let (status, v) = get_on(connect_as(65533, &s.socket).unwrap(), "/_ping");
    assert_eq!(status, 403, "{v}");
    let (status, v) = get_on(connect_as(65534, &s.socket).unwrap(), "/_ping");
    assert_eq!((status, v), (200, json!("OK")));
    let (status, _) = get_on(UnixStream::connect(&s.socket).unwrap(), "/networks");
    assert_eq!(status, 200);
    assert_eq!(api_counter(&s, "api_forbidden"), 2);
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_socket_is_made_with_its_mode_where_no_other_user_can_reach_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("bind");
    // A state directory others may enter: the socket is still never reachable there
    // before it has its final mode.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("tapnet.sock");
    let mut seen = None;
    let listener = super::listen::bind_socket(&socket, |staged| {
        let parent = staged.parent().unwrap();
        seen = Some((
            mode(parent),
            std::fs::metadata(parent).unwrap().uid(),
            mode(staged),
            parent.to_path_buf(),
        ));
    })
    .unwrap();
    let (dir_mode, dir_uid, staged_mode, private) = seen.expect("the socket was staged");
    assert_eq!(dir_mode, 0o700, "bound in a directory others may enter");
    assert_eq!(dir_uid, nix::unistd::geteuid().as_raw());
    assert_eq!(
        staged_mode,
        super::SOCKET_MODE,
        "the mode was set after it appeared"
    );
    assert_eq!(mode(&socket), super::SOCKET_MODE);
    assert!(!private.exists(), "the private directory was left behind");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tapnet.sock")]);
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rootless_sandbox_takes_interfaces_from_its_owners_user_only() {
    let dir = temp_dir("owner");
    let plumbing = Arc::new(MemoryPlumbing::new());
    let d = daemon_on(&dir, plumbing.clone());
    plumbing.start_process_as(4242, 1000);
    let sb = d
        .create_rootless_sandbox(Some("rl".into()), None, Vec::new(), &[], 4242)
        .unwrap();
    let err = d.check_rootless_caller(&sb.id, 1001).unwrap_err();
    assert_eq!(
        super::ApiError::from(err),
        super::ApiError::new(
            403,
            "sandbox rl belongs to uid 1000: uid 1001 may not hand over its interfaces"
        )
    );
    d.check_rootless_caller("rl", 1000).unwrap();
    d.check_rootless_caller("rl", 0).unwrap();
    // Its owner gone, only root may.
    plumbing.end_process(4242);
    assert!(d.check_rootless_caller("rl", 1000).is_err());
    d.check_rootless_caller("rl", 0).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root"]
fn interfaces_sent_by_another_user_are_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test connects as another user: run it as root"
    );
    // The daemon runs as uid 65534; a rootless sandbox made by root (this process)
    // takes interfaces from root only, not from the daemon's user.
    let limits = ApiLimits {
        owner_uid: 65534,
        ..ApiLimits::default()
    };
    let (s, plumbing) = server("adopt", limits);
    plumbing.start_process(std::process::id());
    let (status, v) = s.json(
        "POST",
        "/sandboxes",
        Some(json!({"Name": "rl", "Rootless": true})),
    );
    assert_eq!(status, 201, "{v}");
    let ifname = v["Networks"]["bridge"]["Interface"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let body = json!({ "Interfaces": [ifname] }).to_string();
    let (r, w) = pipe();
    let mut c = connect_as(65534, &s.socket).unwrap();
    let (status, text) = call_with_fds(&mut c, "/sandboxes/rl/interfaces", &body, &[w.as_raw_fd()]);
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("sandbox rl belongs to uid 0: uid 65534 may not hand over its interfaces"),
        "{text}"
    );
    drop(w);
    assert!(write_end_closed(&r), "the refused fds stayed open");
    // Root's own TAP is taken.
    let tap = plumbing.tap(&ifname).unwrap();
    let mut c = UnixStream::connect(&s.socket).unwrap();
    let (status, text) = call_with_fds(
        &mut c,
        "/sandboxes/rl/interfaces",
        &body,
        &[tap.as_raw_fd()],
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn fds_of_a_request_its_client_abandoned_are_closed() {
    // Default (long) timeouts: the client leaving is what ends the request.
    let (s, _) = server("left", ApiLimits::default());
    let (r, w) = pipe();
    let c = UnixStream::connect(&s.socket).unwrap();
    let part = b"POST /sandboxes/sb/interfaces HTTP/1.1\r\nHost: t\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let fds = [w.as_raw_fd(); 2];
    let cm = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(part)];
    sendmsg::<()>(c.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
    drop(w);
    drop(c);
    assert!(
        write_end_closed(&r),
        "fds of an abandoned request stayed open"
    );
}
