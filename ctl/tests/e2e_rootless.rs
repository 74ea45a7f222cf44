//! End to end, rootless: `tapnet daemon` and `tapnet run` as the unprivileged user
//! `tapnet-test` (which `.ci/run` creates), with `/dev/net/tun` world-accessible as
//! distributions ship it. The test (root: `#[ignore = "needs root"]`) copies the binary
//! where that user can run it, starts every process with that user's uid and gid, and
//! removes everything it started by PID, also when it fails.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use serde_json::Value;

const USER: &str = "tapnet-test";

/// Run `f` (a spawn of the copied binary) again while it fails with ETXTBSY: another
/// test thread may have forked while the copy was open for writing, and its child holds
/// that descriptor until it execs, which on a loaded machine can take seconds. Bounded:
/// 1,000 tries, 10 ms apart.
fn retry_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    for _ in 0..1000 {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
    f()
}

/// Everything one test started: a directory the user owns (binary, state), processes.
struct Rig {
    dir: PathBuf,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    daemon: Option<Child>,
    /// Background `tapnet run`s and the commands they started (by PID).
    others: Vec<Child>,
    pids: Vec<i32>,
    /// Start time of each of `pids` when it was recorded: a PID reused by another
    /// test's process after ours exited is never killed.
    starts: Vec<(i32, u64)>,
}

/// Field 22 (start time) of `/proc/PID/stat`, if the process exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The test user; fails the test, saying why, when this is not root or what the user
/// needs is missing.
fn test_user() -> User {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to start processes as {USER}: run it as root"
    );
    assert!(
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006),
        "/dev/net/tun is missing or not mode 0666 (.ci/run sets it)"
    );
    User::from_name(USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {USER} (.ci/run creates it)"))
}

impl Rig {
    fn new(tag: &str, user: &User) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("tapnet-rootless-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tapnet");
        std::fs::copy(env!("CARGO_BIN_EXE_tapnet"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
        let mut rig = Rig {
            dir,
            bin,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            daemon: None,
            others: Vec::new(),
            pids: Vec::new(),
            starts: Vec::new(),
        };
        rig.start_daemon();
        rig
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `tapnet ARGS` as the test user.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("TAPNET_STATE_DIR", self.state())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        retry_busy(|| self.cmd(args).output()).unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "tapnet {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn start_daemon(&mut self) {
        let child = retry_busy(|| {
            self.cmd(&["daemon"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .unwrap();
        self.daemon = Some(child);
        let socket = self.state().join("tapnet.sock");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the daemon with SIGKILL, as a crash would.
    fn crash_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Start `tapnet run ARGS` in the background; wait until sandbox `name` has its
    /// interfaces; returns its inspect view.
    fn run_bg(&mut self, name: &str, args: &[&str]) -> Value {
        let mut all = vec!["run", "--name", name];
        all.extend_from_slice(args);
        let child = retry_busy(|| self.cmd(&all).stdout(Stdio::null()).spawn()).unwrap();
        self.others.push(child);
        let t0 = Instant::now();
        loop {
            let o = self.run(&["sandbox", "inspect", name]);
            if o.status.success() {
                let v: Value = serde_json::from_slice(&o.stdout).unwrap();
                let sb = v[0].clone();
                // Until `name` exists, `inspect b` finds a sandbox whose id starts with
                // "b", as Docker's lookup does (name, then id prefix).
                let named = sb["Name"].as_str() == Some(name);
                let path = sb["NetnsPath"].as_str().unwrap_or_default().to_string();
                // Owned by the command (not `tapnet run`) once the TAPs arrived.
                let pid: i32 = path
                    .strip_prefix("/proc/")
                    .and_then(|p| p.strip_suffix("/ns/net"))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                if named && pid != 0 && self.others.iter().all(|c| c.id() as i32 != pid) {
                    self.pids.push(pid);
                    if let Some(t) = start_time(pid) {
                        self.starts.push((pid, t));
                    }
                    return sb;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "sandbox {name} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for &(p, t) in &self.starts {
            if start_time(p) == Some(t) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        for c in &mut self.others {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = kill(Pid::from_raw(d.id() as i32), Signal::SIGTERM);
            let t0 = Instant::now();
            while d.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gone(pid: i32) -> bool {
    // A zombie still has its /proc entry; its state is `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: i32) {
    let t0 = Instant::now();
    while !gone(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "process {pid} is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip_on(sb: &Value, net: &str) -> String {
    sb["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sandbox_names(rig: &Rig) -> Vec<String> {
    // One JSON object per line, as `docker ps --format json` prints.
    rig.ok(&["sandbox", "ls", "--format", "json"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["Name"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A TCP request from a new rootless sandbox on `net` to the demo's db server at `ip`
/// (by address or name: bash's /dev/tcp; a few tries while the server starts listening).
fn ask_db(rig: &Rig, net: &str, ip: &str) -> Output {
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do \
           if exec 3<>/dev/tcp/{ip}/7000; then echo max >&3; read -t 3 line <&3; echo \"$line\"; exit 0; fi; \
           sleep 0.3; \
         done 2>/dev/null; exit 1"
    );
    rig.run(&[
        "run",
        "--network",
        net,
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ])
}

#[test]
#[ignore = "needs root"]
fn rootless_runs_on_a_network_reach_each_other_and_no_one_else() {
    let user = test_user();
    let mut rig = Rig::new("reach", &user);
    // A daemon without root makes no namespaces itself.
    let o = rig.run(&["sandbox", "create", "--name", "x"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("without root"),
        "{o:?}"
    );

    rig.ok(&["network", "create", "red"]);
    rig.ok(&["network", "create", "blue"]);
    let bin = rig.bin.display().to_string();
    let srv = rig.run_bg(
        "srv",
        &[
            "--network",
            "red",
            "--",
            &bin,
            "demo-server",
            "db",
            "--listen",
            "0.0.0.0:7000",
        ],
    );
    let ip = ip_on(&srv, "red");

    // Same network: TCP and ping.
    let o = ask_db(&rig, "red", &ip);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "dog, 7 years, likes the beach"
    );
    let o = rig.run(&[
        "run",
        "--network",
        "red",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &ip,
    ]);
    assert!(o.status.success(), "{o:?}");
    // The command keeps the user's identity.
    let id = rig.ok(&["run", "--network", "red", "--", "id", "-u"]);
    assert_eq!(id.trim(), user.uid.to_string());

    // Another network: neither.
    let o = rig.run(&[
        "run",
        "--network",
        "blue",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        &ip,
    ]);
    assert!(!o.status.success(), "{o:?}");
    let o = ask_db(&rig, "blue", &ip);
    assert!(!o.status.success(), "{o:?}");

    // The command's status comes back; its sandbox is gone with it.
    let o = rig.run(&["run", "--network", "red", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(sandbox_names(&rig), vec!["srv".to_string()]);

    // SIGTERM to `tapnet run` reaches the server; the sandbox is removed.
    let run = rig.others.pop().unwrap();
    let mut run = run;
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    let st = run.wait().unwrap();
    assert_eq!(st.code(), Some(143));
    for &p in &rig.pids {
        wait_gone(p);
    }
    assert!(sandbox_names(&rig).is_empty());
    rig.ok(&["network", "rm", "red", "blue"]);

    let dir = rig.dir.clone();
    let daemon = rig.daemon.as_ref().map(|d| d.id() as i32).unwrap();
    drop(rig);
    assert!(gone(daemon));
    assert!(!dir.exists());
}

#[test]
#[ignore = "needs root"]
fn a_restarted_daemon_removes_rootless_sandboxes_whose_process_is_gone() {
    let user = test_user();
    let mut rig = Rig::new("restart", &user);
    let a = rig.run_bg("a", &["--", "sleep", "60"]);
    let b = rig.run_bg("b", &["--", "sleep", "60"]);
    let owner = |sb: &Value| -> i32 {
        sb["NetnsPath"].as_str().unwrap()["/proc/".len()..]
            .trim_end_matches("/ns/net")
            .parse()
            .unwrap()
    };
    let (pa, pb) = (owner(&a), owner(&b));
    // The daemon dies; so do a's command and its `tapnet run` (which cannot clean up).
    rig.crash_daemon();
    let mut run_a = rig.others.remove(0);
    let _ = run_a.kill();
    let _ = run_a.wait();
    kill(Pid::from_raw(pa), Signal::SIGKILL).unwrap();
    wait_gone(pa);
    rig.start_daemon();
    assert_eq!(sandbox_names(&rig), vec!["b".to_string()]);
    // a's address is free again: the next sandbox on bridge gets it.
    let c = rig.run_bg("c", &["--", "sleep", "60"]);
    assert_eq!(ip_on(&c, "bridge"), ip_on(&a, "bridge"));
    assert!(!gone(pb));
}

#[test]
#[ignore = "needs root"]
fn rootless_sandboxes_reach_the_host_and_publish_ports() {
    let user = test_user();
    let mut rig = Rig::new("nat", &user);
    rig.ok(&[
        "network",
        "create",
        "--subnet",
        "10.249.1.0/24",
        "-o",
        "tapnet.host_loopback=true",
        "out",
    ]);
    // Egress: a server on the host's loopback, reached through the gateway address by
    // an unprivileged daemon's host sockets.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(format!("host got {line}").as_bytes())
            .unwrap();
    });
    let script = format!(
        "exec 3<>/dev/tcp/10.249.1.1/{port} && echo hello >&3 && read -t 5 line <&3 && echo \"$line\""
    );
    let o = rig.run(&[
        "run",
        "--network",
        "out",
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ]);
    server.join().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "host got hello");

    // A published port of a rootless sandbox, from the host's loopback.
    let (_, _, host_port) = published_db(&mut rig, "out");
    let answer = ask_published(host_port, Duration::from_secs(10));
    assert_eq!(answer.trim(), "dog, 7 years, likes the beach");
}

/// Start the demo's db server as rootless sandbox `db` on `net`, its port 7000 published
/// on a free port of 127.0.0.1: its inspect view, `tapnet port`'s line and the host port.
fn published_db(rig: &mut Rig, net: &str) -> (Value, String, u16) {
    let bin = rig.bin.display().to_string();
    let db = rig.run_bg(
        "db",
        &[
            "--network",
            net,
            "-p",
            "127.0.0.1::7000",
            "--",
            &bin,
            "demo-server",
            "db",
            "--listen",
            "0.0.0.0:7000",
        ],
    );
    let mapping = rig.ok(&["port", "db", "7000"]);
    let host_port: u16 = mapping
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("tapnet port: {mapping:?}"));
    (db, mapping, host_port)
}

/// Ask the demo's db server behind host port `port` on 127.0.0.1, for up to `limit`.
fn ask_published(port: u16, limit: Duration) -> String {
    use std::io::{Read, Write};
    let mut answer = String::new();
    let t0 = Instant::now();
    while answer.is_empty() && t0.elapsed() < limit {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"max\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.read_to_string(&mut answer);
        }
        if answer.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    answer
}

#[test]
#[ignore = "needs root"]
fn a_restarted_daemon_gets_the_taps_of_live_rootless_sandboxes_again() {
    let user = test_user();
    let mut rig = Rig::new("again", &user);
    rig.ok(&["network", "create", "--subnet", "10.249.2.0/24", "back"]);
    let (db, mapping, host_port) = published_db(&mut rig, "back");
    let want = "dog, 7 years, likes the beach";
    assert_eq!(
        ask_published(host_port, Duration::from_secs(10)).trim(),
        want
    );
    // The daemon crashes, and the sandbox's process lives on: its keeper holds the
    // TAPs, and gives them to the next daemon.
    rig.crash_daemon();
    rig.start_daemon();
    assert_eq!(
        rig.ok(&["port", "db", "7000"]),
        mapping,
        "the same host port"
    );
    assert_eq!(
        ask_published(host_port, Duration::from_secs(20)).trim(),
        want,
        "the published port after the restart"
    );
    // Sandbox to sandbox too: a new rootless sandbox reaches db's address.
    let o = ask_db(&rig, "back", &ip_on(&db, "back"));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want);
}

#[test]
#[ignore = "needs root"]
fn a_rootless_sandbox_whose_process_is_killed_goes_with_its_port() {
    let user = test_user();
    let mut rig = Rig::new("reap", &user);
    let (db, _, host_port) = published_db(&mut rig, "bridge");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", host_port)).is_err(),
        "the daemon holds the published port"
    );
    // `tapnet run` is killed first, so it cannot remove the sandbox itself; then the
    // sandbox's process (its keeper, which the command dies with).
    let mut run = rig.others.remove(0);
    let _ = run.kill();
    let _ = run.wait();
    let keeper: i32 = db["NetnsPath"].as_str().unwrap()["/proc/".len()..]
        .trim_end_matches("/ns/net")
        .parse()
        .unwrap();
    kill(Pid::from_raw(keeper), Signal::SIGKILL).unwrap();
    wait_gone(keeper);
    // The daemon notices on its own (no restart, no other sandbox): within its reap
    // interval the sandbox is gone and the host port is free again.
    let t0 = Instant::now();
    loop {
        let names = sandbox_names(&rig);
        let free = std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok();
        if names.is_empty() && free {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not reaped after 10 s: sandboxes {names:?}, port {host_port} free: {free}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root"]
fn rootless_sandboxes_find_each_other_by_name() {
    let user = test_user();
    let mut rig = Rig::new("dns", &user);
    rig.ok(&["network", "create", "pets"]);
    let bin = rig.bin.display().to_string();
    let db = rig.run_bg(
        "db",
        &[
            "--network",
            "pets",
            "--network-alias",
            "database",
            "--",
            &bin,
            "demo-server",
            "db",
            "--listen",
            "0.0.0.0:7000",
        ],
    );
    let ip = ip_on(&db, "pets");
    let gw = db["Networks"]["pets"]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    // The command's /etc/resolv.conf is the sandbox's: its gateway answers.
    let conf = rig.ok(&["run", "--network", "pets", "--", "cat", "/etc/resolv.conf"]);
    assert!(conf.contains(&format!("nameserver {gw}")), "{conf}");
    for name in ["db", "database", "db.pets"] {
        let out = rig.ok(&["run", "--network", "pets", "--", "getent", "hosts", name]);
        assert_eq!(
            out.split_whitespace().next(),
            Some(ip.as_str()),
            "{name}: {out}"
        );
    }
    // A TCP client connecting by name.
    let o = ask_db(&rig, "pets", "db");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "dog, 7 years, likes the beach"
    );
    // The host's /etc/resolv.conf is untouched.
    assert!(
        !std::fs::read_to_string("/etc/resolv.conf")
            .unwrap()
            .contains(&format!("nameserver {gw}"))
    );
}
