//! UDP sockets for the VXLAN underlay: batched receive (`recvmmsg(2)`) with UDP GRO and
//! batched send (`sendmmsg(2)`) with UDP GSO (`UDP_SEGMENT`), each falling back by
//! itself where the kernel lacks it.
//!
//! Written on `libc` by hand: the maintained socket crates (`socket2`, `nix`) offer
//! neither `recvmmsg` with per-message control data for `UDP_GRO` nor `sendmmsg` with a
//! `UDP_SEGMENT` control message per message, which is the whole point here: one
//! system call moves a batch of up to [`MAX_BATCH`] datagram runs, and a run of
//! equal-sized datagrams to one peer (the segments of one TCP superframe) is handed to
//! the kernel as one message that it splits itself.
//!
//! - **GSO** (`UDP_SEGMENT`, Linux 4.18): a message whose `gso_size` is set carries up to
//!   [`MAX_GSO_SEGMENTS`] datagrams back to back, each `gso_size` bytes but the last,
//!   which may be shorter. The message's iovecs are concatenated by the kernel, so each
//!   datagram may be one iovec pointing into its own pool slot, or its headers and its
//!   payload where it lies in a superframe: no copy.
//! - **GRO** (`UDP_GRO`, Linux 5.0): the kernel may hand several datagrams of one
//!   4-tuple as one read, with their size in a `UDP_GRO` control message; the reader
//!   splits them at that size.
//!
//! Support is probed once when the socket is made; [`UnderlaySocket::gso`] and
//! [`UnderlaySocket::gro`] say what was found, and the caller sends one datagram per
//! message without GSO.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// `UDP_SEGMENT` (include/uapi/linux/udp.h): the GSO size of a send.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (include/uapi/linux/udp.h): receive coalesced datagrams.
pub const UDP_GRO: libc::c_int = 104;
/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes of UDP payload one GSO send may carry (an IPv4 datagram's 65,535 less the
/// IPv4 and UDP headers).
pub const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;
/// Most messages one batched call moves.
pub const MAX_BATCH: usize = 64;
/// Most iovecs one GSO message may point at: headers and payload of each datagram.
pub const MAX_IOV: usize = 2 * MAX_GSO_SEGMENTS;

// SAFETY: CMSG_SPACE is arithmetic on its argument, nothing more.
const CMSG_INT: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
// SAFETY: as above.
const CMSG_U16: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;

/// One datagram (or GRO run of datagrams) read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer.
    pub len: usize,
    /// Sender.
    pub from: Option<SocketAddrV4>,
    /// With GRO: the size of each coalesced datagram but the last (0: one datagram).
    pub gso_size: u16,
    /// The datagram did not fit the buffer (`MSG_TRUNC`): its tail is lost.
    pub truncated: bool,
}

/// One message to send: the concatenation of `iov` to `to`, split by the kernel into
/// datagrams of `gso_size` bytes when that is not 0.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Destination.
    pub to: SocketAddrV4,
    /// The bytes, gathered.
    pub iov: &'a [IoSlice<'a>],
    /// 0: one datagram; else the size of each datagram but the last.
    pub gso_size: u16,
}

/// A non-blocking IPv4 UDP socket of the underlay.
#[derive(Debug)]
pub struct UnderlaySocket {
    sock: UdpSocket,
    gso: bool,
    gro: bool,
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> Option<SocketAddrV4> {
    (s.sin_family == libc::AF_INET as libc::sa_family_t).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
            u16::from_be(s.sin_port),
        )
    })
}

impl UnderlaySocket {
    /// Bind a new socket to `addr` (port 0: any free port) with receive and send
    /// buffers of `buf_bytes` where the kernel allows it, and probe GSO and GRO.
    pub fn bind(addr: SocketAddrV4, buf_bytes: usize) -> io::Result<UnderlaySocket> {
        UnderlaySocket::from_std(UdpSocket::bind(addr)?)?.with_buffers(buf_bytes)
    }

    /// Ask for receive and send buffers of `bytes` each (best effort: the kernel caps
    /// them at `net.core.rmem_max` and `wmem_max`).
    pub fn with_buffers(self, bytes: usize) -> io::Result<UnderlaySocket> {
        let fd = self.sock.as_raw_fd();
        let bytes = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes);
        Ok(self)
    }

    /// Use a socket made elsewhere (in another namespace, say), made non-blocking here.
    pub fn from_std(sock: UdpSocket) -> io::Result<UnderlaySocket> {
        sock.set_nonblocking(true)?;
        let fd = sock.as_raw_fd();
        // GSO is asked for per message; setting the socket's default to 0 (none) tells
        // whether the kernel knows the option at all.
        let gso = setsockopt_int(fd, libc::SOL_UDP, UDP_SEGMENT, 0).is_ok();
        let gro = setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1).is_ok();
        Ok(UnderlaySocket { sock, gso, gro })
    }

    /// Turn GSO and GRO off (to measure or test the fallbacks).
    pub fn without_offloads(mut self) -> UnderlaySocket {
        if self.gro {
            let _ = setsockopt_int(self.sock.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 0);
        }
        self.gso = false;
        self.gro = false;
        self
    }

    /// Whether sends may carry `UDP_SEGMENT`.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether reads may return coalesced datagrams.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        match self.sock.local_addr()? {
            std::net::SocketAddr::V4(a) => Ok(a),
            std::net::SocketAddr::V6(_) => Err(io::Error::other("not an IPv4 socket")),
        }
    }

    /// The descriptor, for readiness.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Read up to `bufs.len()` (at most [`MAX_BATCH`]) datagrams, one per buffer, into
    /// `out`; returns how many. `Ok(0)` when nothing waits.
    pub fn recv_batch(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        out: &mut [Received],
    ) -> io::Result<usize> {
        let n = bufs.len().min(out.len()).min(MAX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut addrs: [libc::sockaddr_in; MAX_BATCH] = unsafe { zeroed() };
        let mut ctl = [[0u8; CMSG_INT]; MAX_BATCH];
        for i in 0..n {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // IoSliceMut is ABI-compatible with iovec (std documents it).
            h.msg_iov = (&mut bufs[i] as *mut IoSliceMut<'_>).cast();
            h.msg_iovlen = 1;
            if self.gro {
                h.msg_control = ctl[i].as_mut_ptr().cast();
                h.msg_controllen = CMSG_INT as _;
            }
        }
        // SAFETY: the first `n` headers point at live buffers, addresses and control
        // space of the sizes given, all outliving the call.
        let r = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = r as usize;
        for i in 0..got {
            let h = &hdrs[i].msg_hdr;
            let mut gso_size = 0u16;
            if self.gro && h.msg_controllen > 0 {
                // SAFETY: the kernel wrote `msg_controllen` bytes of control messages
                // into `ctl[i]`, which CMSG_FIRSTHDR/CMSG_NXTHDR walk within bounds.
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(h);
                    while !c.is_null() {
                        if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                            let v =
                                std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                            gso_size = u16::try_from(v).unwrap_or(0);
                        }
                        c = libc::CMSG_NXTHDR(h, c);
                    }
                }
            }
            out[i] = Received {
                len: hdrs[i].msg_len as usize,
                from: from_sockaddr(&addrs[i]),
                gso_size,
                truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }

    /// Send `msgs` (at most [`MAX_BATCH`] of them) with one `sendmmsg(2)`; returns how
    /// many messages the kernel took, which may be fewer (its buffer is full: the rest
    /// is the caller's to drop or retry). A message with `gso_size` set on a socket
    /// without GSO is refused with `InvalidInput`.
    pub fn send_batch(&self, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        let n = msgs.len().min(MAX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        if !self.gso && msgs[..n].iter().any(|m| m.gso_size != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UDP GSO is not available on this socket",
            ));
        }
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { zeroed() };
        let mut addrs: [MaybeUninit<libc::sockaddr_in>; MAX_BATCH] =
            [const { MaybeUninit::uninit() }; MAX_BATCH];
        let mut ctl = [[0u8; CMSG_U16]; MAX_BATCH];
        for (i, m) in msgs[..n].iter().enumerate() {
            let a = addrs[i].write(sockaddr(m.to));
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (a as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // IoSlice is ABI-compatible with iovec; the kernel only reads it.
            h.msg_iov = m.iov.as_ptr() as *mut libc::iovec;
            h.msg_iovlen = m.iov.len() as _;
            if m.gso_size != 0 {
                h.msg_control = ctl[i].as_mut_ptr().cast();
                h.msg_controllen = CMSG_U16 as _;
                // SAFETY: `ctl[i]` holds CMSG_SPACE(2) bytes, room for one header and a
                // u16, which CMSG_FIRSTHDR/CMSG_DATA address within.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.gso_size);
                }
            }
        }
        // SAFETY: the first `n` headers point at addresses, iovecs and control data that
        // outlive the call; the kernel only reads them.
        let r = unsafe {
            libc::sendmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UnderlaySocket, UnderlaySocket) {
        let a = UnderlaySocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).unwrap();
        let b = UnderlaySocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).unwrap();
        (a, b)
    }

    fn recv_all(s: &UnderlaySocket, want: usize) -> Vec<(Vec<u8>, Received)> {
        let mut got = Vec::new();
        let t0 = std::time::Instant::now();
        while got.len() < want && t0.elapsed() < std::time::Duration::from_secs(5) {
            let mut store = vec![vec![0u8; 65_536]; 8];
            let mut bufs: Vec<IoSliceMut<'_>> =
                store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut out = [Received::default(); 8];
            let n = s.recv_batch(&mut bufs, &mut out).unwrap();
            drop(bufs);
            for (i, r) in out[..n].iter().enumerate() {
                got.push((store[i][..r.len].to_vec(), *r));
            }
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn a_batch_without_gso_arrives_datagram_by_datagram() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        let iovs: Vec<[IoSlice<'_>; 1]> = bodies.iter().map(|b| [IoSlice::new(b)]).collect();
        let msgs: Vec<Outgoing<'_>> = iovs
            .iter()
            .map(|iov| Outgoing {
                to,
                iov,
                gso_size: 0,
            })
            .collect();
        assert_eq!(a.send_batch(&msgs).unwrap(), 5);
        let got = recv_all(&b.without_offloads(), 5);
        assert_eq!(got.len(), 5);
        for (i, (bytes, r)) in got.iter().enumerate() {
            assert_eq!(bytes, &bodies[i]);
            assert_eq!(r.from, Some(a.local_addr().unwrap()));
            assert_eq!(r.gso_size, 0);
        }
    }

    #[test]
    fn a_gso_send_is_split_by_the_kernel_and_may_come_back_coalesced() {
        let (a, b) = pair();
        if !a.gso() {
            eprintln!("no UDP GSO in this kernel: nothing to test");
            return;
        }
        let to = b.local_addr().unwrap();
        // Four datagrams of 1,000 bytes and a last one of 300, from five slots.
        let bodies: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; if i == 4 { 300 } else { 1000 }])
            .collect();
        let iov: Vec<IoSlice<'_>> = bodies.iter().map(|b| IoSlice::new(b)).collect();
        let msgs = [Outgoing {
            to,
            iov: &iov,
            gso_size: 1000,
        }];
        assert_eq!(a.send_batch(&msgs).unwrap(), 1);
        // Split them again as the reader does: by the GRO size, or one per read.
        let mut datagrams = Vec::new();
        let t0 = std::time::Instant::now();
        while datagrams.len() < 5 && t0.elapsed() < std::time::Duration::from_secs(5) {
            for (bytes, r) in recv_all(&b, 1) {
                if r.gso_size == 0 {
                    datagrams.push(bytes);
                } else {
                    datagrams.extend(bytes.chunks(r.gso_size as usize).map(<[u8]>::to_vec));
                }
            }
        }
        assert_eq!(datagrams, bodies);
    }

    #[test]
    fn gso_on_a_socket_without_it_is_refused() {
        let (a, b) = pair();
        let a = a.without_offloads();
        let iov = [IoSlice::new(b"x")];
        let msgs = [Outgoing {
            to: b.local_addr().unwrap(),
            iov: &iov,
            gso_size: 1,
        }];
        let e = a.send_batch(&msgs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
