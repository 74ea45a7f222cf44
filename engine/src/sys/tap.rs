//! TAP devices on `/dev/net/tun`, with virtio-net headers, offloads and multiple queues.
//!
//! A TAP is opened `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (plus `IFF_MULTI_QUEUE` for more
//! than one queue) and told with `TUNSETOFFLOAD` that we accept partial checksums and TSO
//! superframes, so a container's TCP hands the engine up to 64 KiB per read (see
//! docs/architecture.md, "Why it is built this way"). Every frame read or written then starts with a 12-byte
//! virtio-net header (`virtio_net_hdr_v1`, the mergeable-rx-buffer layout; `num_buffers`
//! is ignored by TAP).
//!
//! A TAP can also be adopted from an fd another process opened (the rootless sandbox
//! passes it over SCM_RIGHTS). Such an fd is checked to be the TUN/TAP character device
//! (10:200) before any ioctl is issued on it (another driver could give the ioctl numbers
//! another meaning), and `TUNGETIFF` then tells what it is.
//!
//! The ioctls and flags are those of `linux/if_tun.h`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::sys::netns::{NetNs, NetnsError};

/// Length of the virtio-net header on our TAPs: `virtio_net_hdr_v1` (12 bytes), the
/// layout with `num_buffers`, which TAP neither sets nor reads.
pub const VNET_HDR_LEN: usize = 12;

/// Most queues a multi-queue TAP may have (`MAX_TAP_QUEUES` in the kernel).
pub const MAX_QUEUES: usize = 256;

/// The TUN/TAP character device.
const TUN_PATH: &str = "/dev/net/tun";

/// Major and minor number of the TUN/TAP character device (`MISC_MAJOR`, `TUN_MINOR` in
/// Linux `include/linux/miscdevice.h`): the only device [`Tap::adopt`] issues ioctls on.
pub const TUN_DEVICE: (u32, u32) = (10, 200);

/// Offloads a TAP accepts from the kernel (`TUNSETOFFLOAD`): frames the kernel hands us
/// may have a partial checksum (`csum`) or be TCP superframes (`tso4`, `tso6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offloads {
    /// `TUN_F_CSUM`: partial checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub csum: bool,
    /// `TUN_F_TSO4`: TCP over IPv4 segmentation offload. Requires `csum`.
    pub tso4: bool,
    /// `TUN_F_TSO6`: TCP over IPv6 segmentation offload. Requires `csum`.
    pub tso6: bool,
}

impl Offloads {
    /// No offloads: every frame is a complete, checksummed Ethernet frame.
    pub const NONE: Offloads = Offloads {
        csum: false,
        tso4: false,
        tso6: false,
    };

    /// The `TUN_F_*` bits for these offloads.
    fn bits(self) -> libc::c_uint {
        let mut bits = 0;
        if self.csum {
            bits |= libc::TUN_F_CSUM;
        }
        if self.tso4 {
            bits |= libc::TUN_F_TSO4;
        }
        if self.tso6 {
            bits |= libc::TUN_F_TSO6;
        }
        bits
    }
}

impl Default for Offloads {
    fn default() -> Self {
        Offloads {
            csum: true,
            tso4: true,
            tso6: true,
        }
    }
}

/// How to create a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name, at most 15 bytes; empty lets the kernel pick `tap%d`.
    pub name: String,
    /// Prefix every frame with a 12-byte virtio-net header (`IFF_VNET_HDR`). Offloads
    /// need it; without it they are off.
    pub vnet_hdr: bool,
    /// Offloads to ask for; what the kernel accepted is [`Tap::offloads`].
    pub offloads: Offloads,
    /// Number of queues (fds); more than one sets `IFF_MULTI_QUEUE`.
    pub queues: usize,
    /// Keep the interface after the last fd closes (`TUNSETPERSIST`).
    pub persist: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            name: String::new(),
            vnet_hdr: true,
            offloads: Offloads::default(),
            queues: 1,
            persist: false,
        }
    }
}

/// Errors of TAP setup. The datapath calls ([`Tap::recv_vectored`],
/// [`Tap::send_vectored`]) return plain `io::Error`s.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` does not exist.
    #[error(
        "{TUN_PATH} missing: load the tun module (modprobe tun) or create the node \
         (mknod {TUN_PATH} c 10 200)"
    )]
    TunMissing {
        /// The error of `open`.
        #[source]
        source: io::Error,
    },
    /// `/dev/net/tun` exists but may not be opened.
    #[error(
        "no permission to open {TUN_PATH}: run as root or in a user namespace you own, \
         and make the node mode 0666"
    )]
    TunPermission {
        /// The error of `open`.
        #[source]
        source: io::Error,
    },
    /// `/dev/net/tun` could not be opened for another reason.
    #[error("could not open {TUN_PATH}")]
    OpenTun {
        /// The error of `open`.
        #[source]
        source: io::Error,
    },
    /// The interface name is too long or contains forbidden bytes.
    #[error(
        "invalid TAP name {name:?}: use at most 15 bytes without '/', ':', whitespace or NUL \
         (or \"\" to let the kernel pick)"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The queue count is 0 or too large.
    #[error("invalid TAP queue count {queues}: use 1 to {MAX_QUEUES}")]
    InvalidQueues {
        /// The rejected count.
        queues: usize,
    },
    /// `TUNSETIFF` refused to create or attach to the interface.
    #[error(
        "could not create TAP {name:?} (TUNSETIFF): needs CAP_NET_ADMIN; an existing \
         interface of that name must be a TAP with the same flags and not in use"
    )]
    Create {
        /// The requested name.
        name: String,
        /// The error of the ioctl.
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("could not set the virtio-net header size of {name} to {VNET_HDR_LEN} bytes")]
    VnetHdr {
        /// The interface name.
        name: String,
        /// The error of the ioctl.
        #[source]
        source: io::Error,
    },
    /// `TUNSETOFFLOAD` failed even with no offloads.
    #[error("could not set offloads on {name} (TUNSETOFFLOAD), even with none")]
    Offload {
        /// The interface name.
        name: String,
        /// The error of the last attempt.
        #[source]
        source: io::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("could not change persistence of {name} (TUNSETPERSIST): needs CAP_NET_ADMIN")]
    Persist {
        /// The interface name.
        name: String,
        /// The error of the ioctl.
        #[source]
        source: io::Error,
    },
    /// An adopted fd is not an attached `/dev/net/tun` fd: not the character device
    /// 10:200 (the source, of kind `InvalidInput`, says what it is; no ioctl was issued),
    /// or `TUNGETIFF` failed (the source is its OS error).
    #[error(
        "fd is not a TUN/TAP device attached to an interface: pass the fd of an open TAP, \
         after TUNSETIFF"
    )]
    NotTun {
        /// What the fd is, or the error of the ioctl.
        #[source]
        source: io::Error,
    },
    /// An adopted fd is a TUN/TAP fd, but not a TAP (e.g. a layer-3 TUN).
    #[error(
        "fd of {name} is not a TAP device (TUNGETIFF flags {flags:#06x}): open it with IFF_TAP"
    )]
    NotTap {
        /// The interface name.
        name: String,
        /// The flags `TUNGETIFF` reported.
        flags: u16,
    },
    /// `fcntl(O_NONBLOCK)` failed on an fd.
    #[error("could not make the TAP fd non-blocking (fcntl)")]
    NonBlocking {
        /// The error of `fcntl`.
        #[source]
        source: io::Error,
    },
    /// The interface index could not be found.
    #[error(
        "could not find the interface index of TAP {name}: the interface is gone, or it lives \
         in a namespace this process may not enter"
    )]
    Ifindex {
        /// The interface name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Entering the namespace to create the TAP in failed.
    #[error("could not enter the network namespace to create the TAP in")]
    Netns {
        /// The namespace error.
        #[source]
        source: NetnsError,
    },
}

/// An open TAP device: one non-blocking fd per queue.
///
/// The interface exists as long as one of its fds is open (or it is persistent). The fds
/// work from any thread and any namespace, whichever namespace the interface is in.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fds: Vec<OwnedFd>,
    vnet_hdr_len: usize,
    offloads: Offloads,
    /// The index in the namespace that created it, if we created it.
    ifindex: Option<u32>,
}

impl Tap {
    /// Creates (or attaches to) a TAP in the calling thread's network namespace.
    ///
    /// Opens `/dev/net/tun` once per queue, sets the virtio-net header size and offloads
    /// when `vnet_hdr` is on (falling back to fewer offloads if the kernel refuses some)
    /// and makes every fd non-blocking. Use [`create_tap_in`] to create it in another
    /// namespace.
    pub fn create(cfg: &TapConfig) -> Result<Tap, TapError> {
        validate_name(&cfg.name)?;
        if cfg.queues == 0 || cfg.queues > MAX_QUEUES {
            return Err(TapError::InvalidQueues { queues: cfg.queues });
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }

        let mut name = cfg.name.clone();
        let mut fds = Vec::with_capacity(cfg.queues);
        for _ in 0..cfg.queues {
            let fd = open_tun()?;
            // Queues after the first attach to the name the kernel gave the first.
            name = set_iff(fd.as_fd(), &name, flags as libc::c_short).map_err(|source| {
                TapError::Create {
                    name: name.clone(),
                    source,
                }
            })?;
            fds.push(fd);
        }

        // Header size and offloads belong to the device, not to a queue.
        let (vnet_hdr_len, offloads) = if cfg.vnet_hdr {
            set_vnet_hdr_len(fds[0].as_fd()).map_err(|source| TapError::VnetHdr {
                name: name.clone(),
                source,
            })?;
            (
                VNET_HDR_LEN,
                set_offloads(fds[0].as_fd(), &name, cfg.offloads)?,
            )
        } else {
            (0, Offloads::NONE)
        };

        let tap = Tap {
            ifindex: nametoindex(&name).ok(),
            name,
            fds,
            vnet_hdr_len,
            offloads,
        };
        if cfg.persist {
            tap.set_persist(true)?;
        }
        tracing::debug!(
            name = %tap.name, queues = cfg.queues, vnet_hdr_len, ?offloads, "TAP created"
        );
        Ok(tap)
    }

    /// Adopts the fd of a TAP opened elsewhere (received over SCM_RIGHTS, say).
    ///
    /// Checks first that the fd is the TUN/TAP character device ([`TUN_DEVICE`]), by its
    /// file type alone: `statx` with `AT_STATX_DONT_SYNC`, which answers from the inode at
    /// hand and never waits on a remote or FUSE file system, so the check takes bounded
    /// time whatever the fd is. Only then checks with `TUNGETIFF` that it is an attached
    /// TAP, learns its name and whether it has `IFF_VNET_HDR`; if it has, sets the header size to 12 and asks for every
    /// offload (falling back to fewer). Makes the fd non-blocking.
    ///
    /// The sender must have opened it with `IFF_NO_PI`: that cannot be checked, because
    /// `TUNGETIFF` reports the same bit (`0x1000`) as `IFF_NOFILTER` whenever no socket
    /// filter is attached.
    pub fn adopt(fd: OwnedFd) -> Result<Tap, TapError> {
        check_tun_device(fd.as_fd()).map_err(|source| TapError::NotTun { source })?;
        let (name, flags) = get_iff(fd.as_fd()).map_err(|source| TapError::NotTun { source })?;
        if flags & (libc::IFF_TAP as u16) == 0 {
            return Err(TapError::NotTap { name, flags });
        }
        set_nonblocking(fd.as_fd())?;
        let (vnet_hdr_len, offloads) = if flags & (libc::IFF_VNET_HDR as u16) != 0 {
            set_vnet_hdr_len(fd.as_fd()).map_err(|source| TapError::VnetHdr {
                name: name.clone(),
                source,
            })?;
            (
                VNET_HDR_LEN,
                set_offloads(fd.as_fd(), &name, Offloads::default())?,
            )
        } else {
            (0, Offloads::NONE)
        };
        tracing::debug!(%name, vnet_hdr_len, ?offloads, "TAP adopted");
        Ok(Tap {
            name,
            fds: vec![fd],
            vnet_hdr_len,
            offloads,
            ifindex: None,
        })
    }

    /// The interface name (as it was at creation or adoption).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length of the virtio-net header in front of every frame: 0 or 12.
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_len
    }

    /// The offloads the kernel accepted (all off without a virtio-net header).
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Number of queues (fds).
    pub fn queues(&self) -> usize {
        self.fds.len()
    }

    /// The fd of queue `queue`, for registering with a poller.
    ///
    /// # Panics
    /// If `queue >= self.queues()`.
    pub fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        self.fds[queue].as_fd()
    }

    /// Reads one frame (with its virtio-net header, if any) from queue `queue` into
    /// `bufs` (`readv`). Returns `WouldBlock` when the queue is empty. `bufs` must hold
    /// the largest frame: with TSO, a 64 KiB superframe plus its headers.
    ///
    /// # Panics
    /// If `queue >= self.queues()`.
    pub fn recv_vectored(&self, queue: usize, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        nix::sys::uio::readv(self.fds[queue].as_fd(), bufs).map_err(io::Error::from)
    }

    /// Writes one frame (with its virtio-net header, if any) to queue `queue` (`writev`).
    ///
    /// # Panics
    /// If `queue >= self.queues()`.
    pub fn send_vectored(&self, queue: usize, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        nix::sys::uio::writev(self.fds[queue].as_fd(), bufs).map_err(io::Error::from)
    }

    /// The virtio-net header size the device uses now (`TUNGETVNETHDRSZ`).
    ///
    /// The size belongs to the device, not to our fd: whoever else holds an fd of it (the
    /// process that handed an adopted TAP over keeps the same file description) can change
    /// it at any time, and every later read then carries a header of that size. The port
    /// compares this with [`Tap::vnet_hdr_len`] after reading. `IFF_VNET_HDR` itself cannot
    /// change while our fd is open: only the first queue to attach sets the flags.
    pub fn current_vnet_hdr_len(&self) -> io::Result<usize> {
        let mut size: libc::c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer; `size` outlives the
        // call.
        let r = unsafe { libc::ioctl(self.fds[0].as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut size) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(size).unwrap_or(0))
    }

    /// Sets the device's virtio-net header size back to [`VNET_HDR_LEN`] after someone
    /// else changed it (see [`Tap::current_vnet_hdr_len`]). Nothing to do for a TAP
    /// without a header.
    pub fn restore_vnet_hdr_len(&self) -> io::Result<()> {
        if self.vnet_hdr_len == 0 {
            return Ok(());
        }
        set_vnet_hdr_len(self.fds[0].as_fd())
    }

    /// Makes the interface outlive its fds (`on`) or not (`TUNSETPERSIST`). A persistent
    /// TAP is removed with `Netlink::delete_link` or by turning persistence off again.
    pub fn set_persist(&self, on: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value; the fd is open.
        let r = unsafe {
            libc::ioctl(
                self.fds[0].as_raw_fd(),
                libc::TUNSETPERSIST,
                libc::c_ulong::from(on),
            )
        };
        if r < 0 {
            let source = io::Error::last_os_error();
            return Err(TapError::Persist {
                name: self.name.clone(),
                source,
            });
        }
        Ok(())
    }

    /// The interface index, in the namespace the interface is in now.
    ///
    /// Asks the device for its namespace (`TUNGETDEVNETNS`) and looks the current name up
    /// there; when that is not allowed, falls back to the index seen at creation.
    pub fn ifindex(&self) -> Result<u32, TapError> {
        let fd = self.fds[0].as_fd();
        let fail = |source| TapError::Ifindex {
            name: self.name.clone(),
            source,
        };
        // The name may have changed since creation.
        let name = get_iff(fd).map(|(n, _)| n).map_err(fail)?;
        match dev_netns(fd) {
            Ok(ns) if same_netns_as_thread(ns.as_fd()) => nametoindex(&name).map_err(fail),
            Ok(ns) => match index_in_netns(ns.as_fd(), &name) {
                Ok(index) => Ok(index),
                Err(e) => self.ifindex.ok_or_else(|| fail(e)),
            },
            Err(e) => self.ifindex.ok_or_else(|| fail(e)),
        }
    }
}

/// Creates a TAP inside `ns`: `/dev/net/tun` is opened and `TUNSETIFF` issued on a thread
/// that entered the namespace, so the interface lives there; the returned fds work from
/// any thread.
pub fn create_tap_in(ns: &NetNs, cfg: &TapConfig) -> Result<Tap, TapError> {
    ns.run(|| Tap::create(cfg))
        .map_err(|source| TapError::Netns { source })?
}

fn validate_name(name: &str) -> Result<(), TapError> {
    let bad = name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(TapError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Opens `/dev/net/tun` non-blocking and close-on-exec.
fn open_tun() -> Result<OwnedFd, TapError> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => TapError::TunMissing { source },
            io::ErrorKind::PermissionDenied => TapError::TunPermission { source },
            _ => TapError::OpenTun { source },
        })?;
    Ok(file.into())
}

/// Whether `fd` is the TUN/TAP character device; the error says what it is instead.
///
/// `statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE)`: the file type and the
/// device number come from the inode the fd holds, with no round trip to a file server.
fn check_tun_device(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated empty string (AT_EMPTY_PATH: the fd itself)
    // and `stx` is a `struct statx` that outlives the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mode = libc::mode_t::from(stx.stx_mode) & libc::S_IFMT;
    let rdev = (stx.stx_rdev_major, stx.stx_rdev_minor);
    if mode == libc::S_IFCHR && rdev == TUN_DEVICE {
        return Ok(());
    }
    let what = match mode {
        libc::S_IFCHR => format!("the character device {}:{}", rdev.0, rdev.1),
        libc::S_IFBLK => format!("the block device {}:{}", rdev.0, rdev.1),
        libc::S_IFIFO => "a pipe".to_owned(),
        libc::S_IFSOCK => "a socket".to_owned(),
        libc::S_IFREG => "a regular file".to_owned(),
        libc::S_IFDIR => "a directory".to_owned(),
        libc::S_IFLNK => "a symbolic link".to_owned(),
        _ => format!("a file of type {mode:#o}"),
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the fd is {what}, not the TUN/TAP character device {}:{} ({TUN_PATH})",
            TUN_DEVICE.0, TUN_DEVICE.1
        ),
    ))
}

/// An `ifreq` with `name` and `flags` set.
fn ifreq(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays, integers, a union of those and a pointer);
    // all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags;
    ifr
}

/// The name in an `ifreq` filled by the kernel.
fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `TUNSETIFF`: creates or attaches to interface `name` (kernel-chosen if empty) and
/// returns the name the kernel used.
fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_short) -> io::Result<String> {
    let mut ifr = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `ifr` is; it lives
    // across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ifreq_name(&ifr))
}

/// `TUNGETIFF`: the interface name and `IFF_*` flags of an attached TUN/TAP fd.
fn get_iff(fd: BorrowedFd<'_>) -> io::Result<(String, u16)> {
    let mut ifr = ifreq("", 0);
    // SAFETY: TUNGETIFF writes a `struct ifreq`, which `ifr` is; it lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNGETIFF filled `ifru_flags`; every bit pattern is a valid c_short.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as u16;
    Ok((ifreq_name(&ifr), flags))
}

/// `TUNSETVNETHDRSZ` = [`VNET_HDR_LEN`].
fn set_vnet_hdr_len(fd: BorrowedFd<'_>) -> io::Result<()> {
    let len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `len` outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TUNSETOFFLOAD` with `want`, then with fewer offloads while the kernel refuses;
/// returns what it accepted. TSO is never asked for without checksum offload, which the
/// kernel requires for it.
fn set_offloads(fd: BorrowedFd<'_>, name: &str, want: Offloads) -> Result<Offloads, TapError> {
    let want = if want.csum { want } else { Offloads::NONE };
    let csum_only = Offloads {
        csum: want.csum,
        ..Offloads::NONE
    };
    let mut last_err = None;
    for attempt in [want, csum_only, Offloads::NONE] {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is open.
        let r = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(attempt.bits()),
            )
        };
        if r == 0 {
            if attempt != want {
                tracing::info!(%name, ?want, accepted = ?attempt, "TAP offloads reduced");
            }
            return Ok(attempt);
        }
        last_err = Some(io::Error::last_os_error());
    }
    let source = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::Unsupported));
    Err(TapError::Offload {
        name: name.to_owned(),
        source,
    })
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), TapError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let err = |e: nix::errno::Errno| TapError::NonBlocking { source: e.into() };
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(err)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(err)?;
    Ok(())
}

/// `if_nametoindex` in the calling thread's namespace.
fn nametoindex(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// `TUNGETDEVNETNS`: an fd of the namespace the interface is in (Linux 5.2+).
fn dev_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new fd or -1.
    let ns: RawFd = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETDEVNETNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this fd for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// Whether `ns` is the calling thread's network namespace.
fn same_netns_as_thread(ns: BorrowedFd<'_>) -> bool {
    let (Ok(a), Ok(b)) = (
        nix::sys::stat::fstat(ns),
        nix::sys::stat::stat("/proc/thread-self/ns/net"),
    ) else {
        return false;
    };
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Looks `name` up inside the namespace `ns`, on a helper thread.
fn index_in_netns(ns: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("tapnet-netns".into())
            .spawn_scoped(s, || {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                nametoindex(name)
            })?;
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests;
