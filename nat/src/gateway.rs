//! The gateway's own address: ARP (RFC 826) and ICMP echo (RFC 792).

use std::net::Ipv4Addr;
use std::sync::Arc;

use tapnet_switch::MacAddr;
use tapnet_wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, Ipv4Packet, Ipv4Repr, WireError, arp, ethernet, ipv4,
};

use crate::counters::GatewayCounters;

/// IANA protocol number of ICMP.
const PROTO_ICMP: u8 = 1;
/// IANA protocol number of TCP.
const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
const PROTO_UDP: u8 = 17;
/// The DNS port (RFC 1035 §4.2), served by the relay at the gateway address.
const DNS_PORT: u16 = 53;
/// TTL of the gateway's own packets (Linux's `ip_default_ttl`).
const TTL: u8 = 64;
/// IPv4 option types (IANA "IP Option Numbers", copied flag included).
mod opt {
    /// End of option list (RFC 791).
    pub(super) const EOL: u8 = 0;
    /// No operation (RFC 791).
    pub(super) const NOP: u8 = 1;
    /// Loose source and record route (RFC 791).
    pub(super) const LSRR: u8 = 131;
    /// Strict source and record route (RFC 791).
    pub(super) const SSRR: u8 = 137;
}

/// What the gateway of one network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Its MAC (tapnet: `02:42` followed by the address).
    pub mac: MacAddr,
    /// Its IPv4 address (Docker: the first usable address of the subnet).
    pub ip: Ipv4Addr,
    /// Prefix length of the network's subnet; values above 32 count as 32.
    pub prefix_len: u8,
    /// Docker's `--internal`: nothing leaves the subnet.
    pub internal: bool,
}

impl GatewayConfig {
    /// The subnet mask as a number.
    fn mask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        }
    }

    /// Whether `addr` is inside the gateway's subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let m = self.mask();
        u32::from(addr) & m == u32::from(self.ip) & m
    }

    /// The subnet's directed broadcast address, if it has one (prefixes of
    /// /31 and /32 have none, RFC 3021).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix_len < 31).then(|| Ipv4Addr::from(u32::from(self.ip) | !self.mask()))
    }
}

/// What became of a frame given to [`Gateway::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// A reply of this many bytes is at the start of `out`: send it back into
    /// the network.
    Reply(usize),
    /// Handled; nothing to send.
    Consumed,
    /// Discarded; the reason has been counted.
    Drop(GatewayDrop),
    /// Routed through the gateway to the host (egress NAT): hand the frame to the
    /// network's [`Relay`](crate::relay::Relay). Only a gateway built with
    /// [`Gateway::with_egress`] says this.
    Forward,
}

/// Why [`Gateway::handle`] dropped a frame. Each has a counter `drop_*` of the
/// same name in [`GatewayCounters`], which says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayDrop {
    /// For another station, or for everyone but not the gateway's business.
    NotForUs,
    /// Does not parse, or a checksum is wrong.
    Malformed,
    /// A source no reply can go to.
    BadSource,
    /// An IPv4 fragment.
    Fragment,
    /// IPv4 with a source route option.
    SourceRoute,
    /// IPv4 to an address outside the subnet (no NAT yet).
    NoRoute,
    /// IPv4 from or to outside the subnet of an internal network.
    Internal,
    /// Well formed, not served.
    Unsupported,
    /// The output buffer cannot hold the reply.
    NoRoom,
    /// IPv4 to an address that is never routed: loopback (127.0.0.0/8), "this network"
    /// (0.0.0.0/8) or reserved (240.0.0.0/4). The host's loopback is reached only
    /// through the gateway address, and only where the network asks for it.
    BadDestination,
}

/// The gateway address of one network: answers ARP for it and pings to it.
///
/// One `Gateway` belongs to the thread that calls [`handle`](Self::handle);
/// its counters can be read from anywhere through
/// [`counters`](Self::counters).
#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    counters: Arc<GatewayCounters>,
    /// `Some` when the network has egress.
    egress: Option<()>,
    /// UDP and TCP to the gateway address's port 53 go to the relay (its DNS server),
    /// on an internal network too.
    dns: bool,
}

impl Gateway {
    /// A gateway with `cfg` and zeroed counters.
    pub fn new(cfg: GatewayConfig) -> Gateway {
        Gateway {
            cfg: GatewayConfig {
                prefix_len: cfg.prefix_len.min(32),
                ..cfg
            },
            counters: Arc::default(),
            egress: None,
            dns: false,
        }
    }

    /// A gateway that also routes: IPv4 from the subnet to any address outside it is
    /// [`Outcome::Forward`]ed, and so are TCP and UDP to the gateway address itself
    /// (the relay serves them: replies to published connections, and the host's
    /// loopback when the network asks for it). An internal network has no egress:
    /// `cfg.internal` wins.
    pub fn with_egress(cfg: GatewayConfig) -> Gateway {
        let mut g = Gateway::new(cfg);
        if !cfg.internal {
            g.egress = Some(());
        }
        g
    }

    /// A gateway whose network has a relay: like [`Gateway::with_egress`], and UDP and
    /// TCP to the gateway address's port 53 are [`Outcome::Forward`]ed to the relay's
    /// DNS server on an internal network as well (everything else an internal network
    /// sends is dropped as by [`Gateway::new`], with the same counters).
    pub fn with_relay(cfg: GatewayConfig) -> Gateway {
        let mut g = Gateway::with_egress(cfg);
        g.dns = true;
        g
    }

    /// Its configuration (the prefix length clamped to 32).
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Its counters, shareable with other threads.
    pub fn counters(&self) -> Arc<GatewayCounters> {
        Arc::clone(&self.counters)
    }

    /// A copy of its counters.
    pub fn snapshot(&self) -> crate::GatewayCountersSnapshot {
        self.counters.snapshot()
    }

    /// Handles one Ethernet frame (no FCS) that reached the gateway's port:
    /// addressed to its MAC, broadcast, or flooded. A reply goes into `out`,
    /// from byte 0; `out` is left alone otherwise. Never panics, never
    /// allocates; every outcome is counted.
    ///
    /// * ARP request for the gateway address → [`Outcome::Reply`] (RFC 826
    ///   "Packet Reception"). Requests for other addresses → `NotForUs`.
    ///   Gratuitous ARP and replies → [`Outcome::Consumed`].
    /// * IPv4 to the gateway MAC: the header checksum must verify
    ///   (RFC 1122 §3.2.1.2), else `Malformed`. To another address of the
    ///   subnet (or a broadcast/multicast one) → `NotForUs`; outside it →
    ///   `NoRoute`, or `Internal` on an internal network.
    /// * ICMP echo request to the gateway address → echo reply (RFC 792,
    ///   RFC 1122 §3.2.2.6): addresses swapped, type 0, same identifier,
    ///   sequence number and data, TTL 64, DF set and IP ID 0 (an atomic
    ///   datagram's ID is unused, RFC 6864 §4; Linux sends 0). IP options other than source routes are not copied
    ///   into the reply: RFC 1122 asks (SHOULD) for Record Route and Timestamp
    ///   to be reflected; source-routed requests, which it would require to be
    ///   answered along the reversed route, are dropped (`SourceRoute`).
    pub fn handle(&mut self, frame: &[u8], out: &mut [u8]) -> Outcome {
        self.counters.received.inc();
        let outcome = self.dispatch(frame, out);
        let c = &*self.counters;
        match outcome {
            Outcome::Reply(_) | Outcome::Consumed => {}
            Outcome::Forward => c.forwarded.inc(),
            Outcome::Drop(r) => match r {
                GatewayDrop::NotForUs => c.drop_not_for_us.inc(),
                GatewayDrop::Malformed => c.drop_malformed.inc(),
                GatewayDrop::BadSource => c.drop_bad_source.inc(),
                GatewayDrop::Fragment => c.drop_fragment.inc(),
                GatewayDrop::SourceRoute => c.drop_source_route.inc(),
                GatewayDrop::NoRoute => c.drop_no_route.inc(),
                GatewayDrop::Internal => c.drop_internal.inc(),
                GatewayDrop::Unsupported => c.drop_unsupported.inc(),
                GatewayDrop::NoRoom => c.drop_no_room.inc(),
                GatewayDrop::BadDestination => c.drop_bad_destination.inc(),
            },
        }
        outcome
    }

    fn dispatch(&self, frame: &[u8], out: &mut [u8]) -> Outcome {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Outcome::Drop(GatewayDrop::Malformed);
        };
        let dst = eth.dst_addr();
        let to_us = dst == self.cfg.mac;
        match eth.ethertype() {
            EtherType::Arp if to_us || dst.is_broadcast() => self.arp(eth.payload(), out),
            EtherType::Ipv4 if to_us => self.ipv4(eth.src_addr(), eth.payload(), out),
            _ if !to_us => Outcome::Drop(GatewayDrop::NotForUs),
            // IPv6, VLAN-tagged frames (the network is untagged), anything else.
            _ => Outcome::Drop(GatewayDrop::Unsupported),
        }
    }

    /// RFC 826 "Packet Reception", for the one protocol address we own.
    fn arp(&self, payload: &[u8], out: &mut [u8]) -> Outcome {
        let req = match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
            Ok(r) => r,
            Err(WireError::Unsupported) => return Outcome::Drop(GatewayDrop::Unsupported),
            Err(_) => return Outcome::Drop(GatewayDrop::Malformed),
        };
        if req.source_protocol_addr == req.target_protocol_addr {
            // Gratuitous: an announcement, not a question. One claiming our
            // own address is a conflict for the control plane, not for us to
            // fight over on the wire.
            self.counters.arp_ignored.inc();
            return Outcome::Consumed;
        }
        if req.target_protocol_addr != self.cfg.ip {
            return Outcome::Drop(GatewayDrop::NotForUs);
        }
        match req.operation {
            ArpOperation::Request => {}
            ArpOperation::Reply => {
                self.counters.arp_ignored.inc();
                return Outcome::Consumed;
            }
            ArpOperation::Unknown(_) => return Outcome::Drop(GatewayDrop::Unsupported),
        }
        if !req.source_hardware_addr.is_unicast() {
            return Outcome::Drop(GatewayDrop::BadSource);
        }
        let len = ethernet::HEADER_LEN + arp::PACKET_LEN;
        let Some(out) = out.get_mut(..len) else {
            return Outcome::Drop(GatewayDrop::NoRoom);
        };
        // The reply goes to the asker's hardware address, which RFC 826 takes
        // from the packet, not from the Ethernet header.
        let mut frame = EthernetFrame::new_unchecked(out);
        EthernetRepr {
            src_addr: self.cfg.mac,
            dst_addr: req.source_hardware_addr,
            ethertype: EtherType::Arp,
        }
        .emit(&mut frame);
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.cfg.mac,
            source_protocol_addr: self.cfg.ip,
            target_hardware_addr: req.source_hardware_addr,
            target_protocol_addr: req.source_protocol_addr,
        }
        .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        self.counters.arp_replies.inc();
        Outcome::Reply(len)
    }

    /// Whether `src` may be answered: a unicast address that is not ours.
    fn bad_source(&self, src: Ipv4Addr) -> bool {
        src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
            || src.is_loopback()
            || src == self.cfg.ip
            || Some(src) == self.cfg.broadcast()
    }

    fn ipv4(&self, eth_src: MacAddr, payload: &[u8], out: &mut [u8]) -> Outcome {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            return Outcome::Drop(GatewayDrop::Malformed);
        };
        if ip.version() != 4 || !ip.verify_checksum() {
            return Outcome::Drop(GatewayDrop::Malformed);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let routed = !(dst.is_broadcast()
            || dst.is_multicast()
            || dst.is_unspecified()
            || self.cfg.contains(dst));
        if dst != self.cfg.ip && routed && never_routed(dst) {
            return Outcome::Drop(GatewayDrop::BadDestination);
        }
        if dst != self.cfg.ip && routed && self.egress.is_some() {
            // Replies must be able to come back: the source is a station of the subnet.
            if !self.cfg.contains(src) || self.bad_source(src) || !eth_src.is_unicast() {
                return Outcome::Drop(GatewayDrop::BadSource);
            }
            return Outcome::Forward;
        }
        if dst != self.cfg.ip {
            return Outcome::Drop(
                if dst.is_broadcast()
                    || dst.is_multicast()
                    || dst.is_unspecified()
                    || self.cfg.contains(dst)
                {
                    GatewayDrop::NotForUs
                } else if self.cfg.internal {
                    GatewayDrop::Internal
                } else {
                    GatewayDrop::NoRoute
                },
            );
        }
        if self.cfg.internal && !self.cfg.contains(src) {
            return Outcome::Drop(GatewayDrop::Internal);
        }
        if self.bad_source(src) || !eth_src.is_unicast() {
            return Outcome::Drop(GatewayDrop::BadSource);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Outcome::Drop(GatewayDrop::Fragment);
        }
        // `check_len` guarantees the header (options included) is in the buffer.
        if let Some(r) = payload
            .get(ipv4::HEADER_LEN..ip.header_len())
            .and_then(check_options)
        {
            return Outcome::Drop(r);
        }
        if ip.protocol() != PROTO_ICMP {
            // TCP and UDP to the gateway address belong to the relay: connections it
            // carries in from published ports come from this address, and with
            // host_loopback the host's loopback answers for it.
            if self.egress.is_some() && matches!(ip.protocol(), PROTO_TCP | PROTO_UDP) {
                return Outcome::Forward;
            }
            // The network's DNS server, on an internal network too (RFC 1035 §4.2:
            // port 53 over UDP and TCP).
            if self.dns
                && matches!(ip.protocol(), PROTO_TCP | PROTO_UDP)
                && ip.payload().get(2..4) == Some(&DNS_PORT.to_be_bytes()[..])
            {
                return Outcome::Forward;
            }
            return Outcome::Drop(GatewayDrop::Unsupported);
        }
        let (ident, seq_no, data) =
            match Icmpv4Packet::new_checked(ip.payload()).and_then(|p| Icmpv4Repr::parse(&p)) {
                Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => (ident, seq_no, data),
                // The gateway pings nobody, so replies are not for it.
                Ok(Icmpv4Repr::EchoReply { .. }) | Err(WireError::Unsupported) => {
                    return Outcome::Drop(GatewayDrop::Unsupported);
                }
                Err(_) => return Outcome::Drop(GatewayDrop::Malformed),
            };
        let icmp = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let icmp_len = icmp.buffer_len();
        let ip_at = ethernet::HEADER_LEN;
        let icmp_at = ip_at + ipv4::HEADER_LEN;
        let len = icmp_at + icmp_len;
        let Some(out) = out.get_mut(..len) else {
            return Outcome::Drop(GatewayDrop::NoRoom);
        };
        let reply_ip = Ipv4Repr {
            src_addr: self.cfg.ip,
            dst_addr: src,
            protocol: PROTO_ICMP,
            payload_len: icmp_len,
            ttl: TTL,
            // Same service class; ICMP is not ECN-capable (RFC 3168 §5).
            dscp: ip.dscp(),
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut frame = EthernetFrame::new_unchecked(&mut *out);
        EthernetRepr {
            src_addr: self.cfg.mac,
            dst_addr: eth_src,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut frame);
        reply_ip.emit(&mut Ipv4Packet::new_unchecked(&mut out[ip_at..icmp_at]));
        icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut out[icmp_at..]));
        self.counters.echo_replies.inc();
        Outcome::Reply(len)
    }
}

/// Loopback, "this network" and reserved (class E) destinations, which no router
/// forwards (RFC 1122 §3.2.1.3, RFC 1112 §4).
pub(crate) fn never_routed(dst: Ipv4Addr) -> bool {
    let o = dst.octets()[0];
    o == 127 || o == 0 || o >= 240
}

/// Walks IPv4 options (RFC 791 §3.1, "Options"): `Malformed` for an option
/// whose length runs past the header or is below 2, `SourceRoute` for LSRR or
/// SSRR, `None` when the reply can go out without them.
fn check_options(opts: &[u8]) -> Option<GatewayDrop> {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            opt::EOL => return None,
            opt::NOP => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return Some(GatewayDrop::Malformed);
                };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return Some(GatewayDrop::Malformed);
                }
                if kind == opt::LSRR || kind == opt::SSRR {
                    return Some(GatewayDrop::SourceRoute);
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
