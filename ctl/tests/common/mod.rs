//! Shared harness of the end-to-end tests: a real `tapnet daemon` per test, in its own
//! state directory, driven through the `tapnet` binary and through hand-written HTTP
//! requests on its socket (a test client, to send what the CLI never would).
//!
//! Cleanup is by [`Drop`], so it also runs when a test fails: the daemon is ended by PID
//! (SIGTERM, then SIGKILL), every namespace it made is deleted (read from its state
//! database once it is down, plus every name the test saw), and the state directory goes.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Fails the test, saying why, unless it runs as root with a TUN device: the daemon
/// makes network namespaces and TAP devices. The tests that start one are
/// `#[ignore = "needs root"]`.
fn require_root_and_tun() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces and TAP devices): run it as root"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: load the tun module (modprobe tun) or create the node \
         (mknod /dev/net/tun c 10 200)"
    );
}

/// A `tapnet daemon` child with its own state directory.
pub(crate) struct Daemon {
    pub(crate) dir: PathBuf,
    pub(crate) socket: PathBuf,
    child: Option<Child>,
    /// Every namespace name this test has seen the daemon use.
    seen_netns: Mutex<BTreeSet<String>>,
    starts: u32,
    /// Options of `tapnet daemon` (every start).
    daemon_args: Vec<String>,
}

/// The result of one `tapnet` invocation.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) out: String,
    pub(crate) err: String,
}

/// A raw HTTP answer.
#[derive(Debug)]
pub(crate) struct Http {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Http {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The `message` of a Docker error body.
    pub(crate) fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A sandbox as the test needs it.
#[derive(Clone, Debug)]
pub(crate) struct Sb {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) netns: String,
    /// Network name → (address, interface, gateway).
    pub(crate) nets: Vec<(String, String, String, String)>,
}

impl Sb {
    pub(crate) fn ip(&self, net: &str) -> String {
        self.nets
            .iter()
            .find(|n| n.0 == net)
            .unwrap_or_else(|| panic!("{} is not on {net}: {self:?}", self.name))
            .1
            .clone()
    }

    /// Its IPv4 address on `net`.
    pub(crate) fn ipv4(&self, net: &str) -> std::net::Ipv4Addr {
        self.ip(net).parse().unwrap()
    }

    /// The gateway address of its endpoint on `net`.
    pub(crate) fn gateway(&self, net: &str) -> std::net::Ipv4Addr {
        self.nets
            .iter()
            .find(|n| n.0 == net)
            .unwrap_or_else(|| panic!("{} is not on {net}", self.name))
            .3
            .parse()
            .unwrap()
    }
}

impl Daemon {
    /// Start a daemon in a fresh state directory (as root, with a TUN device).
    pub(crate) fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, &[])
    }

    /// [`Daemon::start`] with options of `tapnet daemon` (`--resolv-conf PATH`).
    pub(crate) fn start_with(tag: &str, daemon_args: &[&str]) -> Daemon {
        static N: AtomicU32 = AtomicU32::new(0);
        require_root_and_tun();
        let dir = std::env::temp_dir().join(format!(
            "tapnet-e2e-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("tapnet.sock");
        let mut d = Daemon {
            dir,
            socket,
            child: None,
            seen_netns: Mutex::new(BTreeSet::new()),
            starts: 0,
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// Start the daemon process (again) on this state directory and wait for its API.
    pub(crate) fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.starts))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tapnet"))
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("daemon")
            .args(&self.daemon_args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tapnet daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&self.socket).is_ok() && self.get("/_ping").status == 200 {
                break;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({st}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon API did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's output so far (every start).
    pub(crate) fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("daemon-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    pub(crate) fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// SIGTERM and wait (SIGKILL after `grace`); returns whether it exited by itself.
    pub(crate) fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        self.remember_sandboxes_quietly();
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        false
    }

    /// SIGKILL, no questions asked.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Restart gracefully: SIGTERM, then start again on the same state.
    pub(crate) fn restart(&mut self) {
        assert!(
            self.stop(Duration::from_secs(10)),
            "daemon did not stop on SIGTERM: {}",
            self.log()
        );
        self.spawn();
    }

    // ----- the CLI -----

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tapnet"));
        c.arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn tapnet(&self, args: &[&str]) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = output_within(&mut self.cmd(args), CMD_LIMIT);
        Run {
            code: status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&stdout).into_owned(),
            err: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// `tapnet ARGS` must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = self.tapnet(args);
        assert_eq!(r.code, 0, "tapnet {args:?} failed: {}{}", r.out, r.err);
        r.out
    }

    /// `tapnet ARGS` must fail with `code`; its stderr.
    pub(crate) fn fails(&self, args: &[&str], code: i32) -> String {
        let r = self.tapnet(args);
        assert_eq!(
            r.code, code,
            "tapnet {args:?}: expected exit {code}: {}{}",
            r.out, r.err
        );
        r.err
    }

    /// `tapnet … inspect NAME` as JSON (the single object).
    pub(crate) fn inspect(&self, kind: &str, name: &str) -> Value {
        let out = self.ok(&[kind, "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0].clone()
    }

    /// Create a sandbox with the CLI (`extra` are more flags) and read it back.
    pub(crate) fn sandbox(&self, name: &str, nets: &[&str], extra: &[&str]) -> Sb {
        let mut args = vec!["sandbox", "create", "--name", name];
        for n in nets {
            args.extend(["--network", n]);
        }
        args.extend(extra);
        let id = self.ok(&args).trim().to_string();
        assert_eq!(id.len(), 64, "sandbox create prints the id: {id:?}");
        let sb = self.sandbox_info(name);
        assert_eq!(sb.id, id);
        sb
    }

    pub(crate) fn sandbox_info(&self, name: &str) -> Sb {
        sb_from_json(&self.inspect("sandbox", name))
    }

    /// Remember the namespaces of every sandbox the daemon knows now (best effort).
    pub(crate) fn remember_sandboxes_quietly(&self) {
        if self.child.is_none() {
            return;
        }
        if let Ok(r) = http_within(
            &self.socket,
            "GET",
            "/sandboxes",
            None,
            Duration::from_secs(10),
        ) {
            if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&r.body) {
                let mut seen = self.seen_netns.lock().unwrap();
                for s in list {
                    if let Some(p) = s["NetnsPath"].as_str() {
                        seen.insert(netns_name(p));
                    }
                }
            }
        }
    }

    pub(crate) fn note_netns(&self, name: &str) {
        self.seen_netns.lock().unwrap().insert(name.to_string());
    }

    // ----- raw HTTP -----

    pub(crate) fn get(&self, path: &str) -> Http {
        self.request("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, body: &str) -> Http {
        self.request("POST", path, Some(body))
    }

    pub(crate) fn delete(&self, path: &str) -> Http {
        self.request("DELETE", path, None)
    }

    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> Http {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// One HTTP/1.1 request on a fresh connection (`Connection: close`).
    pub(crate) fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Http> {
        http(&self.socket, method, path, body)
    }
}

/// How long one command may take before the test calls it hung.
pub(crate) const CMD_LIMIT: Duration = Duration::from_secs(60);

/// Run `cmd` to completion with its output captured; a command still running after
/// `limit` is killed (by its PID) and the test fails, rather than hanging.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// One hand-written HTTP/1.1 request on the unix socket `socket`.
pub(crate) fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Http> {
    http_within(socket, method, path, body, Duration::from_secs(30))
}

/// [`http`] with a read timeout.
pub(crate) fn http_within(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Http> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: tapnet\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone());
    let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut r = rest;
        loop {
            let (len, tail) = r.split_once("\r\n").ok_or_else(bad)?;
            let n = usize::from_str_radix(len.trim(), 16).map_err(|_| bad())?;
            if n == 0 {
                break;
            }
            out.push_str(tail.get(..n).ok_or_else(bad)?);
            r = tail.get(n + 2..).ok_or_else(bad)?;
        }
        out
    } else {
        rest.to_string()
    };
    Ok(Http { status, body })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        // The daemon is down: its database says which namespaces are its own.
        let mut names = self.seen_netns.lock().unwrap().clone();
        let db = self.dir.join("tapnet.db");
        if db.exists() {
            if let Ok(store) = tapnet_ctl::daemon::store::Store::open(&db) {
                if let Ok(snap) = store.load() {
                    names.extend(snap.sandboxes.values().map(|s| s.netns.clone()));
                    names.extend(snap.gone_netns);
                }
            }
        }
        for n in names {
            // The sandbox's resolv.conf directory goes with its namespace.
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&n));
            match tapnet_engine::sys::netns::NetNs::open(&n) {
                Ok(ns) => {
                    let _ = ns.delete();
                }
                // Not a namespace (a half-made one's mount point): remove the file.
                Err(_) => {
                    let path = Path::new("/run/netns").join(&n);
                    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        if std::env::var_os("TAPNET_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `/run/netns/NAME` → `NAME`.
pub(crate) fn netns_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

pub(crate) fn sb_from_json(v: &Value) -> Sb {
    let mut nets = Vec::new();
    if let Some(m) = v["Networks"].as_object() {
        for (name, e) in m {
            nets.push((
                name.clone(),
                e["IPAddress"].as_str().unwrap_or_default().to_string(),
                e["Interface"].as_str().unwrap_or_default().to_string(),
                e["Gateway"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    Sb {
        id: v["Id"].as_str().unwrap_or_default().to_string(),
        name: v["Name"].as_str().unwrap_or_default().to_string(),
        netns: netns_name(v["NetnsPath"].as_str().unwrap_or_default()),
        nets,
    }
}

// ----- inside namespaces -----

/// Run a command inside namespace `ns` (`ip netns exec`).
pub(crate) fn in_ns(ns: &str, cmd: &[&str]) -> Output {
    output_within(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null()),
        CMD_LIMIT,
    )
}

/// Stdout of a command that must succeed inside `ns`.
pub(crate) fn in_ns_ok(ns: &str, cmd: &[&str]) -> String {
    let o = in_ns(ns, cmd);
    assert!(
        o.status.success(),
        "in {ns}: {cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Does `addr` answer ping from inside `ns`? (Two tries, 1 s timeout.)
pub(crate) fn pings(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c", "2", "-W", "1", "-i", "0.2", addr])
        .status
        .success()
}

/// Quick negative check: one echo, 1 s.
pub(crate) fn ping_once(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c", "1", "-W", "1", addr])
        .status
        .success()
}

pub(crate) fn assert_pings(ns: &str, addr: &str) {
    // A fresh interface can take a moment (DAD, first ARP), and a loaded machine
    // longer: rounds for up to 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if pings(ns, addr) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} does not answer ping from {ns}"
        );
    }
}

pub(crate) fn assert_no_ping(ns: &str, addr: &str) {
    assert!(
        !ping_once(ns, addr),
        "{addr} answers ping from {ns}, it must not"
    );
}

/// `ip -o -4 addr` inside `ns`, loopback left out: (ifname, address/prefix) pairs.
pub(crate) fn addrs(ns: &str) -> Vec<(String, String)> {
    in_ns_ok(ns, &["ip", "-o", "-4", "addr"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.to_string(), f.get(3)?.to_string()))
        })
        .filter(|(ifname, _)| ifname != "lo")
        .collect()
}

/// Interface names inside `ns`.
pub(crate) fn links(ns: &str) -> Vec<String> {
    in_ns_ok(ns, &["ip", "-o", "link"])
        .lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim();
            Some(name.split('@').next()?.to_string())
        })
        .collect()
}

/// The `tapnet-*` namespaces holding an interface whose MAC starts with `prefix`
/// (`02:42:` and the first bytes of a test's subnet): a test's own, whatever their name.
pub(crate) fn netns_with_mac(prefix: &str) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return BTreeSet::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tapnet-"))
        .filter(|n| {
            output_within(Command::new("ip").args(["-n", n, "-o", "link"]), CMD_LIMIT)
                .stdout
                .windows(prefix.len())
                .any(|w| w == prefix.as_bytes())
        })
        .collect()
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Docker's MAC for an IPv4 address: 02:42 and its four bytes.
pub(crate) fn mac_for(ip: &str) -> String {
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let o = a.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}
