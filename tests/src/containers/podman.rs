//! Podman on a private configuration and storage ([`Podman`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::image::{IMPORT_CHANGE, busybox_tar};
use super::sys::{
    HostGuard, binary, fresh_dir, last_line, ok_stdout, overlay_works, run_within, sweep,
    unmount_under,
};
use crate::multihost::CMD_LIMIT;

/// The podman binary.
pub fn podman_bin() -> PathBuf {
    binary(&["/usr/bin/podman"], "podman")
}

/// Podman (root only) with everything of its under a fresh directory
/// `<tmp>/tn-podman-<name>-<pid>-<n>`, so that none of the machine's podman state is
/// read or touched: `containers.conf` and `storage.conf` there (given by
/// `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`; `TMPDIR` is `tmp/` there), storage
/// in `root/` (graphroot) and `runroot/`, the engine's state, locks (`lock_type =
/// "file"`, not the machine's `/dev/shm/libpod_lock`), events log and volumes under it
/// too. The OCI runtime is runc, the cgroup manager `cgroupfs` (no systemd), the network
/// backend CNI: networks are the conflists in [`Podman::cni_conf_dir`], their plugins
/// looked up in [`Podman::cni_bin_dir`], then `/usr/lib/cni`. Storage driver: `overlay`
/// when an overlay mount works in the directory and podman agrees, else `vfs`.
///
/// Outside of the directory, podman as root still writes its blob-info cache
/// (`/var/lib/containers/cache`, on import) and runc its state (`/run/runc/<id>`, while a
/// container exists); the harnesses remove those when the last of them goes, if they
/// did not exist before the first. A CNI plugin's own state (host-local's
/// `/var/lib/cni/networks`, unless its `dataDir` says otherwise) is the test's.
///
/// [`Drop`] removes every pod and container (`-f`, no stop timeout), ends any process
/// whose command line still names the directory (conmon, `podman container cleanup`)
/// and their descendants by PID, unmounts what is mounted under the directory and
/// removes it.
pub struct Podman {
    name: String,
    dir: PathBuf,
    driver: &'static str,
    _host: HostGuard,
}

impl Podman {
    /// Sets podman up (see [`Podman`]); `podman info` answers. `name`: 1 to 20 of
    /// `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Podman, String> {
        let host = HostGuard::acquire();
        let dir = fresh_dir("podman", name)?;
        // From here on, Drop cleans up whatever fails.
        let mut p = Podman {
            name: name.to_string(),
            dir,
            driver: "vfs",
            _host: host,
        };
        for sub in ["cni-bin", "cni-conf", "root", "runroot", "tmp"] {
            let d = p.dir.join(sub);
            std::fs::create_dir(&d).map_err(|e| format!("create {d:?}: {e}"))?;
        }
        let q = |sub: &str| format!("{:?}", p.dir.join(sub).to_string_lossy());
        let conf = format!(
            "[containers]\ndefault_ulimits = []\nlog_driver = \"k8s-file\"\n\n\
             [network]\nnetwork_backend = \"cni\"\n\
             cni_plugin_dirs = [{}, \"/usr/lib/cni\"]\nnetwork_config_dir = {}\n\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\nevents_logfile_path = {}\ntmp_dir = {}\n\
             static_dir = {}\nvolume_path = {}\nlock_type = \"file\"\n",
            q("cni-bin"),
            q("cni-conf"),
            q("events.log"),
            q("tmp"),
            q("root/libpod"),
            q("root/volumes"),
        );
        std::fs::write(p.dir.join("containers.conf"), conf)
            .map_err(|e| format!("write containers.conf: {e}"))?;
        if overlay_works(&p.dir) {
            p.driver = "overlay";
        }
        p.write_storage_conf()?;
        let info = ["info", "--format", "{{.Store.GraphDriverName}}"];
        match p.podman_ok(&info) {
            Ok(_) => Ok(p),
            Err(e) if p.driver == "overlay" => {
                let root = p.dir.join("root");
                unmount_under(&root);
                let _ = std::fs::remove_dir_all(&root);
                std::fs::create_dir(&root).map_err(|e| format!("create {root:?}: {e}"))?;
                p.driver = "vfs";
                p.write_storage_conf()?;
                p.podman_ok(&info)
                    .map_err(|e2| format!("{e}\nand with vfs: {e2}"))?;
                Ok(p)
            }
            Err(e) => Err(e),
        }
    }

    fn write_storage_conf(&self) -> Result<(), String> {
        let conf = format!(
            "[storage]\ndriver = \"{}\"\ngraphroot = {:?}\nrunroot = {:?}\n",
            self.driver,
            self.dir.join("root").to_string_lossy(),
            self.dir.join("runroot").to_string_lossy(),
        );
        std::fs::write(self.dir.join("storage.conf"), conf)
            .map_err(|e| format!("write storage.conf: {e}"))
    }

    /// A `podman` command on this configuration (the environment set, remote-connection
    /// settings removed): add the arguments, then spawn it as needed.
    pub fn command(&self) -> Command {
        let mut c = Command::new(podman_bin());
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("TMPDIR", self.dir.join("tmp"));
        for v in [
            "CONTAINERS_CONF_OVERRIDE",
            "CONTAINER_HOST",
            "CONTAINER_CONNECTION",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// `podman ARGS`, to completion; panics (the test fails) if it takes over
    /// [`CMD_LIMIT`].
    pub fn podman(&self, args: &[&str]) -> Output {
        run_within(self.command().args(args), CMD_LIMIT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `podman ARGS`: its trimmed stdout if it succeeded, else an error with its stderr
    /// (or that it took over [`CMD_LIMIT`]).
    pub fn podman_ok(&self, args: &[&str]) -> Result<String, String> {
        ok_stdout(
            &format!("podman {}", args.join(" ")),
            run_within(self.command().args(args), CMD_LIMIT),
        )
    }

    /// Imports the busybox root file system ([`super::busybox_tar`]) as image `tag`
    /// (`localhost/<tag>` unless it names a registry), with command `sh`; its id.
    pub fn import(&self, tag: &str) -> Result<String, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let tar = self
            .dir
            .join(format!("busybox-{}.tar", N.fetch_add(1, Ordering::Relaxed)));
        let imported = busybox_tar(&tar).and_then(|()| {
            let tar = tar.to_string_lossy();
            last_line(self.podman_ok(&["import", "--change", IMPORT_CHANGE, &tar, tag]))
        });
        let _ = std::fs::remove_file(&tar);
        imported
    }

    /// Where podman looks for CNI plugins first: a test puts its plugin (or a symlink to
    /// it) here.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }

    /// Podman's network configuration directory: a test puts its `<net>.conflist` here.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni-conf")
    }

    /// The harness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding everything of this podman.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage driver in use: `overlay` or `vfs`.
    pub fn storage_driver(&self) -> &str {
        self.driver
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let limit = Duration::from_secs(60);
        let _ = run_within(self.command().args(["pod", "rm", "-af", "-t", "0"]), limit);
        let _ = run_within(self.command().args(["rm", "-af", "-t", "0"]), limit);
        let left = sweep(&self.dir, &[], Duration::from_secs(5));
        if !left.is_empty() {
            eprintln!("Podman {}: cleanup left {left:?}", self.name);
        }
    }
}
