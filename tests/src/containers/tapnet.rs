//! A `tapnet daemon` process for the runtimes' tests: its state in a directory of its
//! own, optionally with the Docker plugin; restarted on the same state when a test asks;
//! stopped by its PID (SIGTERM, SIGKILL after 10 s) and its directory removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::multihost::{output_within, tapnet_bin};

/// A `tapnet daemon` of the test's (see the module).
pub struct TapnetDaemon {
    dir: PathBuf,
    docker_plugin: bool,
    child: Child,
}

impl TapnetDaemon {
    /// Start it; `docker_plugin`: with the Docker plugin on [`TapnetDaemon::plugin_socket`].
    pub fn start(name: &str, docker_plugin: bool) -> TapnetDaemon {
        let dir = std::env::temp_dir().join(format!("tapnet-plugin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(&dir, docker_plugin);
        let t = TapnetDaemon {
            dir,
            docker_plugin,
            child,
        };
        t.wait_ready();
        t
    }

    fn spawn(dir: &std::path::Path, docker_plugin: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(tapnet_bin());
        cmd.args(["daemon", "--state-dir"]).arg(dir.join("state"));
        if docker_plugin {
            cmd.arg("--docker-plugin").arg(dir.join("plugin.sock"));
        }
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tapnet daemon")
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while !((self.plugin_socket().exists() || !self.docker_plugin) && self.socket().exists()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tapnet daemon did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop it (SIGTERM, by its PID) and start it again on the same state; its log
    /// goes on in the same file.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_file(self.plugin_socket());
        self.child = Self::spawn(&self.dir, self.docker_plugin);
        self.wait_ready();
    }

    /// SIGTERM, then SIGKILL after 10 s; reaps the process.
    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The Docker plugin's socket.
    pub fn plugin_socket(&self) -> PathBuf {
        self.dir.join("plugin.sock")
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("state/tapnet.sock")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// `tapnet ARGS` against this daemon; stdout, or a panic with stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tapnet {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `tapnet ARGS` against this daemon, bounded in time.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(tapnet_bin());
        c.arg("--state-dir").arg(self.dir.join("state")).args(args);
        output_within(&mut c, Duration::from_secs(60))
    }

    /// tapnet's sandboxes, as `sandbox ls` JSON.
    pub fn sandboxes(&self) -> Vec<Value> {
        let out = self.ok(&["sandbox", "ls", "--format", "json"]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for TapnetDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
