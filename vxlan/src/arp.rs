//! Proxy ARP: a local ARP request (RFC 826) for a remote endpoint's address is
//! answered here, without crossing the underlay, because the control plane
//! already knows who holds the address (RFC 7348 §4 allows the mapping to come
//! from elsewhere than flood-and-learn).

use std::net::Ipv4Addr;

use tapnet_wire::arp::{self, ArpOperation, ArpPacket, ArpRepr};
use tapnet_wire::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use tapnet_wire::{MacAddr, ethertype};

/// Length of an Ethernet frame holding an IPv4 ARP packet, without padding.
const REPLY_LEN: usize = ethernet::HEADER_LEN + arp::PACKET_LEN;

/// The ARP request in `frame`, if it is one: an untagged Ethernet frame of
/// EtherType ARP holding a well-formed IPv4-over-Ethernet request.
pub(crate) fn request(frame: &[u8]) -> Option<ArpRepr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if u16::from(eth.ethertype()) != ethertype::ARP {
        return None;
    }
    let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
    (repr.operation == ArpOperation::Request).then_some(repr)
}

/// The IPv4 address an ARP request in `frame` asks for, if `frame` is one.
pub(crate) fn request_target(frame: &[u8]) -> Option<Ipv4Addr> {
    request(frame).map(|r| r.target_protocol_addr)
}

/// Write into `out` the ARP reply that answers `request` (an Ethernet+ARP
/// request frame) with `mac` as the owner of the target address: returns its
/// length (42), or `None` if `request` is not a well-formed ARP request for
/// IPv4 over Ethernet (RFC 826) or `out` is too small.
///
/// The reply goes to the requester's hardware address (`ar$sha`) from `mac`,
/// says the target address is at `mac`, and is addressed back to the sender's
/// hardware and protocol addresses. Built with wire's ARP and Ethernet
/// emitters; bytes of `out` past 42 are left alone.
pub fn arp_reply(request: &[u8], mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    let req = self::request(request)?;
    let out = out.get_mut(..REPLY_LEN)?;
    let mut eth = EthernetFrame::new_unchecked(out);
    EthernetRepr {
        src_addr: mac,
        dst_addr: req.source_hardware_addr,
        ethertype: EtherType::Arp,
    }
    .emit(&mut eth);
    ArpRepr {
        operation: ArpOperation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: req.target_protocol_addr,
        target_hardware_addr: req.source_hardware_addr,
        target_protocol_addr: req.source_protocol_addr,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    Some(REPLY_LEN)
}
