//! Spliced published ports: loopback clients reach the container through a socket made
//! inside its network namespace, and bytes move between the two sockets with
//! `splice(2)`, never entering the relay, the engine or the container's TAP.
//!
//! A socket keeps the network namespace it was created in, whatever thread uses it
//! later. So each namespace with spliced ports gets one [`NsConnector`]: a thread
//! (`tapnet-nsconn`) that entered the namespace once (`setns`) and keeps a small stock
//! of unconnected, non-blocking TCP sockets ready. The host thread takes one per
//! loopback client without waiting (the helper refills in the background); when the
//! stock is empty it asks the helper for one and waits at most [`SYNC_WAIT`]; when even
//! that fails the connection takes the relay path. `connect` itself runs on the host
//! thread, non-blocking: the socket's namespace decides where it goes. The helper never
//! enters another namespace back, so a namespace the daemon may enter but not leave
//! (rootless) is harmless; it ends when the last listener using it closes.
//!
//! The connection goes to the container's own address and port (`ctr`), not to
//! 127.0.0.1 as pasta does: the same services are reachable as through the relay path
//! (and Docker's proxy), whether the client is local or not, including services bound
//! to the interface address only, and none bound to the container's loopback only. It
//! comes from the namespace's 127.0.0.1, as pasta's does (the relay path shows the
//! gateway address): this socket closes first, so its port stays in TIME-WAIT for a
//! minute, and Linux reuses such ports after a second only for loopback addresses
//! (`tcp_tw_reuse`'s default). From the container's own address, the ephemeral range
//! would run out at about 28,000 connections a minute, each connect slower as it
//! fills (a port search of milliseconds at 20,000). The address is bound with
//! `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen by `connect`, which may reuse
//! such ports. A namespace whose loopback is down gets sockets from its own address.
//! The price, as with pasta: services in the container that trust loopback clients
//! (a `trust` line for 127.0.0.1 in `pg_hba.conf`, Redis's protected mode) trust every
//! local user of the host too, which is why splicing is a network's choice.
//!
//! Each direction has a pipe: `splice` moves bytes from the source socket into the pipe
//! and from the pipe into the destination socket, without copying them through user
//! space. An end of stream is passed on as `shutdown(SHUT_WR)` once the pipe is empty
//! (half-close); an error on either socket resets both. Work per readiness event is
//! bounded by [`BUDGET`] splice calls; a connection with more to do is revisited on the
//! next pass of the host thread.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::ArrayQueue;
use nix::sched::{CloneFlags, setns};

/// Sockets kept ready per namespace.
const STOCK: usize = 16;
/// Longest wait of the host thread for a socket when the stock is empty.
pub(super) const SYNC_WAIT: Duration = Duration::from_millis(20);
/// Splice calls per direction per readiness event.
pub(super) const BUDGET: usize = 32;
/// Bytes asked of one splice call.
const CHUNK: usize = 1 << 20;

/// Counters shared between the host thread and [`super::HostNet::stats`].
#[derive(Default)]
pub(super) struct SpliceCounters {
    /// Loopback connections carried by splice.
    pub(super) spliced: AtomicU64,
    /// Loopback connections on spliced ports carried by the relay instead.
    pub(super) fallback: AtomicU64,
    /// Pipes open now.
    pub(super) pipes: AtomicU64,
}

enum Req {
    Refill,
    One(Sender<io::Result<OwnedFd>>),
}

/// Makes TCP sockets inside one network namespace (see the module docs).
pub(super) struct NsConnector {
    stock: Arc<ArrayQueue<OwnedFd>>,
    req: Sender<Req>,
    /// Device and inode of the namespace, to share one connector per namespace.
    pub(super) id: (u64, u64),
}

impl NsConnector {
    /// Start the helper thread of namespace `netns`; fails when it cannot enter it.
    pub(super) fn start(netns: BorrowedFd<'_>, id: (u64, u64)) -> io::Result<NsConnector> {
        let fd = netns.try_clone_to_owned()?;
        let stock = Arc::new(ArrayQueue::new(STOCK));
        let (req, rx) = crossbeam_channel::unbounded();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let st = Arc::clone(&stock);
        std::thread::Builder::new()
            .name("tapnet-nsconn".into())
            .spawn(move || helper(fd, st, rx, started_tx))?;
        match started.recv() {
            Ok(Ok(())) => Ok(NsConnector { stock, req, id }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the namespace helper thread ended")),
        }
    }

    /// An unconnected non-blocking TCP socket of the namespace, if one can be had
    /// within [`SYNC_WAIT`].
    pub(super) fn take(&self) -> io::Result<OwnedFd> {
        if let Some(fd) = self.stock.pop() {
            // The helper is woken only once the stock is half used.
            if self.stock.len() <= STOCK / 2 {
                let _ = self.req.send(Req::Refill);
            }
            return Ok(fd);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.req
            .send(Req::One(tx))
            .map_err(|_| io::Error::other("the namespace helper thread ended"))?;
        match rx.recv_timeout(SYNC_WAIT) {
            Ok(r) => {
                let _ = self.req.send(Req::Refill);
                r
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no socket from the namespace helper thread in time",
            )),
        }
    }
}

fn helper(
    ns: OwnedFd,
    stock: Arc<ArrayQueue<OwnedFd>>,
    rx: Receiver<Req>,
    started: Sender<io::Result<()>>,
) {
    if let Err(e) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
        let _ = started.send(Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot enter the network namespace of a spliced port (setns): {e}"),
        )));
        return;
    }
    drop(ns);
    let _ = started.send(Ok(()));
    fill(&stock);
    // Ends when the connector is dropped (its sender with it).
    for r in rx {
        match r {
            Req::Refill => fill(&stock),
            Req::One(tx) => {
                let _ = tx.send(tcp_socket());
            }
        }
    }
}

fn fill(stock: &ArrayQueue<OwnedFd>) {
    while !stock.is_full() {
        match tcp_socket() {
            Ok(fd) => {
                if stock.push(fd).is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot make a socket in a spliced port's namespace");
                break;
            }
        }
    }
}

fn tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // From 127.0.0.1, the port left to connect (see the module docs); without it when
    // the loopback is down.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket owned here, with an int option of its size.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        let lo = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
        if let Err(e) = nix::sys::socket::bind(fd.as_raw_fd(), &lo) {
            tracing::debug!(error = %e, "no loopback address for a spliced port's sockets");
        }
    }
    Ok(fd)
}

/// Start a non-blocking connect of `fd` to `dst`: `Ok` when it completed or is in
/// progress.
pub(super) fn connect(fd: &OwnedFd, dst: SocketAddrV4) -> io::Result<()> {
    let addr = nix::sys::socket::SockaddrIn::from(dst);
    match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One pipe, counted in [`SpliceCounters::pipes`] while open.
pub(super) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    counters: Arc<SpliceCounters>,
}

impl Pipe {
    /// A non-blocking pipe of (about) `size` bytes.
    pub(super) fn new(size: usize, counters: &Arc<SpliceCounters>) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned here from now on.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A bigger pipe moves more per call; the default (64 KiB) is kept when the
        // system refuses (pipe-max-size, per-user pipe limits).
        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor owned here; the result is only a hint.
        let _ = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        counters.pipes.fetch_add(1, Ordering::Relaxed);
        Ok(Pipe {
            r,
            w,
            counters: Arc::clone(counters),
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.counters.pipes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One direction of a spliced connection.
pub(super) struct Dir {
    pipe: Pipe,
    /// Bytes in the pipe.
    buffered: usize,
    /// The source reached its end of stream.
    eof: bool,
    /// The end of stream was passed on to the destination.
    shut: bool,
}

/// What one direction did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Waiting for readiness of one of the sockets (or finished).
    Idle,
    /// The budget ran out with work perhaps left.
    More,
    /// A socket failed: the connection is reset.
    Broken,
}

impl Dir {
    pub(super) fn new(pipe: Pipe) -> Dir {
        Dir {
            pipe,
            buffered: 0,
            eof: false,
            shut: false,
        }
    }

    /// Everything was carried and the end of stream passed on.
    pub(super) fn done(&self) -> bool {
        self.shut
    }

    /// Move bytes from `src` to `dst` until one of them would block, the end of stream
    /// is passed on, or `BUDGET` calls were made.
    pub(super) fn pump(&mut self, src: RawFd, dst: RawFd) -> Step {
        for _ in 0..BUDGET {
            if self.buffered > 0 {
                match splice(self.pipe.r.as_raw_fd(), dst, self.buffered) {
                    Ok(0) => return Step::Idle,
                    Ok(n) => {
                        self.buffered -= n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Idle,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Step::Broken,
                }
            }
            if self.eof {
                if !self.shut {
                    // SAFETY: shutdown(2) on a socket descriptor the caller owns.
                    let _ = unsafe { libc::shutdown(dst, libc::SHUT_WR) };
                    self.shut = true;
                }
                return Step::Idle;
            }
            match splice(src, self.pipe.w.as_raw_fd(), CHUNK) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buffered += n,
                // The source is empty (the pipe is empty), or the pipe is full: then
                // the next round writes from it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.buffered == 0 {
                        return Step::Idle;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Broken,
            }
        }
        Step::More
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice(2) between descriptors the caller owns, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A loopback client spliced to a socket in the container's namespace.
pub(super) struct Spliced {
    /// The accepted client stream (registered under the connection's own token).
    pub(super) client: mio::net::TcpStream,
    /// The stream to the container (registered under `inner_token`).
    pub(super) inner: mio::net::TcpStream,
    pub(super) inner_token: mio::Token,
    /// The client's address and the container's, for the relay path if connecting
    /// fails.
    pub(super) client_addr: SocketAddr,
    pub(super) ctr: SocketAddrV4,
    pub(super) connecting: bool,
    /// Client to container, container to client.
    pub(super) dirs: [Dir; 2],
}

impl Spliced {
    /// Carry bytes both ways.
    pub(super) fn pump(&mut self) -> Step {
        let (c, i) = (self.client.as_raw_fd(), self.inner.as_raw_fd());
        let [up, down] = &mut self.dirs;
        let a = up.pump(c, i);
        let b = down.pump(i, c);
        if a == Step::Broken || b == Step::Broken {
            Step::Broken
        } else if a == Step::More || b == Step::More {
            Step::More
        } else {
            Step::Idle
        }
    }

    /// Both directions ended cleanly.
    pub(super) fn finished(&self) -> bool {
        self.dirs.iter().all(Dir::done)
    }
}
