//! File descriptors over Unix sockets (`SCM_RIGHTS`): how a rootless sandbox's process
//! hands its TAPs to the daemon, on the bytes of an API request.
//!
//! Written on `libc` for the receiving side: nix's `RecvMsg::cmsgs` refuses truncated
//! control data with `ENOBUFS`, which leaves the fds the kernel already installed with
//! no owner (a leak per oversized message); here every installed fd is owned first.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Most fds one `recvmsg` takes; more are cut by the kernel (`MSG_CTRUNC`).
pub const MAX_FDS: usize = 64;

/// Bytes of control data with room for [`MAX_FDS`] fds.
// SAFETY: CMSG_SPACE is arithmetic on its argument, nothing more.
const CMSG_BYTES: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;

/// Control data of one `recvmsg`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);

/// What one [`recv_with_fds`] got.
#[derive(Debug)]
pub struct Received {
    /// Bytes read into the buffer.
    pub len: usize,
    /// The fds that came with them, owned.
    pub fds: Vec<OwnedFd>,
    /// The kernel cut the control data (`MSG_CTRUNC`): some fds sent are not in `fds`,
    /// so what is there cannot be matched to what the sender meant.
    pub truncated: bool,
}

/// One non-blocking `recvmsg` on `sock` into `buf`, taking the `SCM_RIGHTS` fds that
/// came with the bytes (close-on-exec). Every fd the kernel installed is owned before
/// anything else is looked at, also when it cut the control data; the bytes read are
/// kept either way.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut ctl = CmsgBuf([0; CMSG_BYTES]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.0.as_mut_ptr().cast();
    mh.msg_controllen = CMSG_BYTES as _;
    // SAFETY: `mh` points at `iov` (which covers `buf`, writable for its length) and at
    // `ctl` (writable for CMSG_BYTES); all outlive the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut mh,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Received {
        len: n as usize,
        fds: take_rights(&mh),
        truncated: mh.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Own every fd of the `SCM_RIGHTS` messages in the control data `recvmsg` left in
/// `mh`. When the kernel cut the data, the last message's `cmsg_len` counts the fds it
/// installed; a length past the end of the data is clamped to it.
// `msg_controllen` and `cmsg_len` are `size_t` in glibc but 32 bits in musl.
#[allow(clippy::unnecessary_cast)]
fn take_rights(mh: &libc::msghdr) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    let end = mh.msg_control as usize + mh.msg_controllen as usize;
    // SAFETY: `mh` is the msghdr `recvmsg` just filled: msg_control/msg_controllen
    // describe the control data it wrote, which CMSG_FIRSTHDR/CMSG_NXTHDR only walk
    // within (a header they return lies wholly inside it, aligned as the buffer is).
    let mut c = unsafe { libc::CMSG_FIRSTHDR(mh) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control data (see above).
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: as above; CMSG_DATA and CMSG_LEN are pointer and size arithmetic.
            let (data, head) = unsafe { (libc::CMSG_DATA(c), libc::CMSG_LEN(0) as usize) };
            let bytes = (len as usize)
                .saturating_sub(head)
                .min(end.saturating_sub(data as usize));
            for i in 0..bytes / std::mem::size_of::<RawFd>() {
                // SAFETY: the `bytes` after `data` are inside the control data; the
                // kernel wrote an fd it installed in our table there, owned by nothing
                // else (read unaligned: cmsg data has no alignment promise for us).
                let fd = unsafe {
                    let raw = data.cast::<RawFd>().add(i).read_unaligned();
                    OwnedFd::from_raw_fd(raw)
                };
                out.push(fd);
            }
        }
        // SAFETY: `c` is a header inside the control data described by `mh`.
        c = unsafe { libc::CMSG_NXTHDR(mh, c) };
    }
    out
}

/// One `sendmsg` of `buf` on `sock` with `fds` attached (none: a plain send). Returns
/// the bytes sent; the caller sends the rest without fds.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    Ok(sendmsg::<()>(
        sock.as_raw_fd(),
        &[io::IoSlice::new(buf)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn fds_travel_with_the_bytes_and_work() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            send_with_fds(a.as_fd(), b"hello", &[r.as_fd(), w.as_fd()]).unwrap(),
            5
        );
        drop((r, w));
        let mut buf = [0u8; 16];
        let got = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(
            (&buf[..got.len], got.fds.len(), got.truncated),
            (&b"hello"[..], 2, false)
        );
        nix::unistd::write(&got.fds[1], b"x").unwrap();
        assert_eq!(nix::unistd::read(&got.fds[0], &mut [0u8; 1]).unwrap(), 1);
        // Nothing waiting: would block, not hang.
        let e = recv_with_fds(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_cut_message_keeps_its_bytes_and_closes_what_came() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let many = vec![w.as_fd(); MAX_FDS + 6];
        send_with_fds(a.as_fd(), b"hi", &many).unwrap();
        drop(w);
        let mut buf = [0u8; 4];
        let got = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hi");
        assert!(got.truncated);
        drop(got);
        // Every copy of the write end is closed: the read end is at EOF.
        assert_eq!(nix::unistd::read(&r, &mut [0u8; 1]).unwrap(), 0);
    }
}
