//! The state directory: where the database and the API socket live. The socket's
//! directory decides who can stand up a socket the daemon's clients talk to (and hand a
//! sandbox's TAP fds to), so a directory another user owns or can write is refused, on
//! both sides: the daemon ([`prepare`], from `Daemon::open`) and the command line
//! ([`check_client`]).
//!
//! - A missing directory is made with mode [`STATE_DIR_MODE`] (0700); its parents as
//!   usual.
//! - An existing one must be a directory (not a symbolic link), owned by the daemon's
//!   user, and writable by no one else (no group or other write bit). Readable is
//!   allowed: directories made by earlier versions are 0755.
//! - The client accepts a directory owned by itself or by root (a root daemon's
//!   `/run/tapnet`), writable by no one else.
//! - The database is made with mode [`DB_MODE`] (0600); one found wider is narrowed
//!   (`store::Store::open`).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The mode a missing state directory is made with.
pub const STATE_DIR_MODE: u32 = 0o700;

/// The mode of the state database.
pub const DB_MODE: u32 = 0o600;

/// How users are told to get out of a refusal.
const CHOOSE_ANOTHER: &str =
    "choose another directory (--state-dir, $TAPNET_STATE_DIR or $XDG_RUNTIME_DIR)";

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It could not be made or examined.
    #[error("cannot create state directory {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Someone else could put a socket or a database in it.
    #[error(
        "refusing state directory {}: it is {found}, so another user could put a socket or a \
         database in it; {remedy}",
        path.display()
    )]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What was found: its owner, its mode, or that it is a link.
        found: String,
        /// What to do.
        remedy: String,
    },
}

/// Who may own a directory: the daemon's user only, or (for a client) root too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owners {
    Me,
    MeOrRoot,
}

/// Make the daemon's state directory `dir` if missing (mode 0700), or check that an
/// existing one is this user's alone to write.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    let create = |source| StateDirError::Create {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(create)?;
            }
            match std::fs::DirBuilder::new().mode(STATE_DIR_MODE).create(dir) {
                // Made by someone else in between: it is checked below like any other.
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(create(e)),
                _ => {}
            }
        }
        Err(e) => return Err(create(e)),
        Ok(_) => {}
    }
    check(dir, Owners::Me)
}

/// Check, for the command line, the state directory whose socket it is about to talk
/// to: owned by this user or root, writable by no one else. A missing one passes (the
/// connection then fails with its own message).
pub fn check_client(dir: &Path) -> Result<(), StateDirError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => check(dir, Owners::MeOrRoot),
    }
}

fn check(dir: &Path, owners: Owners) -> Result<(), StateDirError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| StateDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let unsafe_dir = |found: String, remedy: String| StateDirError::Unsafe {
        path: dir.to_path_buf(),
        found,
        remedy,
    };
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(
            "a symbolic link".into(),
            format!("remove it, or {CHOOSE_ANOTHER}"),
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir(
            format!("not a directory (mode {mode:04o})"),
            format!("remove it, or {CHOOSE_ANOTHER}"),
        ));
    }
    let owner_ok = meta.uid() == me || (owners == Owners::MeOrRoot && meta.uid() == 0);
    if !owner_ok {
        let whom = match owners {
            Owners::Me => format!("this user (uid {me})"),
            Owners::MeOrRoot => format!("this user (uid {me}) or root"),
        };
        return Err(unsafe_dir(
            format!(
                "owned by uid {} (mode {mode:04o}), not by {whom}",
                meta.uid()
            ),
            format!("remove it, or {CHOOSE_ANOTHER}"),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(
            format!(
                "writable by others (owner uid {}, mode {mode:04o})",
                meta.uid()
            ),
            format!("remove it or make it private (chmod 700), or {CHOOSE_ANOTHER}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tapnet-sdc-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn a_client_accepts_its_own_or_roots_private_dir_and_a_missing_one() {
        let p = temp("mine");
        assert!(check_client(&p).is_ok(), "missing");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_client(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = check_client(&p).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn a_client_refuses_a_dir_of_another_user() {
        let p = temp("theirs");
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        let e = check_client(&p).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&p);
        assert!(
            e.contains("owned by uid 65534 (mode 0755), not by this user (uid 0) or root"),
            "{e}"
        );
    }
}
