//! The container-runtime harnesses of [`tapnet_tests::containers`] prove themselves: a
//! private dockerd starts, imports the busybox image, runs containers on the `none`
//! network and restarts with a container that comes back; podman runs a container on
//! its private configuration; and once each harness is dropped, none of the daemons,
//! containerds, shims or conmons it started is left, nothing is mounted under its
//! directory, and the directory is gone.
//!
//! A network plugin that dockerd finds through [`Dockerd::plugin_spec`] serves a
//! network's creation and removal (a stand-in answering the protocol's calls).
//!
//! Root only: each test is `#[ignore = "needs root"]`; without root, or without dockerd
//! or podman installed, it says so and passes (fails under CI, which installs them and
//! runs as root). The times of a start, an import and a run are printed (`--nocapture`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tapnet_tests::containers::{
    Dockerd, DockerdOptions, PLUGIN_SPEC_DIR, Podman, alive, busybox_image, cgroup_dirs,
    dockerd_bin, mounts_under, podman_bin, processes_of,
};
use tapnet_tests::multihost::eventually;

/// The image the tests import.
const IMAGE: &str = "tapnet-busybox:harness";

/// A container's command that ends on SIGTERM within a second (a shell as PID 1 has no
/// default action for it).
const IDLE: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

/// Whether the test runs as root (the runtimes need it); if not, it says it is skipped,
/// or fails under CI, which runs as root.
fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root (dockerd, podman), and CI runs as root"
        );
        eprintln!("{test}: skipped, it needs root (dockerd, podman)");
    }
    root
}

/// Whether `bin` is installed; if not, the test says it is skipped, or fails under CI.
fn have(test: &str, bin: &Path) -> bool {
    let found = if bin.is_absolute() {
        bin.exists()
    } else {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {}", bin.display())])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs {bin:?}, which CI installs"
        );
        eprintln!("{test}: skipped, {bin:?} is not installed");
    }
    found
}

/// The file name of `pid`'s executable.
fn exe_name(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Whether a process running `exe` is one of the runtimes' daemons.
fn is_runtime(exe: &str) -> bool {
    ["dockerd", "containerd", "conmon"].contains(&exe) || exe.starts_with("containerd-shim")
}

/// The runtime processes (daemons, shims, conmon) working for the harness in `dir`.
fn runtime_processes(dir: &Path) -> Vec<(u32, String)> {
    processes_of(dir, &[])
        .into_iter()
        .map(|p| (p.pid, p.exe_name()))
        .filter(|(_, exe)| is_runtime(exe))
        .collect()
}

/// After a harness was dropped: none of the runtime processes `seen` while it lived is
/// left (a PID reused by another program does not count), no process names `dir`,
/// nothing is mounted under it, it is gone, and so is cgroup `cgroup` (if any).
fn assert_cleaned(dir: &Path, seen: &[(u32, String)], cgroup: Option<&str>) {
    for (pid, exe) in seen {
        assert!(
            !(alive(*pid) && exe_name(*pid).as_deref() == Some(exe)),
            "{exe} ({pid}) is still running"
        );
    }
    let left = processes_of(dir, &[]);
    assert!(left.is_empty(), "processes naming {dir:?} left: {left:?}");
    let mounts = mounts_under(dir);
    assert!(mounts.is_empty(), "still mounted under {dir:?}: {mounts:?}");
    assert!(!dir.exists(), "{dir:?} is still there");
    if let Some(cg) = cgroup {
        let dirs = cgroup_dirs(cg);
        assert!(dirs.is_empty(), "cgroup {cg} left: {dirs:?}");
    }
}

/// Notes the runtime processes of `dir` in `seen`.
fn note(seen: &mut Vec<(u32, String)>, dir: &Path) {
    for p in runtime_processes(dir) {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
}

/// The round trip of a dockerd harness made by `start`: image, runs, a restart with a
/// container that comes back, cleanup.
fn dockerd_round_trip(test: &str, start: fn(&str) -> Result<Dockerd, String>) {
    if !root_or_skip(test) || !have(test, &dockerd_bin()) {
        return;
    }
    let t = Instant::now();
    let mut d = start("harness").unwrap_or_else(|e| panic!("{test}: start dockerd: {e}"));
    eprintln!(
        "{test}: dockerd up in {:?} (storage driver {}, containerd {:?})",
        t.elapsed(),
        d.storage_driver(),
        d.containerd_pid()
    );
    let dir: PathBuf = d.dir().to_path_buf();
    let cgroup = d.cgroup_parent().to_string();
    let mut seen = vec![(d.pid().expect("dockerd runs"), "dockerd".to_string())];

    let t = Instant::now();
    let id = busybox_image(&d, IMAGE).unwrap_or_else(|e| panic!("{test}: import: {e}"));
    eprintln!("{test}: image {id} imported in {:?}", t.elapsed());

    let t = Instant::now();
    let hi = d.docker_ok(&["run", "--rm", "--network", "none", IMAGE, "echo", "hi"]);
    eprintln!("{test}: docker run --rm echo hi in {:?}", t.elapsed());
    assert_eq!(hi.as_deref(), Ok("hi"));
    let ping = d
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            "127.0.0.1",
        ])
        .unwrap_or_else(|e| panic!("{test}: ping in a container: {e}"));
    assert!(ping.contains("1 packets received"), "{ping}");

    // A container on a restart policy: it runs again once dockerd is back.
    let run = [
        "run",
        "-d",
        "--name",
        "keep",
        "--restart",
        "always",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        IDLE,
    ];
    d.docker_ok(&run)
        .unwrap_or_else(|e| panic!("{test}: run keep: {e}"));
    note(&mut seen, &dir);
    let exes: Vec<&str> = seen.iter().map(|(_, e)| e.as_str()).collect();
    assert!(exes.contains(&"containerd"), "no containerd seen: {seen:?}");
    assert!(
        exes.iter().any(|e| e.starts_with("containerd-shim")),
        "no shim seen: {seen:?}"
    );
    assert!(
        !cgroup_dirs(&cgroup).is_empty(),
        "keep is not under cgroup {cgroup}"
    );

    let old = d.pid();
    let t = Instant::now();
    d.restart()
        .unwrap_or_else(|e| panic!("{test}: restart: {e}"));
    eprintln!("{test}: dockerd restarted in {:?}", t.elapsed());
    assert_ne!(d.pid(), old, "a new dockerd");
    eventually("keep runs again", Duration::from_secs(30), || {
        match d.docker_ok(&["inspect", "-f", "{{.State.Running}}", "keep"]) {
            Ok(s) if s == "true" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    note(&mut seen, &dir);
    let t = Instant::now();
    let hi = d.docker_ok(&["run", "--rm", "--network", "none", IMAGE, "echo", "hi"]);
    eprintln!("{test}: docker run after the restart in {:?}", t.elapsed());
    assert_eq!(hi.as_deref(), Ok("hi"));

    let t = Instant::now();
    drop(d);
    eprintln!("{test}: dropped in {:?}", t.elapsed());
    assert_cleaned(&dir, &seen, Some(&cgroup));
}

#[test]
#[ignore = "needs root"]
fn dockerd_runs_restarts_and_cleans_up() {
    dockerd_round_trip("dockerd_runs_restarts_and_cleans_up", Dockerd::start);
}

#[test]
#[ignore = "needs root"]
fn dockerd_on_its_own_containerd() {
    dockerd_round_trip(
        "dockerd_on_its_own_containerd",
        Dockerd::start_with_containerd,
    );
}

/// With `--live-restore`, a container keeps running, the same process, while dockerd
/// restarts.
#[test]
#[ignore = "needs root"]
fn dockerd_live_restore_keeps_containers() {
    let test = "dockerd_live_restore_keeps_containers";
    if !root_or_skip(test) || !have(test, &dockerd_bin()) {
        return;
    }
    let opts = DockerdOptions {
        args: vec!["--live-restore".to_string()],
        ..DockerdOptions::default()
    };
    let mut d = Dockerd::start_with("live", &opts).unwrap_or_else(|e| panic!("{test}: start: {e}"));
    let dir = d.dir().to_path_buf();
    let cgroup = d.cgroup_parent().to_string();
    let mut seen = vec![(d.pid().expect("dockerd runs"), "dockerd".to_string())];
    busybox_image(&d, IMAGE).unwrap_or_else(|e| panic!("{test}: import: {e}"));
    let run = [
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        IDLE,
    ];
    d.docker_ok(&run)
        .unwrap_or_else(|e| panic!("{test}: run keep: {e}"));
    let pid =
        |d: &Dockerd| d.docker_ok(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", "keep"]);
    let before = pid(&d).unwrap_or_else(|e| panic!("{test}: inspect: {e}"));
    assert!(before.starts_with("true "), "{before}");
    note(&mut seen, &dir);
    let t = Instant::now();
    d.restart()
        .unwrap_or_else(|e| panic!("{test}: restart: {e}"));
    eprintln!("{test}: dockerd restarted in {:?}", t.elapsed());
    assert_eq!(pid(&d), Ok(before), "keep ran on through the restart");
    note(&mut seen, &dir);
    drop(d);
    assert_cleaned(&dir, &seen, Some(&cgroup));
}

/// dockerd killed (SIGKILL) with a container running comes back on the same roots, and
/// killed again, the harness still ends what it left: its containerd, the shim, the
/// container's processes, their mounts.
#[test]
#[ignore = "needs root"]
fn dockerd_killed_is_cleaned_up() {
    let test = "dockerd_killed_is_cleaned_up";
    if !root_or_skip(test) || !have(test, &dockerd_bin()) {
        return;
    }
    let mut d = Dockerd::start("killed").unwrap_or_else(|e| panic!("{test}: start: {e}"));
    let dir = d.dir().to_path_buf();
    let cgroup = d.cgroup_parent().to_string();
    let mut seen = vec![(d.pid().expect("dockerd runs"), "dockerd".to_string())];
    busybox_image(&d, IMAGE).unwrap_or_else(|e| panic!("{test}: import: {e}"));
    let run = [
        "run",
        "-d",
        "--name",
        "keep",
        "--restart",
        "always",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        IDLE,
    ];
    d.docker_ok(&run)
        .unwrap_or_else(|e| panic!("{test}: run keep: {e}"));
    note(&mut seen, &dir);
    d.kill9();
    let t = Instant::now();
    d.restart()
        .unwrap_or_else(|e| panic!("{test}: start after SIGKILL: {e}"));
    eprintln!("{test}: dockerd up after SIGKILL in {:?}", t.elapsed());
    eventually("keep runs", Duration::from_secs(30), || {
        match d.docker_ok(&["inspect", "-f", "{{.State.Running}}", "keep"]) {
            Ok(s) if s == "true" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    note(&mut seen, &dir);
    d.kill9();
    let left = runtime_processes(&dir);
    assert!(
        left.iter().any(|(_, e)| e.starts_with("containerd-shim")),
        "the shim outlives dockerd: {left:?}"
    );
    assert!(
        !mounts_under(&dir).is_empty(),
        "the container's mounts stay"
    );
    note(&mut seen, &dir);
    drop(d);
    assert_cleaned(&dir, &seen, Some(&cgroup));
}

#[test]
#[ignore = "needs root"]
fn podman_runs_and_cleans_up() {
    let test = "podman_runs_and_cleans_up";
    if !root_or_skip(test) || !have(test, &podman_bin()) {
        return;
    }
    let t = Instant::now();
    let p = Podman::new("harness").unwrap_or_else(|e| panic!("{test}: podman: {e}"));
    eprintln!(
        "{test}: podman set up in {:?} (storage driver {})",
        t.elapsed(),
        p.storage_driver()
    );
    let dir = p.dir().to_path_buf();
    assert!(p.cni_bin_dir().is_dir() && p.cni_conf_dir().is_dir());

    let t = Instant::now();
    let id = p
        .import(IMAGE)
        .unwrap_or_else(|e| panic!("{test}: import: {e}"));
    eprintln!("{test}: image {id} imported in {:?}", t.elapsed());

    let t = Instant::now();
    let hi = p.podman_ok(&["run", "--rm", "--network", "none", IMAGE, "echo", "hi"]);
    eprintln!("{test}: podman run --rm echo hi in {:?}", t.elapsed());
    assert_eq!(hi.as_deref(), Ok("hi"));

    // A container left running: Drop removes it and its conmon.
    p.podman_ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        IDLE,
    ])
    .unwrap_or_else(|e| panic!("{test}: run keep: {e}"));
    let mut seen = Vec::new();
    note(&mut seen, &dir);
    assert!(
        seen.iter().any(|(_, e)| e == "conmon"),
        "no conmon seen: {seen:?}"
    );

    let t = Instant::now();
    drop(p);
    eprintln!("{test}: dropped in {:?}", t.elapsed());
    assert_cleaned(&dir, &seen, None);
}

/// A stand-in network plugin on a unix socket: answers each call of Docker's remote
/// network driver protocol with success (an empty object), and records the calls.
struct FakePlugin {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePlugin {
    fn start() -> FakePlugin {
        let dir = std::env::temp_dir().join(format!("tn-fakeplugin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("the plugin's directory");
        let listener = UnixListener::bind(dir.join("p.sock")).expect("bind the plugin socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, calls2) = (stop.clone(), calls.clone());
        let thread = std::thread::spawn(move || {
            // Until stopped, and 120 s at most.
            let end = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let calls = calls2.clone();
                        std::thread::spawn(move || serve_plugin(conn, &calls));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakePlugin {
            dir,
            stop,
            calls,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.join("p.sock").display())
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves one connection of dockerd's plugin client (keep-alive: requests until EOF,
/// 10 s idle at most).
fn serve_plugin(conn: UnixStream, calls: &std::sync::Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut w = conn.try_clone().expect("a second handle");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let answer = match path.as_str() {
            "/Plugin.Activate" => r#"{"Implements":["NetworkDriver"]}"#,
            "/NetworkDriver.GetCapabilities" => r#"{"Scope":"local"}"#,
            _ => "{}",
        };
        calls.lock().unwrap().push(path);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\n\
             Content-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// dockerd finds a network plugin by the spec file [`Dockerd::plugin_spec`] writes, and
/// the spec goes with its guard.
#[test]
#[ignore = "needs root"]
fn dockerd_finds_a_plugin_by_its_spec() {
    let test = "dockerd_finds_a_plugin_by_its_spec";
    if !root_or_skip(test) || !have(test, &dockerd_bin()) {
        return;
    }
    let plugin = FakePlugin::start();
    let name = format!("tn-fake-{}", std::process::id());
    let spec_dir_existed = Path::new(PLUGIN_SPEC_DIR).exists();
    let d = Dockerd::start("plugin").unwrap_or_else(|e| panic!("{test}: start: {e}"));
    let spec = Dockerd::plugin_spec(&name, &plugin.url());
    let text = std::fs::read_to_string(spec.path()).expect("the spec file");
    assert_eq!(text.trim(), plugin.url());
    d.docker_ok(&["network", "create", "-d", &name, "fakenet"])
        .unwrap_or_else(|e| panic!("{test}: network create on the plugin: {e}"));
    let driver = d.docker_ok(&["network", "inspect", "-f", "{{.Driver}}", "fakenet"]);
    assert_eq!(driver.as_deref(), Ok(name.as_str()));
    d.docker_ok(&["network", "rm", "fakenet"])
        .unwrap_or_else(|e| panic!("{test}: network rm: {e}"));
    let calls = plugin.calls();
    for call in [
        "/Plugin.Activate",
        "/NetworkDriver.CreateNetwork",
        "/NetworkDriver.DeleteNetwork",
    ] {
        assert!(calls.iter().any(|c| c == call), "no {call}: {calls:?}");
    }
    let path = spec.path().to_path_buf();
    drop(spec);
    assert!(!path.exists(), "{path:?} stays");
    assert_eq!(Path::new(PLUGIN_SPEC_DIR).exists(), spec_dir_existed);
    drop(d);
}
