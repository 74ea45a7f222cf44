//! One memory budget for the buffers of every relay of a host: the TCP sockets'
//! buffers (reserved whole for a flow's life: their free room is the window the
//! container and the host see) and the datagrams queued toward host sockets.
//!
//! The budget is a plain value: all the relays of a host run on one thread, which owns
//! it and lends it (`&mut`) to the relay calls that reserve memory. What a relay frees
//! it keeps as `released` until the thread calls [`Relay::settle`](super::Relay::settle)
//! (once per pass), and a relay that goes away gives back all it holds
//! ([`Relay::reserved`](super::Relay::reserved)).
//!
//! Backpressure before drops: while the budget has room, a new TCP flow gets buffers of
//! the configured size; once what is left gets low, each new flow gets smaller ones (a
//! smaller window: its peers send less at a time), down to [`MIN_TCP_BUFFER`]; only
//! when even that does not fit is the flow refused (the container or the client gets a
//! reset). Datagrams toward the host are dropped when they do not fit.

/// Smallest buffer per direction a TCP flow gets under pressure: a few segments at the
/// largest MSS, enough to keep a connection moving.
pub const MIN_TCP_BUFFER: usize = 16 * 1024;
/// Default budget of a host's flow buffers: 128 TCP flows with 1 MiB each way, then
/// smaller windows (the flow bounds alone allow 2 GiB per network).
pub const DEFAULT_FLOW_MEMORY: usize = 256 * 1024 * 1024;

/// Bytes the relays of a host may hold in flow buffers (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    limit: usize,
    used: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_FLOW_MEMORY)
    }
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    /// Its size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Bytes left.
    pub fn free(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Hold `n` bytes more, if they fit.
    pub(super) fn take(&mut self, n: usize) -> bool {
        if n > self.free() {
            return false;
        }
        self.used += n;
        true
    }

    /// Give back `n` bytes.
    pub fn give(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }

    /// The buffer size per direction for a new TCP flow that would like `want`: `want`
    /// while both buffers take at most a quarter of what is left, else the largest half,
    /// quarter, … of it that does, not below [`MIN_TCP_BUFFER`] (where both fit at all).
    /// `None` when not even that fits.
    pub(super) fn tcp_buffer(&self, want: usize) -> Option<usize> {
        let free = self.free();
        let mut size = want.max(MIN_TCP_BUFFER);
        while size > MIN_TCP_BUFFER && 2 * size > free / 4 {
            size = (size / 2).max(MIN_TCP_BUFFER);
        }
        (2 * size <= free).then_some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_shrink_before_flows_are_refused() {
        let mib = 1024 * 1024;
        let mut b = Budget::new(16 * mib);
        // 2 MiB of 16 free: a quarter, full size.
        assert_eq!(b.tcp_buffer(mib), Some(mib));
        assert!(b.take(12 * mib));
        // 4 MiB left: 2 × 512 KiB is a quarter of it.
        assert_eq!(b.tcp_buffer(mib), Some(mib / 2));
        assert!(b.take(4 * mib - 40 * 1024));
        // 40 KiB left: the smallest buffers still fit, once.
        assert_eq!(b.tcp_buffer(mib), Some(MIN_TCP_BUFFER));
        assert!(b.take(2 * MIN_TCP_BUFFER));
        assert_eq!(b.tcp_buffer(mib), None);
        assert!(!b.take(b.free() + 1));
        b.give(usize::MAX);
        assert_eq!((b.used(), b.free()), (0, 16 * mib));
    }
}
