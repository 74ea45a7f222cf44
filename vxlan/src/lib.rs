//! Sans-IO VXLAN overlay of tapnet (RFC 7348): encapsulation and decapsulation
//! decisions, and the per-VNI tables that drive them.
//!
//! A VXLAN network is a VNI (a 24-bit network id) shared by several VTEPs
//! (tunnel endpoints: hosts on the IPv4 underlay). Each engine serves some VNIs;
//! for each it knows its peer VTEPs and which remote MAC (and IPv4 address)
//! lives behind which VTEP. There is no flood-and-learn (RFC 7348 §4.1): the
//! control plane fills the [`Tables`], and a frame to an unknown unicast MAC is
//! dropped rather than flooded. Broadcast and multicast go to every peer
//! (head-end replication, rate-limited by [`FloodLimit`]); ARP requests for a
//! known remote address are answered locally ([`arp_reply`]).
//!
//! Nothing here does I/O. The engine owns the UDP socket on the underlay and the
//! buffers: toward the overlay it asks [`Tables::egress`] where a frame goes,
//! writes the outer headers ([`write_header`], [`source_port`]) into the pool
//! slot's headroom in front of the frame and sends; from the underlay it hands
//! each datagram to [`Tables::ingress`], which says which local network the
//! inner frame belongs to, or why it is dropped ([`RxDrop`], one counter each).
//! [`Tables`] is an immutable snapshot: the control path clones it, changes the
//! clone and publishes it; the datapath only reads.

mod arp;
mod drops;
mod flood;
mod flow;
mod tables;

pub use arp::arp_reply;
pub use drops::{RxDrop, TxDrop};
pub use flood::{FLOOD_BURST, FLOOD_RATE, FloodLimit};
pub use flow::{SOURCE_PORTS, source_port};
pub use tables::{Egress, Entry, Ingress, MAX_ENTRIES, Network, TableError, Tables};
pub use tapnet_wire::MacAddr;
pub use tapnet_wire::vxlan::{VXLAN_HEADER_LEN, VXLAN_PORT, Vni};

/// Outer headers a VXLAN datagram adds on an IPv4 underlay: Ethernet 14 +
/// IPv4 20 + UDP 8 + VXLAN 8 (RFC 7348 §5). An overlay port's MTU is the
/// underlay's minus the 36 bytes after the outer Ethernet header.
pub const OVERHEAD: u32 = 50;

/// Write the 8-byte VXLAN header for `vni` into `hdr`: flags `0x08` (the I
/// flag), the VNI, every reserved bit zero (RFC 7348 §5).
pub fn write_header(hdr: &mut [u8; VXLAN_HEADER_LEN], vni: Vni) {
    tapnet_wire::vxlan::Packet::new_unchecked(&mut hdr[..]).set_vni(vni);
}

#[cfg(test)]
mod tests;
