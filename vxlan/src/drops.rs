//! Why a datagram or a frame is dropped: one engine counter per reason.

use std::fmt;

/// Why a datagram from the underlay is dropped (each is a counter in the
/// engine). [`Tables::ingress`](crate::Tables::ingress) checks `Short`,
/// `NoVniFlag`, `UnknownVni`, `UnknownVtep`, `InnerTruncated`, `InnerVlan`,
/// `SpoofedSource`, in that order: the first that applies is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RxDrop {
    /// Shorter than the 8-byte VXLAN header.
    Short,
    /// The I flag is clear: the VNI is not valid (RFC 7348 §5).
    NoVniFlag,
    /// The inner frame is shorter than an Ethernet header, or its IPv4 or ARP
    /// header is shorter than it says (or than ARP for IPv4 over Ethernet).
    InnerTruncated,
    /// The inner frame carries an 802.1Q / 802.1ad tag (0x8100, 0x88a8,
    /// 0x9100): a VXLAN network is one untagged segment (RFC 7348 §6.1 lets
    /// decapsulation drop them).
    InnerVlan,
    /// No network of this engine has the VNI.
    UnknownVni,
    /// The sender is not a peer VTEP of the VNI.
    UnknownVtep,
    /// The inner source MAC is not an entry of the VNI held by the sending
    /// VTEP: a VTEP may only send for the endpoints the control plane put
    /// behind it.
    SpoofedSource,
}

impl RxDrop {
    /// Every reason, in declaration order (for counter tables).
    pub const ALL: [RxDrop; 7] = [
        RxDrop::Short,
        RxDrop::NoVniFlag,
        RxDrop::InnerTruncated,
        RxDrop::InnerVlan,
        RxDrop::UnknownVni,
        RxDrop::UnknownVtep,
        RxDrop::SpoofedSource,
    ];

    /// A stable snake_case name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            RxDrop::Short => "short",
            RxDrop::NoVniFlag => "no_vni_flag",
            RxDrop::InnerTruncated => "inner_truncated",
            RxDrop::InnerVlan => "inner_vlan",
            RxDrop::UnknownVni => "unknown_vni",
            RxDrop::UnknownVtep => "unknown_vtep",
            RxDrop::SpoofedSource => "spoofed_source",
        }
    }
}

impl fmt::Display for RxDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame toward the overlay is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxDrop {
    /// The destination MAC is not in the table: no flood-and-learn here.
    UnknownUnicast,
    /// No network of this engine has the VNI.
    UnknownVni,
    /// Broadcast or multicast, and the network has no peer VTEP.
    NoPeers,
    /// Head-end replication over its rate ([`FloodLimit`](crate::FloodLimit)).
    FloodRate,
    /// Shorter than an Ethernet header.
    Malformed,
}

impl TxDrop {
    /// Every reason, in declaration order (for counter tables).
    pub const ALL: [TxDrop; 5] = [
        TxDrop::UnknownUnicast,
        TxDrop::UnknownVni,
        TxDrop::NoPeers,
        TxDrop::FloodRate,
        TxDrop::Malformed,
    ];

    /// A stable snake_case name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            TxDrop::UnknownUnicast => "unknown_unicast",
            TxDrop::UnknownVni => "unknown_vni",
            TxDrop::NoPeers => "no_peers",
            TxDrop::FloodRate => "flood_rate",
            TxDrop::Malformed => "malformed",
        }
    }
}

impl fmt::Display for TxDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
