//! The API socket's listener: Unix streams read with `recvmsg`, so that file descriptors
//! sent as `SCM_RIGHTS` with a request's bytes are received, not dropped by the kernel.
//!
//! Rootless sandboxes hand their TAPs to the daemon this way (see
//! [`crate::daemon::rootless`]). Received fds are kept with the connection
//! ([`Peer::take_fds`]); since every byte of a request has been read before its handler
//! runs, the fds sent with a request are there when its handler looks. They belong to
//! that request: its handler takes them first thing, and whatever no handler took is
//! closed when the request ends ([`Peer::drop_fds`]), so a later request on the same
//! connection never gets them; a connection closed before its request is complete (the
//! client left, or was too slow) takes its fds with it. The peer's credentials
//! (`SO_PEERCRED`) are taken when the connection is accepted. Both reach handlers as
//! axum's connect info, so the HTTP stack (hyper, axum) is unchanged.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tapnet_engine::sys::scm;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Most fds one connection may hold at a time; more are closed and the connection's
/// fds marked unusable.
pub const MAX_FDS: usize = scm::MAX_FDS;

/// Fds received on one connection.
#[derive(Debug, Default)]
struct Received {
    fds: Vec<OwnedFd>,
    /// Some fds were lost (the kernel truncated the control data, or [`MAX_FDS`] was
    /// exceeded): what is left cannot be matched to what the sender meant.
    lost: bool,
}

/// Who is on the other end of an API connection, and the fds it sent.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Process id of the peer when it connected (0 if the kernel could not tell).
    pub pid: u32,
    /// User id of the peer.
    pub uid: u32,
    received: Arc<Mutex<Received>>,
}

impl Peer {
    /// Take every fd received so far on this connection. Errors if some were lost (the
    /// rest are closed then). Either way the connection starts afresh: no fd, none lost.
    pub fn take_fds(&self) -> Result<Vec<OwnedFd>, String> {
        let mut r = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let fds = std::mem::take(&mut r.fds);
        if std::mem::take(&mut r.lost) {
            return Err(format!(
                "file descriptors were lost in transit (at most {MAX_FDS} per request)"
            ));
        }
        Ok(fds)
    }

    /// Close whatever fds the request just served left (no handler wanted them).
    /// Returns how many there were.
    pub fn drop_fds(&self) -> usize {
        match self.take_fds() {
            Ok(fds) => fds.len(),
            Err(_) => 0,
        }
    }
}

/// One API connection.
#[derive(Debug)]
pub struct FdStream {
    io: UnixStream,
    peer: Peer,
}

impl FdStream {
    /// An accepted connection, with its peer's credentials (`SO_PEERCRED`) as the
    /// kernel recorded them when it connected. A peer the kernel cannot tell has uid
    /// `u32::MAX`, which no check lets through.
    pub fn new(io: UnixStream) -> FdStream {
        let cred = io.peer_cred().ok();
        let peer = Peer {
            pid: cred
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            uid: cred.map(|c| c.uid()).unwrap_or(u32::MAX),
            received: Arc::default(),
        };
        FdStream { io, peer }
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

/// `recvmsg` into `buf`, keeping any `SCM_RIGHTS` fds in `into` (at most [`MAX_FDS`]
/// per connection; past it, or when the kernel cut the control data, the connection's
/// fds are marked lost and the extra ones closed). The bytes read are kept either way.
fn recv_with_fds(fd: RawFd, buf: &mut [u8], into: &Mutex<Received>) -> io::Result<usize> {
    // SAFETY: `fd` is the connection's socket, open for the duration of this call (the
    // stream that owns it is borrowed by the caller).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let got = scm::recv_with_fds(fd, buf)?;
    if got.truncated || !got.fds.is_empty() {
        let mut r = into.lock().unwrap_or_else(|e| e.into_inner());
        r.lost |= got.truncated;
        for fd in got.fds {
            if r.fds.len() < MAX_FDS {
                r.fds.push(fd);
            } else {
                r.lost = true;
            }
        }
    }
    Ok(got.len)
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            let fd = this.io.as_raw_fd();
            let received = &this.peer.received;
            match this
                .io
                .try_io(Interest::READABLE, || recv_with_fds(fd, dst, received))
            {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use tokio::io::AsyncReadExt;

    use crate::daemon::server::tests::{pipe, write_end_closed};

    /// A connected pair: the sending end, and the receiving end as the API reads it.
    fn pair() -> (std::os::unix::net::UnixStream, FdStream, Peer) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let peer = Peer {
            pid: 0,
            uid: 0,
            received: Arc::default(),
        };
        let s = FdStream {
            io: UnixStream::from_std(b).unwrap(),
            peer: peer.clone(),
        };
        (a, s, peer)
    }

    #[test]
    fn fds_past_the_limit_in_one_message_are_all_closed_and_bytes_kept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, mut s, peer) = pair();
            // MAX_FDS + 6 copies of one pipe's write end in one message: the kernel
            // installs what fits in the control buffer and cuts the rest (MSG_CTRUNC).
            // Close-on-exec: a program another test starts meanwhile must not keep a
            // copy of the write end.
            let (r, w) = pipe();
            let fds = vec![w.as_raw_fd(); MAX_FDS + 6];
            let cm = [ControlMessage::ScmRights(&fds)];
            let iov = [io::IoSlice::new(b"hello")];
            sendmsg::<()>(a.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
            drop(w);
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello", "the bytes of a cut message are kept");
            let err = peer.take_fds().unwrap_err();
            assert!(err.contains("lost in transit"), "{err}");
            // Every fd the daemon received was closed: none is left open anywhere.
            assert!(write_end_closed(&r), "received fds leaked");
        });
    }

    #[test]
    fn fds_sent_with_bytes_are_kept_for_the_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let io = UnixStream::from_std(b).unwrap();
            let peer = Peer {
                pid: 0,
                uid: 0,
                received: Arc::default(),
            };
            let mut s = FdStream {
                io,
                peer: peer.clone(),
            };
            let (r, w) = nix::unistd::pipe().unwrap();
            let fds = [r.as_raw_fd(), w.as_raw_fd()];
            let cm = [ControlMessage::ScmRights(&fds)];
            let iov = [io::IoSlice::new(b"hello")];
            sendmsg::<()>(a.as_raw_fd(), &iov, &cm, MsgFlags::empty(), None).unwrap();
            drop((r, w));
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            let fds = peer.take_fds().unwrap();
            assert_eq!(fds.len(), 2);
            // The received pipe works: what goes in one end comes out of the other.
            nix::unistd::write(&fds[1], b"x").unwrap();
            let mut one = [0u8; 1];
            assert_eq!(nix::unistd::read(&fds[0], &mut one).unwrap(), 1);
            assert!(peer.take_fds().unwrap().is_empty());
        });
    }
}
