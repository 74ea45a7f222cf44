//! End to end: the real `tapnet daemon`'s API refuses callers other than root and its
//! own user, refuses `-p` past its bound, and shows its counters in `tapnet stats`.
//! Root only: each test is `#[ignore = "needs root"]`; the [`common::Daemon`] guard
//! removes the daemon and its state also when a test fails.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::Daemon;

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

/// One request on `c`, read to the end (`Connection: close`).
fn request(mut c: UnixStream, path: &str) -> String {
    use std::io::{Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
#[ignore = "needs root"]
fn another_user_is_refused_even_when_the_socket_lets_it_connect() {
    let d = Daemon::start("trust");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket's mode");
    // Opened to everyone, as a careless chmod would.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let answer = request(connect_as(65534, &d.socket).unwrap(), "/networks");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("permission denied: uid 65534 may not use this daemon (only root may)"),
        "{answer}"
    );
    let answer = request(UnixStream::connect(&d.socket).unwrap(), "/_ping");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stats = d.ok(&["stats"]);
    assert!(stats.contains("forbidden=1"), "{stats}");
}

#[test]
#[ignore = "needs root"]
fn publishing_past_the_bound_is_refused_at_once() {
    let d = Daemon::start("ports");
    // 70,000 ports: TCP and UDP 1 to 35,000. The CLI refuses with the daemon's words.
    let err = d.fails(
        &["sandbox", "create", "-p", "1-35000", "-p", "1-35000/udp"],
        1,
    );
    assert!(
        err.contains("too many published ports: 70000 asked for, at most 1024 per sandbox"),
        "{err}"
    );
    // The daemon refuses too: 2,000 ports asked for directly.
    let bindings: Vec<String> = (1..=2000).map(|p| format!("\"{p}/tcp\":null")).collect();
    let body = format!(
        "{{\"Name\":\"many\",\"PortBindings\":{{{}}}}}",
        bindings.join(",")
    );
    let r = d.post("/sandboxes", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        "too many published ports: 2000 asked for, at most 1024 per sandbox"
    );
    let r = d.post(
        "/sandboxes",
        r#"{"Name":"wide","PortBindings":{"80/tcp":[{"HostPort":"1-65535"}]}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        "host port range 1-65535 of 80/tcp is too long: 65535 ports, at most 1024"
    );
    let stats = d.ok(&["stats"]);
    assert!(stats.contains("port_limit=2"), "{stats}");
    assert!(d.ok(&["sandbox", "ls", "-q"]).trim().is_empty());
}
