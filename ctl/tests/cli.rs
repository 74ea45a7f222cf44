//! The `tapnet` binary against the API server and the real daemon core on the in-memory
//! plumbing: every subcommand's output, exit status and error text, without a kernel
//! datapath or root (except `tapnet run` into a sandbox, which joins a network namespace
//! and so needs root: that test is `#[ignore = "needs root"]`).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapnet_ctl::daemon::plumbing::MemoryPlumbing;
use tapnet_ctl::daemon::server::serve;
use tapnet_ctl::daemon::{Daemon, DaemonConfig};

struct Server {
    dir: PathBuf,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start() -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tapnet-ctl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("tapnet.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sock = socket.clone();
        let cfg = DaemonConfig {
            state_dir: dir.join("state"),
        };
        let daemon = Arc::new(Daemon::open(&cfg, Arc::new(MemoryPlumbing::new())).unwrap());
        let thread = std::thread::spawn(move || serve(&sock, daemon, rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            dir,
            socket,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tapnet"));
        c.arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdin(Stdio::null());
        c
    }

    fn tapnet(&self, args: &[&str]) -> (i32, String, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = self.cmd(args).output().unwrap();
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.tapnet(args);
        assert_eq!(code, 0, "tapnet {args:?}: {out}{err}");
        out
    }

    fn fails(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = self.tapnet(args);
        assert_ne!(code, 0, "tapnet {args:?} succeeded: {out}");
        (code, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn network_commands() {
    let s = Server::start();
    let out = s.ok(&["network", "ls"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].ends_with("   bridge    bridge    local"), "{out}");
    assert!(lines[3].ends_with("   none      null      local"), "{out}");

    let id = s.ok(&[
        "network",
        "create",
        "--subnet",
        "10.3.0.0/24",
        "--gateway",
        "10.3.0.254",
        "--label",
        "team=a",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "pets",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64);
    let (code, err) = s.fails(&["network", "create", "pets"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error response from daemon: network with name pets already exists"
    );
    let (_, err) = s.fails(&["network", "create", "--ip-range", "10.0.0.0/24", "x"]);
    assert_eq!(
        err.trim(),
        "every ip-range or gateway must have a corresponding subnet"
    );

    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "label=team=a"]).trim(),
        &id[..12]
    );
    assert_eq!(
        s.ok(&["network", "ls", "-q", "--no-trunc", "--filter", "name=pets"])
            .trim(),
        id
    );
    let out = s.ok(&["network", "ls", "--format", "json", "-f", "name=pets"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["Name"], "pets");
    assert_eq!(v["Labels"], "team=a");
    assert_eq!(v["ID"], &id[..12]);
    let out = s.ok(&["network", "ls", "--format", "{{.Name}}/{{.Driver}}"]);
    assert_eq!(out, "bridge/bridge\nhost/host\nnone/null\npets/bridge\n");
    let (_, err) = s.fails(&["network", "ls", "-f", "bogus=1"]);
    assert_eq!(
        err.trim(),
        "Error response from daemon: invalid filter 'bogus'"
    );

    let out = s.ok(&["network", "inspect", "pets", &id[..4]]);
    assert!(
        out.starts_with("[\n    {\n        \"Name\": \"pets\""),
        "{out}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "10.3.0.254");
    assert_eq!(v[0]["Options"]["com.docker.network.driver.mtu"], "1400");
    assert_eq!(
        s.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.IPAM.Config}}",
            "pets"
        ])
        .trim(),
        r#"pets [{"Gateway":"10.3.0.254","Subnet":"10.3.0.0/24"}]"#
    );
    let (code, out, err) = s.tapnet(&["network", "inspect", "nosuch"]);
    assert_eq!((code, out.as_str()), (1, "[]\n"));
    assert_eq!(
        err.trim(),
        "Error response from daemon: network nosuch not found"
    );

    // connect / disconnect with a sandbox
    let sb = s.ok(&["sandbox", "create", "--name", "web"]);
    assert_eq!(sb.trim().len(), 64);
    s.ok(&[
        "network", "connect", "--ip", "10.3.0.9", "--alias", "w", "pets", "web",
    ]);
    let v: Value = serde_json::from_str(&s.ok(&["sandbox", "inspect", "web"])).unwrap();
    assert_eq!(v[0]["Networks"]["pets"]["IPAddress"], "10.3.0.9");
    assert_eq!(v[0]["Networks"]["pets"]["Aliases"][0], "w");
    let (_, err) = s.fails(&["network", "rm", "pets"]);
    assert!(err.contains("has active endpoints"), "{err}");
    s.ok(&["network", "disconnect", "pets", "web"]);
    let (_, err) = s.fails(&["network", "connect", "pets", "ghost"]);
    assert_eq!(
        err.trim(),
        "Error response from daemon: No such container: ghost"
    );

    // rm: prints what it removed, reports the rest, exit 1; -f ignores missing ones.
    let (code, out, err) = s.tapnet(&["network", "rm", "nosuch", "pets"]);
    assert_eq!((code, out.as_str()), (1, "pets\n"));
    assert_eq!(
        err.trim(),
        "Error response from daemon: network nosuch not found"
    );
    s.ok(&["network", "rm", "-f", "nosuch"]);

    // prune
    s.ok(&["network", "create", "old"]);
    s.ok(&["network", "create", "--label", "keep", "kept"]);
    let mut c = s.cmd(&["network", "prune"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[y/N]"));
    assert_eq!(
        s.ok(&["network", "prune", "-f", "--filter", "label!=keep"]),
        "Deleted Networks:\nold\n\n"
    );
    assert_eq!(
        s.ok(&["network", "prune", "-f"]),
        "Deleted Networks:\nkept\n\n"
    );
    assert_eq!(s.ok(&["network", "prune", "-f"]), "");
    let (_, err) = s.fails(&["network", "prune", "-f", "--filter", "name=x"]);
    assert_eq!(
        err.trim(),
        "Error response from daemon: invalid filter 'name'"
    );
    let (_, err) = s.fails(&["network", "prune", "-f", "--filter", "nonsense"]);
    assert_eq!(err.trim(), "bad format of filter (expected name=value)");
}

#[test]
fn sandbox_and_stats_commands() {
    let s = Server::start();
    s.ok(&["network", "create", "pets"]);
    let id = s.ok(&[
        "sandbox",
        "create",
        "--name",
        "db",
        "--network",
        "pets",
        "--ip",
        "172.18.0.40",
        "--network-alias",
        "database",
    ]);
    let id = id.trim();
    s.ok(&[
        "sandbox",
        "create",
        "--name",
        "web",
        "--network",
        "pets",
        "--network",
        "bridge",
    ]);
    let out = s.ok(&["sandbox", "ls"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SANDBOX ID     NAME      NETWORKS      ADDRESSES"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}   db        pets          172.18.0.40/16",
            &id[..12]
        )),
        "{out}"
    );
    assert!(
        lines[2].contains("web       bridge,pets   172.17.0.2/16,172.18.0.2/16"),
        "{out}"
    );
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]).lines().count(), 2);
    let out = s.ok(&["sandbox", "ls", "--format", "json"]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["Name"], "db");
    assert!(v["NetnsPath"].as_str().unwrap().starts_with("/proc/"));
    let v: Value = serde_json::from_str(&s.ok(&["sandbox", "inspect", &id[..8]])).unwrap();
    assert_eq!(v[0]["Networks"]["pets"]["Aliases"][0], "database");
    assert_eq!(v[0]["Networks"]["pets"]["Interface"], "eth0");
    let (_, err) = s.fails(&["sandbox", "create", "--name", "db"]);
    assert!(
        err.starts_with("Error response from daemon: Conflict."),
        "{err}"
    );

    let out = s.ok(&["stats"]);
    assert!(out.starts_with("PORT "), "{out}");
    assert!(out.contains(" db "), "{out}");
    // Each gateway's DNS server has a row.
    assert!(
        out.contains("\nDNS       QUERIES   ANSWERED   NXDOMAIN"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&s.ok(&["stats", "--format", "json"])).unwrap();
    assert_eq!(v["Ports"].as_array().unwrap().len(), 3);
    assert!(v["Dns"].as_array().is_some_and(|d| !d.is_empty()), "{v}");

    let (code, out, err) = s.tapnet(&["sandbox", "rm", "db", "nosuch", "web"]);
    assert_eq!((code, out.as_str()), (1, "db\nweb\n"));
    assert_eq!(
        err.trim(),
        "Error response from daemon: No such container: nosuch"
    );
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]), "");
}

#[test]
fn daemon_not_running_is_explained() {
    let dir = std::env::temp_dir().join(format!("tapnet-ctl-none-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tapnet"))
        .args(["--state-dir", dir.to_str().unwrap(), "network", "ls"])
        .env_remove("TAPNET_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("unix://{}/tapnet.sock", dir.display())),
        "{err}"
    );
    assert!(err.contains("Start it with `tapnet daemon`"), "{err}");
}

#[test]
fn run_host_network_runs_here() {
    let s = Server::start();
    let (code, out, err) = s.tapnet(&[
        "run",
        "--network",
        "host",
        "-p",
        "8080:80",
        "--",
        "sh",
        "-c",
        "echo hi; exit 5",
    ]);
    assert_eq!((code, out.as_str()), (5, "hi\n"));
    assert_eq!(
        err.trim(),
        "WARNING: Published ports are discarded when using host network mode"
    );
    let (code, _, err) = s.tapnet(&["run", "--network", "host", "--network", "pets", "true"]);
    assert_eq!(code, 125, "{err}");
    // A bad -p is refused before anything is created, with Docker's text.
    let (code, _, err) = s.tapnet(&["run", "-p", "80/sctp", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid proto: sctp"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn run_in_a_sandbox_returns_the_status_and_cleans_up() {
    let s = Server::start();
    let (code, out, err) = s.tapnet(&["run", "--name", "job", "--", "sh", "-c", "echo in; exit 3"]);
    assert_eq!((code, out.as_str()), (3, "in\n"), "{err}");
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]), "");
    let (code, _, err) = s.tapnet(&["run", "--", "/nonexistent/cmd"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]), "");
    let (code, _, err) = s.tapnet(&["run", "--network", "nosuch", "true"]);
    assert_eq!(code, 125);
    assert_eq!(
        err.trim(),
        "tapnet: Error response from daemon: network nosuch not found"
    );

    // SIGTERM to tapnet reaches the command; the sandbox goes with it.
    let mut child = s
        .cmd(&["run", "--name", "sleeper", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.ok(&["sandbox", "ls", "-q"]).is_empty() {
        assert!(Instant::now() < deadline, "sandbox never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]), "");
}

#[test]
fn sandbox_create_publish_and_port() {
    let s = Server::start();
    let (code, _, err) = s.tapnet(&[
        "sandbox",
        "create",
        "--name",
        "api",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5353:53/udp",
    ]);
    assert_eq!(code, 0, "{err}");
    // No host address: both families, as on a host with IPv6.
    let (code, out, _) = s.tapnet(&["port", "api"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "53/udp -> 127.0.0.1:5353\n80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n"
        )
    );
    let (code, out, _) = s.tapnet(&["port", "api", "80/tcp"]);
    assert_eq!((code, out.as_str()), (0, "0.0.0.0:8080\n[::]:8080\n"));
    let (code, _, err) = s.tapnet(&["port", "api", "7890/udp"]);
    assert_eq!(
        (code, err.trim()),
        (1, "Error: No public port '7890/udp' published for api")
    );
}
