//! Per-port ingress guards: the source addresses a port may send from
//! (anti-spoofing) and the rate at which it may make the switch flood.
//!
//! A switch that knows its endpoints drops what they cannot legitimately send:
//! a frame whose Ethernet source, IPv4/IPv6 source or ARP sender is not the
//! port's own (RFC 2827 ingress filtering, applied per port as a bridge's
//! "port security" does). Without it one frame with a neighbour's source
//! address teaches whoever learns from frames (a MAC table, a relay's
//! neighbour cache, the neighbours' ARP caches) to send that neighbour's
//! traffic to the sender.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tapnet_wire::{MacAddr, ethertype, payload_ethertype};

use crate::error::SwitchError;

/// The addresses one port may send from, set by the control plane (which
/// made the endpoint and knows its MAC and addresses).
///
/// On a port with a binding the switch drops, and counts as `spoof_drops`:
/// - a frame whose Ethernet source is not [`mac`](Self::mac);
/// - an ARP packet (RFC 826) that is not Ethernet/IPv4, or whose sender
///   hardware address is not `mac`, or (when addresses are bound) whose
///   sender protocol address is neither a bound IPv4 address nor 0.0.0.0 (an
///   ARP probe, RFC 5227 §2.1.1);
/// - when addresses are bound, an IPv4 packet whose source is not a bound
///   IPv4 address, and an IPv6 packet whose source is neither a bound IPv6
///   address, nor the link-local address derived from `mac` (RFC 4291
///   §2.5.6 / appendix A), nor `::` in an ICMPv6 or hop-by-hop packet
///   (duplicate address detection, RFC 4862 §5.4, and MLD reports, RFC 3810
///   §5.2.13);
/// - a frame too short to read the source address its EtherType promises.
///
/// The checks look through 802.1Q/802.1ad tags. Other EtherTypes pass on
/// the MAC check alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBinding {
    /// The only Ethernet source (and ARP sender hardware address) allowed.
    pub mac: MacAddr,
    /// The IP sources allowed, or `None` to check the MAC only (an endpoint
    /// without an address from IPAM).
    pub addrs: Option<Vec<IpAddr>>,
}

impl PortBinding {
    /// Most addresses one binding holds: the check is a linear scan per frame.
    pub const MAX_ADDRS: usize = 16;

    /// Only frames from `mac` (any IP source).
    pub fn mac_only(mac: MacAddr) -> PortBinding {
        PortBinding { mac, addrs: None }
    }

    /// Frames from `mac` with an IP source in `addrs` (plus the IPv6
    /// exceptions in the type's docs).
    pub fn new(mac: MacAddr, addrs: impl IntoIterator<Item = IpAddr>) -> PortBinding {
        PortBinding {
            mac,
            addrs: Some(addrs.into_iter().collect()),
        }
    }

    /// Checks what [`Switch::set_binding`](crate::Switch::set_binding)
    /// requires: a unicast, non-zero MAC and at most
    /// [`MAX_ADDRS`](Self::MAX_ADDRS) addresses.
    pub(crate) fn validate(&self) -> Result<(), SwitchError> {
        if self.mac.is_multicast() || self.mac.is_zero() {
            return Err(SwitchError::InvalidBindingMac(self.mac));
        }
        match &self.addrs {
            Some(a) if a.len() > Self::MAX_ADDRS => Err(SwitchError::TooManyBoundAddresses {
                count: a.len(),
                max: Self::MAX_ADDRS,
            }),
            _ => Ok(()),
        }
    }

    /// The IPv6 link-local address of `mac` by modified EUI-64 (RFC 4291
    /// appendix A): fe80::, the MAC with the universal/local bit flipped and
    /// ff:fe in the middle.
    pub fn link_local(mac: MacAddr) -> Ipv6Addr {
        let m = mac.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        match &self.addrs {
            None => true,
            Some(a) => a.contains(&IpAddr::V4(ip)),
        }
    }

    fn allows_v6(&self, ip: Ipv6Addr, next_header: u8) -> bool {
        const HOP_BY_HOP: u8 = 0;
        const ICMPV6: u8 = 58;
        match &self.addrs {
            None => true,
            Some(a) => {
                a.contains(&IpAddr::V6(ip))
                    || ip == Self::link_local(self.mac)
                    || (ip.is_unspecified() && matches!(next_header, HOP_BY_HOP | ICMPV6))
            }
        }
    }

    /// Whether `frame` (at least an Ethernet header) may come from a port
    /// with this binding.
    pub fn allows(&self, frame: &[u8]) -> bool {
        if frame.get(6..12) != Some(&self.mac.0[..]) {
            return false;
        }
        let Some((et, l3)) = payload_ethertype(frame) else {
            // More tags than anyone sends: nothing behind them can be checked.
            return false;
        };
        let l3 = &frame[l3..];
        match et {
            ethertype::IPV4 => match l3.get(12..16) {
                Some(s) => self.allows_v4(Ipv4Addr::new(s[0], s[1], s[2], s[3])),
                None => false,
            },
            ethertype::IPV6 => match (l3.get(8..24), l3.get(6)) {
                (Some(s), Some(&nh)) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(s);
                    self.allows_v6(Ipv6Addr::from(a), nh)
                }
                _ => false,
            },
            ethertype::ARP => self.allows_arp(l3),
            _ => true,
        }
    }

    /// An Ethernet/IPv4 ARP packet whose sender is this port.
    fn allows_arp(&self, arp: &[u8]) -> bool {
        // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4: RFC 826.
        if arp.len() < 28 || arp[..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return false;
        }
        if arp[8..14] != self.mac.0 {
            return false;
        }
        let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
        spa.is_unspecified() || self.allows_v4(spa)
    }
}

/// How fast one port may make its domain flood: a token bucket per port,
/// one token per broadcast, multicast or unknown-unicast frame (each of
/// which the switch copies to every port of the domain). A storm from one
/// port then costs the others at most `rate` copies a second each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimit {
    /// Tokens added per second (default [`DEFAULT_RATE`](Self::DEFAULT_RATE)).
    pub rate: u32,
    /// Bucket size: floods allowed back to back after a quiet spell (default
    /// [`DEFAULT_BURST`](Self::DEFAULT_BURST)). At least 1 is used.
    pub burst: u32,
}

impl FloodLimit {
    /// Default sustained rate: 4,000 flooded frames a second per port, far
    /// above what ARP, DHCP and service discovery of a container send, far
    /// below what a storm does.
    pub const DEFAULT_RATE: u32 = 4_000;
    /// Default burst: 1,000 frames.
    pub const DEFAULT_BURST: u32 = 1_000;
}

impl Default for FloodLimit {
    fn default() -> Self {
        FloodLimit {
            rate: Self::DEFAULT_RATE,
            burst: Self::DEFAULT_BURST,
        }
    }
}

const NANOS: u64 = 1_000_000_000;

/// A token bucket in nano-tokens (a token is 10^9), refilled from the
/// caller's clock: integer arithmetic, no float, no clock read. It starts full.
/// The switch's per-port flood limit and the overlay's replication limit
/// (`tapnet_vxlan::FloodLimit`) are this bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    nano_tokens: u64,
    last: Option<u64>,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket::new()
    }
}

impl TokenBucket {
    /// A full bucket (filled on first use).
    pub const fn new() -> TokenBucket {
        TokenBucket {
            nano_tokens: 0,
            last: None,
        }
    }

    /// Takes a token at `now` if there is one, for the switch's `limit` (whose
    /// burst is at least 1).
    #[inline]
    pub(crate) fn take(&mut self, limit: FloodLimit, now: Duration) -> bool {
        self.take_at(limit.rate, limit.burst.max(1), now)
    }

    /// Takes a token at `now` if there is one, refilling `rate` tokens a
    /// second up to `burst` (a burst of 0 allows nothing). A clock that went
    /// back adds nothing.
    #[inline]
    pub fn take_at(&mut self, rate: u32, burst: u32, now: Duration) -> bool {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let cap = u64::from(burst) * NANOS;
        self.nano_tokens = match self.last {
            None => cap,
            Some(last) => {
                let elapsed = now.saturating_sub(last);
                self.nano_tokens
                    .saturating_add(elapsed.saturating_mul(u64::from(rate)))
                    .min(cap)
            }
        };
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if self.nano_tokens >= NANOS {
            self.nano_tokens -= NANOS;
            true
        } else {
            false
        }
    }
}
