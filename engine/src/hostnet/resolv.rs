//! The host thread's side of DNS: the host's resolvers, from its `resolv.conf` (read
//! again when the file changes), and the random seeds of the networks' servers.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tapnet_nat::dns::ResolvConf;

/// How often the file's metadata is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// What tells one version of the file from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    ino: u64,
    size: u64,
}

/// The host's `resolv.conf`, as the host thread follows it.
pub(super) struct ResolvWatch {
    path: PathBuf,
    /// The resolvers' port (53 but in tests).
    port: u16,
    /// The stamp of the version read last (`None`: no file).
    stamp: Option<Stamp>,
    /// When the metadata was looked at last (`None`: never).
    checked: Option<Duration>,
    /// The resolvers it names now.
    upstreams: Vec<SocketAddr>,
}

impl ResolvWatch {
    /// Follow the file at `path`; its resolvers listen on `port`.
    pub(super) fn new(path: PathBuf, port: u16) -> ResolvWatch {
        ResolvWatch {
            path,
            port,
            stamp: None,
            checked: None,
            upstreams: Vec::new(),
        }
    }

    /// The resolvers named now.
    pub(super) fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Look at the file if a second has passed since the last look (`now` on the host
    /// thread's clock): the new resolvers if it changed.
    pub(super) fn check(&mut self, now: Duration) -> Option<&[SocketAddr]> {
        if self
            .checked
            .is_some_and(|at| now.saturating_sub(at) < RECHECK)
        {
            return None;
        }
        let first = self.checked.is_none();
        self.checked = Some(now);
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            modified: m.modified().ok(),
            ino: m.ino(),
            size: m.size(),
        });
        if stamp == self.stamp && !first {
            return None;
        }
        self.stamp = stamp;
        let upstreams: Vec<SocketAddr> = match std::fs::read_to_string(&self.path) {
            Ok(text) => ResolvConf::parse(&text)
                .upstreams()
                .into_iter()
                .map(|mut a| {
                    a.set_port(self.port);
                    a
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, path = %self.path.display(),
                    "cannot read the host's resolv.conf: no resolvers");
                Vec::new()
            }
        };
        if upstreams == self.upstreams && !first {
            return None;
        }
        tracing::debug!(?upstreams, "the host's resolvers");
        self.upstreams = upstreams;
        Some(&self.upstreams)
    }
}

/// A random seed for a DNS server's query ids: from the kernel (`getrandom(2)`), or,
/// should that fail, from the standard library's randomly keyed hasher.
pub(super) fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for writes of its length for the whole call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return u64::from_ne_bytes(buf);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_are_read_again_when_the_file_changes_once_a_second_at_most() {
        let dir = std::env::temp_dir().join(format!("tapnet-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let mut w = ResolvWatch::new(path.clone(), 5353);
        let a: SocketAddr = "192.0.2.1:5353".parse().unwrap();
        assert_eq!(w.check(Duration::ZERO), Some(&[a][..]));
        // Replaced (a new inode, another size): not looked at within the second.
        let tmp = dir.join("resolv.conf.new");
        std::fs::write(&tmp, "nameserver 192.0.2.22\nnameserver 192.0.2.3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(w.check(Duration::from_millis(500)), None);
        let b: SocketAddr = "192.0.2.22:5353".parse().unwrap();
        let c: SocketAddr = "192.0.2.3:5353".parse().unwrap();
        assert_eq!(w.check(Duration::from_millis(1000)), Some(&[b, c][..]));
        assert_eq!(w.check(Duration::from_millis(2500)), None, "unchanged");
        // Gone: no resolvers.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(w.check(Duration::from_millis(3500)), Some(&[][..]));
        assert_eq!(w.upstreams(), &[] as &[SocketAddr]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(random_seed(), random_seed());
    }
}
