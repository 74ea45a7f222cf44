//! The gateway's named statistics.

use tapnet_switch::counters;

counters! {
    /// Counters of one [`Gateway`](crate::Gateway). Written only by the thread
    /// that calls [`Gateway::handle`](crate::Gateway::handle); readable from
    /// any thread. Every frame handled lands in exactly one of `arp_replies`,
    /// `echo_replies`, `arp_ignored`, `forwarded` or a `drop_*` counter.
    pub struct GatewayCounters / GatewayCountersSnapshot {
        /// Frames passed to [`Gateway::handle`](crate::Gateway::handle).
        received,
        /// ARP requests for the gateway address answered (RFC 826).
        arp_replies,
        /// ICMP echo requests to the gateway address answered (RFC 792).
        echo_replies,
        /// ARP packets that need no answer: gratuitous announcements (sender
        /// and target address equal, RFC 5227 §3) and replies (the gateway
        /// sends no requests yet).
        arp_ignored,
        /// Frames for another station: to another MAC (the switch floods
        /// unknown unicast here), ARP for another address, IPv4 to another
        /// address of the subnet, to a broadcast or multicast address.
        drop_not_for_us,
        /// Frames that do not parse: truncated headers, bad IPv4 header or
        /// ICMP checksums, bad lengths, malformed IPv4 options.
        drop_malformed,
        /// Requests from an address no reply can go to: a multicast, broadcast
        /// or zero source MAC or IPv4 address, loopback, or the gateway's own.
        drop_bad_source,
        /// IPv4 fragments (the gateway does not reassemble; echo requests
        /// fit one frame at any sane MTU).
        drop_fragment,
        /// IPv4 with a loose or strict source route option (LSRR/SSRR), which
        /// Linux also drops by default (`accept_source_route=0`).
        drop_source_route,
        /// IPv4 to an address outside the subnet on a network without egress.
        drop_no_route,
        /// IPv4 from or to an address outside the subnet on an internal
        /// network (Docker's `--internal`: no traffic leaves the subnet).
        drop_internal,
        /// Well formed but not served: other EtherTypes (IPv6, VLAN-tagged),
        /// other IP protocols or ICMP types, non-Ethernet/IPv4 ARP.
        drop_unsupported,
        /// A reply was due but the output buffer was too small for it.
        drop_no_room,
        /// IPv4 to a loopback, "this network" or reserved address, which is never
        /// routed.
        drop_bad_destination,
        /// Frames routed to the host (egress NAT, or the host's loopback through
        /// the gateway address).
        forwarded,
    }
}
