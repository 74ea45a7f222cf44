//! What the VTEP sends and receives datagrams through: a kernel UDP socket
//! ([`UnderlaySocket`]) in every real use, or an in-memory underlay with faults in the
//! rig (`crate::rig`), behind one trait so the datapath above is the same.

use std::io::{self, IoSliceMut};
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use crate::sys::udp::{Outgoing, Received, UnderlaySocket};

/// A datagram endpoint of the underlay (see the module docs).
pub trait Underlay: Send + Sync + std::fmt::Debug {
    /// The address datagrams to it are sent to.
    fn local_addr(&self) -> io::Result<SocketAddrV4>;
    /// Whether a message may carry several datagrams (`Outgoing::gso_size`).
    fn gso(&self) -> bool;
    /// Whether a read may return several datagrams (`Received::gso_size`).
    fn gro(&self) -> bool;
    /// The descriptor to wait on; `None` for an in-memory underlay, which the engine
    /// polls through [`Underlay::pending`].
    fn raw_fd(&self) -> Option<RawFd>;
    /// For an underlay without a descriptor: whether datagrams wait.
    fn pending(&self) -> bool {
        false
    }
    /// For an underlay without a descriptor: how it wakes the worker when datagrams
    /// arrive.
    fn set_notifier(&self, notifier: crate::wake::Notifier) {
        let _ = notifier;
    }
    /// Read up to `bufs.len()` datagrams (or GRO runs), one per buffer; `Ok(0)` when
    /// none waits.
    fn recv_batch(&self, bufs: &mut [IoSliceMut<'_>], out: &mut [Received]) -> io::Result<usize>;
    /// Send `msgs`; returns how many the underlay took.
    fn send_batch(&self, msgs: &[Outgoing<'_>]) -> io::Result<usize>;
}

impl Underlay for UnderlaySocket {
    fn local_addr(&self) -> io::Result<SocketAddrV4> {
        UnderlaySocket::local_addr(self)
    }

    fn gso(&self) -> bool {
        UnderlaySocket::gso(self)
    }

    fn gro(&self) -> bool {
        UnderlaySocket::gro(self)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(UnderlaySocket::raw_fd(self))
    }

    fn recv_batch(&self, bufs: &mut [IoSliceMut<'_>], out: &mut [Received]) -> io::Result<usize> {
        UnderlaySocket::recv_batch(self, bufs, out)
    }

    fn send_batch(&self, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        UnderlaySocket::send_batch(self, msgs)
    }
}
