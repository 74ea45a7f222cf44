//! Sans-IO byte formats of tapnet: typed zero-copy views over packet bytes, in
//! the manner of `smoltcp::wire`, for every header the engine, the switch and
//! the NAT read or write, and the VXLAN header of the overlay.
//!
//! Every header comes in two layers:
//!
//! * A **view** (`EthernetFrame<T>`, `Ipv4Packet<T>`, …) wraps any
//!   `T: AsRef<[u8]>` without copying. `new_unchecked` wraps blindly;
//!   `check_len` verifies the buffer holds every field the getters read;
//!   `new_checked` does both, after which no getter panics. Setters exist when
//!   `T: AsMut<[u8]>` and rewrite the bytes in place.
//! * A **`Repr`** is the header's meaning as plain values: `parse` validates a
//!   view and lifts it out, `emit` writes it into a view, `buffer_len` says how
//!   many header bytes `emit` writes.
//!
//! All multi-byte fields are big-endian (network order).
//!
//! Nothing here does I/O, reads a clock or allocates per packet: bad bytes are
//! errors for the caller to count, never panics.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gro;
pub mod gso;
pub mod icmpv4;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vnet;
pub mod vxlan;

mod mac;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use checksum::IpPair;
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, ethertype, payload_ethertype};
pub use icmpv4::{Icmpv4Message, Icmpv4Packet, Icmpv4Repr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use mac::{MacAddr, MacParseError};
pub use tcp::{TcpFlags, TcpOption, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{VlanRepr, VlanTag};
pub use vnet::{VNET_HDR_LEN, VnetHdr};
pub use vxlan::Vni;

/// Why bytes could not be viewed or parsed. Small and `Copy`: this is the
/// hot-path error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header, or than a length field says.
    #[error("packet truncated: buffer shorter than its header or length field")]
    Truncated,
    /// A field holds a value the format forbids (wrong version, length field
    /// smaller than the header, reserved VLAN ID, …).
    #[error("malformed packet: a header field holds an invalid value")]
    Malformed,
    /// The header checksum does not verify.
    #[error("header checksum mismatch")]
    Checksum,
    /// Well formed, but a variant this code does not handle (e.g. ARP for a
    /// hardware type other than Ethernet).
    #[error("unsupported packet variant")]
    Unsupported,
}

/// A byte range of a fixed-position field.
type Field = core::ops::Range<usize>;

/// Reads a big-endian `u16` at `at`. Callers have checked the length.
#[inline]
fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes a big-endian `u16` at `at`. Callers have checked the length.
#[inline]
fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
