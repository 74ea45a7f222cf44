//! `tapnet demo` runs end to end and leaves nothing behind: as root (sandboxes in named
//! namespaces) and as the unprivileged user `tapnet-test` (rootless sandboxes; `.ci/run`
//! creates the user and makes `/dev/net/tun` mode 0666). Both are started by root:
//! `#[ignore = "needs root"]`. So is `tapnet demo --multi-host` as that user (daemons
//! on 127.0.0.11-13), in a namespace of the test's own so that its loopback traffic
//! stays there.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

const USER: &str = "tapnet-test";

/// What every demo prints when it built and checked everything; returns its state dir.
fn check_output(text: &str) -> PathBuf {
    assert!(!text.contains("FAIL"), "{text}");
    assert_eq!(text.matches("  ok    client -> web").count(), 3, "{text}");
    assert!(
        text.contains("  ok    stranger (network other) cannot reach web"),
        "{text}"
    );
    assert!(text.contains("  ok    host -> 127.0.0.1:"), "{text}");
    // web reads db by name, through the network's embedded DNS.
    assert!(text.contains("reads db at db:7000 (by name)"), "{text}");
    assert!(
        text.contains("  ok    web -> db by name: db:7000"),
        "{text}"
    );
    assert!(
        text.contains("removed: servers, sandboxes, networks and state"),
        "{text}"
    );
    let state = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("state: "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no state line:\n{text}"));
    PathBuf::from(state)
}

/// The namespaces of db and web, as the demo printed them.
fn namespaces(text: &str) -> Vec<String> {
    let ns: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("netns "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(String::from)
        .collect();
    assert_eq!(ns.len(), 2, "{text}");
    ns
}

/// Processes running the binary at `bin` (each one the demo started runs it: `tapnet
/// run`, `rootless-init` and the servers and checks it execs).
fn processes_of(bin: &Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).next() == Some(bin.as_os_str().as_encoded_bytes())
            })
        })
        .collect()
}

/// A directory anyone can read, holding a copy of the binary; on drop every
/// process still running that copy is killed by PID and the directory removed.
struct UserDir {
    dir: PathBuf,
    bin: PathBuf,
}

impl Drop for UserDir {
    fn drop(&mut self) {
        for pid in processes_of(&self.bin) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `tapnet demo` from a copy of the binary, as `user` if given (bounded in time),
/// check what it printed and that nothing it made is left; returns its output.
fn run_demo(user: Option<&User>) -> String {
    run_demo_with(user, &[], None)
}

/// [`run_demo`] with arguments `args` after `demo`, in the network namespace at `netns`
/// if given; the output checked by [`check_output`] unless `args` are given.
fn run_demo_with(user: Option<&User>, args: &[&str], netns: Option<&Path>) -> String {
    let dir = std::env::temp_dir().join(format!(
        "tapnet-demo-test-{}-{}{}",
        std::process::id(),
        if user.is_some() { "user" } else { "root" },
        // Each run its own copy: the processes left are found by the copy's path.
        args.concat()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rig = UserDir {
        bin: dir.join("tapnet"),
        dir,
    };
    std::fs::copy(env!("CARGO_BIN_EXE_tapnet"), &rig.bin).unwrap();
    std::fs::set_permissions(&rig.bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&rig.dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = Command::new(&rig.bin);
    cmd.arg("demo")
        .args(args)
        .current_dir(&rig.dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match (user, netns) {
        (Some(u), Some(ns)) => {
            // The namespace is entered as root, then the child becomes the user (the
            // Command's own uid/gid switch would come before, and setns would fail).
            let ns = std::fs::File::open(ns).unwrap();
            let (uid, gid) = (u.uid.as_raw(), u.gid.as_raw());
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // setns, setgroups, setgid and setuid, async-signal-safe system calls, on an
            // fd the closure owns and plain integers.
            unsafe {
                cmd.pre_exec(move || {
                    use std::os::fd::AsRawFd;
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
                        || libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        (Some(u), None) => {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        (None, Some(_)) => panic!("a namespace is only for a run as the user"),
        (None, None) => {}
    }
    // Another test thread may have forked while the copy was open for writing; its
    // child holds that descriptor until it execs (ETXTBSY), which on a loaded machine can
    // take seconds. Bounded retries.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 1000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => break r.expect("run tapnet demo"),
        }
    };
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tapnet demo did not finish within 120s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut text, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "demo failed ({status}):\n{text}\n{err}");
    if args.is_empty() {
        let state = check_output(&text);
        assert!(!state.exists(), "{} left behind", state.display());
        for ns in namespaces(&text) {
            assert!(!Path::new(&ns).exists(), "{ns} left behind:\n{text}");
        }
    }
    // Nothing it started still runs.
    let left = processes_of(&rig.bin);
    assert!(left.is_empty(), "left running: {left:?}");
    text
}

#[test]
#[ignore = "needs root"]
fn demo_builds_checks_and_removes() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs the demo as root: run it as root"
    );
    let text = run_demo(None);
    assert!(
        text.contains("sandboxes: named network namespaces"),
        "{text}"
    );
    assert!(text.contains("/run/netns/tapnet-"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn demo_runs_rootless_as_an_ordinary_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to start the demo as {USER}: run it as root"
    );
    assert!(
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006),
        "/dev/net/tun is missing or not mode 0666 (.ci/run sets it)"
    );
    let user = User::from_name(USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {USER} (.ci/run creates it)"));
    let text = run_demo(Some(&user));
    assert!(text.contains("sandboxes: rootless"), "{text}");
    assert!(text.contains("/proc/"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn demo_multi_host_runs_rootless_as_an_ordinary_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to start the demo as {USER}: run it as root"
    );
    assert!(
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006),
        "/dev/net/tun is missing or not mode 0666 (.ci/run sets it)"
    );
    let user = User::from_name(USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {USER} (.ci/run creates it)"));
    let name = format!("tn-demo-mh-test-{}", std::process::id());
    let ns = tapnet_engine::sys::netns::NetNsGuard::create(&name).unwrap();
    let up = Command::new("ip")
        .args(["-n", &name, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success(), "ip link set lo up in {name}");
    let text = run_demo_with(Some(&user), &["--multi-host"], Some(ns.path()));
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("loopback addresses 127.0.0.11-13"), "{text}");
    assert_eq!(text.matches("  ok    client (node 3").count(), 3, "{text}");
    assert!(
        text.contains("  ok    web (node 2) -> db (node 1) by name"),
        "{text}"
    );
    assert!(
        text.contains("  ok    stranger (network other) cannot reach web"),
        "{text}"
    );
    assert!(
        text.contains("removed: servers, sandboxes, daemons, namespaces and state"),
        "{text}"
    );
}
