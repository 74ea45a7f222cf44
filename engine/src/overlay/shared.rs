//! What the overlay's ports share with the API: counters and the send sockets.

use std::sync::Arc;

use super::io::Underlay;

tapnet_switch::counters! {
    /// The VTEP's counters: underlay I/O and every reason a datagram or frame went
    /// nowhere.
    pub struct OverlayCounters / OverlayStats {
        /// `recvmmsg` calls that returned datagrams.
        rx_syscalls,
        /// Datagrams received (a GRO read counts each it held).
        rx_datagrams,
        /// UDP payload bytes received.
        rx_bytes,
        /// Inner frames handed to the switch.
        rx_frames,
        /// Inner TCP segments merged into a superframe before the switch.
        rx_merged,
        /// Datagrams longer than a slot (`MSG_TRUNC`).
        rx_truncated,
        /// Reads that failed.
        rx_errors,
        /// The pool was empty: a read put off (its datagrams wait in the socket), or a
        /// frame of a GRO read or a proxy-ARP reply dropped.
        rx_no_buffer,
        /// Datagram shorter than a VXLAN header.
        drop_short,
        /// VXLAN header without the I flag.
        drop_no_vni_flag,
        /// Inner frame shorter than its headers.
        drop_inner_truncated,
        /// Inner frame with an 802.1Q or 802.1ad tag.
        drop_inner_vlan,
        /// VNI this engine does not serve.
        drop_unknown_vni,
        /// Sender not a peer VTEP of that VNI.
        drop_unknown_vtep,
        /// Inner source MAC not placed on the sending VTEP by the table.
        drop_spoofed_source,
        /// `sendmmsg` calls.
        tx_syscalls,
        /// Datagrams sent (a GSO message counts each it carried).
        tx_datagrams,
        /// UDP payload bytes sent.
        tx_bytes,
        /// Messages sent with UDP GSO.
        tx_gso_messages,
        /// Datagrams the kernel did not take (socket buffer full) or that failed.
        tx_errors,
        /// Unicast to a MAC the table does not hold (no flood-and-learn).
        drop_unknown_unicast,
        /// Broadcast or multicast on a network with no peer.
        drop_no_peers,
        /// Broadcast or multicast over the network's replication rate.
        drop_flood_rate,
        /// Frame shorter than an Ethernet header.
        drop_malformed,
        /// Frame that left no room in front of it for the VXLAN header and could not be
        /// copied.
        drop_no_headroom,
        /// Copies sent by head-end replication.
        tx_flood_copies,
        /// ARP requests answered locally for remote endpoints.
        proxy_arp,
    }
}

/// The sockets sends leave from, shared by every overlay port's transmit half.
#[derive(Debug)]
pub(crate) struct Senders {
    pub(crate) socks: Vec<Arc<dyn Underlay>>,
    pub(crate) peer_port: u16,
}
