//! Named network namespaces, compatible with iproute2's `ip netns`.
//!
//! A namespace created here is bind-mounted at `/run/netns/NAME`, exactly where
//! `ip netns add NAME` puts it, so `ip netns exec NAME …`, `nsenter --net=/run/netns/NAME`
//! and `podman --network ns:/run/netns/NAME` can join it.
//!
//! Nothing here changes the network namespace of the calling thread. A namespace is
//! entered only on a short-lived helper thread ([`NetNs::run`]); what that thread creates
//! (sockets, TAP fds, netlink sockets) stays bound to the namespace and can be used from
//! any thread afterwards.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named network namespaces are bind-mounted (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest namespace name accepted: a file name on Linux.
const MAX_NAME_LEN: usize = 255;

/// Errors of namespace setup and teardown.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name cannot be a file name under `/run/netns`.
    #[error(
        "invalid network namespace name {name:?}: use 1 to 255 bytes without '/' or NUL, \
         and not '.' or '..'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// `/run/netns` could not be created or made a shared mount point.
    #[error(
        "could not prepare {NETNS_RUN_DIR} for namespace mounts (mkdir, mount --make-rshared): \
         run as root (CAP_SYS_ADMIN)"
    )]
    RunDir {
        /// The failing system call's error.
        #[source]
        source: io::Error,
    },
    /// A namespace (or a stale file) of this name already exists.
    #[error(
        "network namespace {name} already exists: pick another name or remove it \
         (ip netns delete {name})"
    )]
    Exists {
        /// The namespace name.
        name: String,
    },
    /// No namespace of this name exists.
    #[error("network namespace {name} does not exist (no {NETNS_RUN_DIR}/{name})")]
    NotFound {
        /// The namespace name.
        name: String,
    },
    /// Creating the namespace or bind-mounting it failed.
    #[error(
        "could not create network namespace {name}: unshare(CLONE_NEWNET) or the bind mount \
         failed; run as root (CAP_SYS_ADMIN)"
    )]
    Create {
        /// The namespace name.
        name: String,
        /// The failing system call's error.
        #[source]
        source: io::Error,
    },
    /// Opening the namespace file failed.
    #[error("could not open network namespace file {}", path.display())]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The error of `open`.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a mounted network namespace.
    #[error(
        "{} is not a mounted network namespace (a stale file?): remove it with \
         `ip netns delete {name}`",
        path.display()
    )]
    NotNetns {
        /// The namespace name.
        name: String,
        /// The namespace file.
        path: PathBuf,
    },
    /// `setns` into the namespace failed.
    #[error("could not enter network namespace {name} (setns): run as root (CAP_SYS_ADMIN)")]
    Enter {
        /// The namespace name.
        name: String,
        /// The error of `setns`.
        #[source]
        source: io::Error,
    },
    /// The helper thread that enters the namespace could not be started.
    #[error("could not spawn a thread to enter a network namespace")]
    Thread {
        /// The error of `spawn`.
        #[source]
        source: io::Error,
    },
    /// Unmounting or unlinking the namespace file failed.
    #[error(
        "could not delete network namespace {name} (umount, unlink {}): run as root; \
         `ip netns delete {name}` does the same",
        path.display()
    )]
    Delete {
        /// The namespace name.
        name: String,
        /// The namespace file.
        path: PathBuf,
        /// The failing system call's error.
        #[source]
        source: io::Error,
    },
}

/// A named network namespace, bind-mounted at `/run/netns/NAME`.
///
/// Dropping a `NetNs` only closes its file; the namespace lives on until
/// [`NetNs::delete`] (or `ip netns delete`). Wrap it in a [`NetNsGuard`] to delete it on
/// drop.
pub struct NetNs {
    name: String,
    path: PathBuf,
    file: File,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetNs")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("fd", &self.file.as_raw_fd())
            .finish()
    }
}

/// Serializes the preparation of `/run/netns` within this process, so that concurrent
/// creators don't stack several self bind mounts on it.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

impl NetNs {
    /// Creates the network namespace `name`, like `ip netns add NAME`.
    ///
    /// The namespace is made on a fresh thread (`unshare(CLONE_NEWNET)`) whose
    /// `/proc/thread-self/ns/net` is bind-mounted onto `/run/netns/NAME`; the calling
    /// thread's namespace never changes. The new namespace has only `lo`, down.
    pub fn create(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        prepare_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);

        // The mount point: an empty file, like iproute2 makes it.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::Exists {
                    name: name.to_owned(),
                });
            }
            Err(source) => {
                return Err(NetnsError::Create {
                    name: name.to_owned(),
                    source,
                });
            }
        }

        let mounted = std::thread::scope(|s| {
            let target = path.as_path();
            let handle = std::thread::Builder::new()
                .name("tapnet-netns".into())
                .spawn_scoped(s, move || -> Result<(), Errno> {
                    // Only this short-lived thread moves into the new namespace.
                    unshare(CloneFlags::CLONE_NEWNET)?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                });
            match handle {
                Ok(h) => match h.join() {
                    Ok(r) => r.map_err(io::Error::from),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(e) => Err(e),
            }
        });
        if let Err(source) = mounted {
            let _ = fs::remove_file(&path);
            return Err(NetnsError::Create {
                name: name.to_owned(),
                source,
            });
        }

        match open_ns_file(name, &path) {
            Ok(file) => Ok(NetNs {
                name: name.to_owned(),
                path,
                file,
            }),
            Err(e) => {
                let _ = umount2(&path, MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Opens the existing namespace `/run/netns/NAME` (made by [`NetNs::create`] or
    /// `ip netns add`).
    pub fn open(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let file = open_ns_file(name, &path)?;
        Ok(NetNs {
            name: name.to_owned(),
            path,
            file,
        })
    }

    /// Opens the network namespace at `path`, any file that refers to one (a bind mount
    /// a container runtime made, `/proc/PID/ns/net`): the namespace of a container that
    /// a CNI runtime hands over. Its name is the path. [`NetNs::delete`] must not be
    /// called on it: the namespace is its owner's.
    pub fn open_path(path: &Path) -> Result<NetNs, NetnsError> {
        let name = path.display().to_string();
        let file = open_ns_file(&name, path)?;
        Ok(NetNs {
            name,
            path: path.to_owned(),
            file,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An fd referring to the namespace (for `setns`, `IFLA_NET_NS_FD`, …).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on a new scoped thread that has entered this namespace, and returns its
    /// result.
    ///
    /// Sockets, TAP devices and netlink sockets opened by `f` belong to this namespace
    /// and keep belonging to it when used from other threads later. A panic in `f` is
    /// propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("tapnet-netns".into())
                .spawn_scoped(s, move || -> Result<T, NetnsError> {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                        name: self.name.clone(),
                        source: e.into(),
                    })?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread { source })?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Deletes the namespace, like `ip netns delete NAME`: detaches the bind mount and
    /// removes the file. The namespace itself disappears once no process, fd or mount
    /// refers to it any more (interfaces in it are then destroyed by the kernel).
    pub fn delete(self) -> Result<(), NetnsError> {
        self.remove()
    }

    /// The body of [`NetNs::delete`], usable from `Drop`. Already-removed is success.
    fn remove(&self) -> Result<(), NetnsError> {
        let fail = |source: io::Error| NetnsError::Delete {
            name: self.name.clone(),
            path: self.path.clone(),
            source,
        };
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (already unmounted); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(fail(e.into())),
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}

/// A [`NetNs`] that is deleted when the guard is dropped, also on panic. Tests and the
/// perf suite use it so that no namespace outlives them.
#[derive(Debug)]
pub struct NetNsGuard(pub NetNs);

impl NetNsGuard {
    /// Creates the namespace `name` (see [`NetNs::create`]) and guards it.
    pub fn create(name: &str) -> Result<NetNsGuard, NetnsError> {
        NetNs::create(name).map(NetNsGuard)
    }
}

impl Deref for NetNsGuard {
    type Target = NetNs;

    fn deref(&self) -> &NetNs {
        &self.0
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove() {
            tracing::warn!(error = %e, "leaking network namespace {}", self.0.name);
        }
    }
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name.contains(['/', '\0']);
    if bad {
        return Err(NetnsError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Makes `/run/netns` exist and be a shared mount point, as iproute2 does, so that a
/// namespace mounted there is visible in every mount namespace that sees `/run/netns`.
fn prepare_run_dir() -> Result<(), NetnsError> {
    let _lock = RUN_DIR_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let err = |source: io::Error| NetnsError::RunDir { source };
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(err)?;
    let mut made_mount = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet; bind it onto itself once and retry.
            Err(Errno::EINVAL) if !made_mount => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| err(e.into()))?;
                made_mount = true;
            }
            Err(e) => return Err(err(e.into())),
        }
    }
}

/// Opens a namespace file and checks that it really is a mounted network namespace.
fn open_ns_file(name: &str, path: &Path) -> Result<File, NetnsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetnsError::NotFound {
                name: name.to_owned(),
            });
        }
        Err(source) => {
            return Err(NetnsError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value; the fd is open
    // for the duration of the call.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if nstype != libc::CLONE_NEWNET {
        return Err(NetnsError::NotNetns {
            name: name.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(file)
}

/// Helpers shared by the root tests of `tap`, `netns`, `netlink` and `hostnet`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::NetNsGuard;

    /// A throwaway namespace with a name unique to this process and call, deleted on
    /// drop. Fails the test, saying why, when not run as root.
    pub(crate) fn scratch_ns(tag: &str) -> NetNsGuard {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create a network \
             namespace: run it as root"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tapnet-test-{}-{n}-{tag}", std::process::id());
        NetNsGuard::create(&name).expect("create scratch namespace")
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::test_support::scratch_ns;
    use super::*;

    fn inode_of(path: &str) -> u64 {
        fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    }

    #[test]
    fn invalid_names_are_rejected() {
        for name in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            assert!(
                matches!(NetNs::create(name), Err(NetnsError::InvalidName { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn create_run_open_delete() {
        let host_ino = inode_of("/proc/thread-self/ns/net");
        let ns = scratch_ns("life");
        assert!(ns.path().starts_with(NETNS_RUN_DIR));
        // The caller's namespace is unchanged.
        assert_eq!(inode_of("/proc/thread-self/ns/net"), host_ino);

        let ns_ino = fs::metadata(ns.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let inside = ns.run(|| inode_of("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, host_ino);
        assert_eq!(inside, ns_ino.unwrap());

        // A socket made inside stays inside, whichever thread uses it later.
        let sock = ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
        // SAFETY: SIOCGSKNS takes no argument and returns a new fd or -1.
        let sk_ns = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGSKNS as _) };
        assert!(sk_ns >= 0, "SIOCGSKNS: {}", io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        let sk_ns = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sk_ns) };
        let st = nix::sys::stat::fstat(&sk_ns).unwrap();
        assert_eq!(st.st_ino, inside);

        let again = NetNs::open(ns.name()).unwrap();
        assert_eq!(again.path(), ns.path());
        assert!(again.fd().as_raw_fd() >= 0);
        assert!(matches!(
            NetNs::create(ns.name()),
            Err(NetnsError::Exists { .. })
        ));

        let path = ns.path().to_owned();
        drop(again);
        drop(ns);
        assert!(!path.exists(), "guard removed {}", path.display());
    }

    #[test]
    #[ignore = "needs root"]
    fn run_propagates_panics_and_values() {
        let ns = scratch_ns("panic");
        assert_eq!(ns.run(|| 7).unwrap(), 7);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.run(|| panic!("boom")).unwrap();
        }));
        assert!(r.is_err());
        // The guard still cleans up after the panic.
    }

    #[test]
    fn open_missing() {
        let name = format!("tapnet-test-{}-missing", std::process::id());
        assert!(matches!(
            NetNs::open(&name),
            Err(NetnsError::NotFound { .. })
        ));
    }

    #[test]
    #[ignore = "needs root"]
    fn open_stale() {
        // A plain file where a namespace should be mounted.
        prepare_run_dir().unwrap();
        let stale = format!("tapnet-test-{}-stale", std::process::id());
        let path = Path::new(NETNS_RUN_DIR).join(&stale);
        fs::write(&path, b"").unwrap();
        let res = NetNs::open(&stale);
        fs::remove_file(&path).unwrap();
        let err = res.unwrap_err();
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
        assert!(err.to_string().contains("ip netns delete"));
    }

    #[test]
    #[ignore = "needs root"]
    fn delete_explicitly() {
        let name = format!("tapnet-test-{}-del", std::process::id());
        let ns = NetNs::create(&name).unwrap();
        let path = ns.path().to_owned();
        ns.delete().unwrap();
        assert!(!path.exists());
        assert!(matches!(
            NetNs::open(&name),
            Err(NetnsError::NotFound { .. })
        ));
    }
}
