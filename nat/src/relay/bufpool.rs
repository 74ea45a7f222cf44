//! Buffers of the relay's TCP sockets, kept for the next connection.
//!
//! Each flow's smoltcp socket needs a receive and a send buffer of `tcp_buffer` bytes
//! (1 MiB by default, the window that keeps a fast host busy). Allocated per flow, each
//! buffer is a fresh `mmap` (zeroed pages faulted in as they are touched) and a
//! `munmap` when the flow ends, whose TLB shootdown interrupts the other CPUs: at
//! thousands of short connections a second that was the host thread's largest cost
//! outside the stacks (7 % in `smp_call_function_many_cond`). smoltcp sockets own their
//! buffers and never give them back, so the relay lends each socket slices of slabs this
//! pool owns (`ManagedSlice::Borrowed`) and takes the slabs back once the socket is
//! gone. A slab's old bytes are never read: a new socket's ring buffer starts empty.
//!
//! Written by hand: it is the lending rule below, a few lines, and no crate offers
//! buffers smoltcp can borrow for a `'static` socket set.
//!
//! The rule that makes it sound: a [`Lease`] owns its slabs; the `&'static mut` slices
//! it lends go to exactly one socket, and the lease is dropped or returned only after
//! that socket was removed from the socket set and dropped ([`Relay`] keeps its socket
//! set in a field declared before its flows, so dropping the relay drops the sockets
//! first too).
//!
//! [`Relay`]: super::Relay

use std::ptr::NonNull;

/// One buffer, owned (a leaked `Box<[u8]>`, freed on drop).
struct Slab(NonNull<[u8]>);

// SAFETY: a slab is plain memory owned by one value at a time; the relay that holds it
// moves between threads only as a whole.
unsafe impl Send for Slab {}

impl Slab {
    fn new(size: usize) -> Slab {
        Slab(NonNull::from(Box::leak(vec![0u8; size].into_boxed_slice())))
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `Slab::new` and is freed once,
        // here; no lent slice is alive (the module's rule).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The receive and send buffers lent to one socket.
pub(super) struct Lease {
    rx: Slab,
    tx: Slab,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("bytes", &(self.rx.0.len() + self.tx.0.len()))
            .finish()
    }
}

impl Lease {
    /// Bytes of its two buffers.
    pub(super) fn bytes(&self) -> usize {
        self.rx.0.len() + self.tx.0.len()
    }

    /// The two buffers, for one new socket.
    ///
    /// # Safety
    /// The slices must go to a single socket, and this lease must outlive it: drop or
    /// return the lease only after that socket was removed from its set and dropped.
    pub(super) unsafe fn lend(&mut self) -> (&'static mut [u8], &'static mut [u8]) {
        // SAFETY: each slab is live (owned here) and lent once, to the one socket the
        // caller promises; the caller keeps it alive as long as that socket.
        unsafe { (&mut *self.rx.0.as_ptr(), &mut *self.tx.0.as_ptr()) }
    }
}

/// Spare slabs of one size (the configured one; smaller slabs, lent under memory
/// pressure, are freed when given back).
pub(super) struct BufPool {
    size: usize,
    keep: usize,
    spare: Vec<Slab>,
}

impl BufPool {
    /// Slabs of `size` bytes; at most `keep` leases' worth are kept spare.
    pub(super) fn new(size: usize, keep: usize) -> BufPool {
        BufPool {
            size,
            keep: keep * 2,
            spare: Vec::new(),
        }
    }

    /// The size of the slabs it keeps.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Two buffers of `size` bytes, spare ones first.
    pub(super) fn take(&mut self, size: usize) -> Lease {
        let reuse = size == self.size;
        let mut one = || {
            reuse
                .then(|| self.spare.pop())
                .flatten()
                .unwrap_or_else(|| Slab::new(size))
        };
        Lease {
            rx: one(),
            tx: one(),
        }
    }

    /// Take back the buffers of a socket that is gone (see [`Lease::lend`]).
    pub(super) fn give(&mut self, lease: Lease) {
        for s in [lease.rx, lease.tx] {
            if self.spare.len() < self.keep && s.0.len() == self.size {
                self.spare.push(s);
            }
        }
    }

    /// Spare slabs now.
    #[cfg(test)]
    pub(super) fn spare(&self) -> usize {
        self.spare.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses of a lease's two buffers.
    fn addrs(l: &mut Lease) -> [usize; 2] {
        // SAFETY: the slices are used only here, and the lease outlives them.
        let (r, t) = unsafe { l.lend() };
        r[0] = 1;
        t[0] = 2;
        [r.as_ptr() as usize, t.as_ptr() as usize]
    }

    #[test]
    fn slabs_are_reused_up_to_the_bound() {
        let mut p = BufPool::new(4096, 1);
        let mut a = p.take(4096);
        let mut first = addrs(&mut a);
        p.give(a);
        assert_eq!(p.spare(), 2);
        let mut b = p.take(4096);
        let mut again = addrs(&mut b);
        first.sort_unstable();
        again.sort_unstable();
        assert_eq!(first, again, "the same buffers serve the next socket");
        let c = p.take(4096);
        assert_eq!(p.spare(), 0);
        p.give(b);
        p.give(c);
        assert_eq!(p.spare(), 2, "one lease's worth kept, the rest freed");
        // Smaller buffers are not kept.
        let small = p.take(1024);
        assert_eq!((small.bytes(), p.spare()), (2048, 2));
        p.give(small);
        assert_eq!(p.spare(), 2);
    }
}
