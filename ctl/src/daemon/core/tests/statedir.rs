//! The state directory: made private when missing, refused when another user could
//! have put a socket or a database in it; the database is the daemon's user's only.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::daemon::chain;

/// A directory path of this test's own under the temp dir, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        let p = std::env::temp_dir().join(format!("tapnet-sd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

fn try_open(dir: &Path) -> Result<Daemon, DaemonError> {
    let cfg = DaemonConfig {
        state_dir: dir.to_path_buf(),
    };
    Daemon::open(&cfg, Arc::new(MemoryPlumbing::new()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_missing_state_dir_is_made_private_and_the_database_too() {
    let t = TempPath::new("fresh");
    let dir = t.0.join("state");
    let d = try_open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700, "state dir");
    assert_eq!(mode(&dir.join("tapnet.db")), 0o600, "database");
    drop(d);
    // A database left readable by others is made private again.
    std::fs::set_permissions(
        dir.join("tapnet.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    drop(try_open(&dir).unwrap());
    assert_eq!(mode(&dir.join("tapnet.db")), 0o600, "database tightened");
}

#[test]
fn a_state_dir_others_can_write_is_refused() {
    let t = TempPath::new("open");
    std::fs::create_dir(&t.0).unwrap();
    std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = try_open(&t.0).err().expect("refused");
    let text = chain(&e);
    let uid = nix::unistd::geteuid();
    assert_eq!(
        text,
        format!(
            "state: refusing state directory {}: it is writable by others (owner uid {uid}, \
             mode 0777), so another user could put a socket or a database in it; remove it \
             or make it private (chmod 700), or choose another directory (--state-dir, \
             $TAPNET_STATE_DIR or $XDG_RUNTIME_DIR)",
            t.0.display()
        )
    );
    assert!(!t.0.join("tapnet.db").exists(), "nothing made in it");
}

#[test]
fn a_state_dir_that_is_a_symlink_is_refused() {
    let t = TempPath::new("link");
    let target = TempPath::new("target");
    std::fs::create_dir(&target.0).unwrap();
    std::os::unix::fs::symlink(&target.0, &t.0).unwrap();
    let text = chain(&try_open(&t.0).err().expect("refused"));
    assert!(text.contains("it is a symbolic link"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn a_state_dir_of_another_user_is_refused() {
    let t = TempPath::new("theirs");
    std::fs::create_dir(&t.0).unwrap();
    std::os::unix::fs::chown(&t.0, Some(65534), Some(65534)).unwrap();
    assert_eq!(std::fs::metadata(&t.0).unwrap().uid(), 65534);
    let text = chain(&try_open(&t.0).err().expect("refused"));
    let uid = nix::unistd::geteuid();
    assert_eq!(
        text,
        format!(
            "state: refusing state directory {}: it is owned by uid 65534 (mode 0755), not by \
             this user (uid {uid}), so another user could put a socket or a database in it; \
             remove it, or choose another directory (--state-dir, $TAPNET_STATE_DIR or \
             $XDG_RUNTIME_DIR)",
            t.0.display()
        )
    );
}
