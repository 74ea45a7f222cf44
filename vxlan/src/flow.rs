//! The outer UDP source port: entropy for the underlay's ECMP (RFC 7348 §5).

use core::ops::RangeInclusive;

use tapnet_wire::ipv4::Ipv4Packet;
use tapnet_wire::{ethertype, payload_ethertype, tcp, udp};

/// The dynamic port range RFC 7348 §5 recommends for the outer source port.
pub const SOURCE_PORTS: RangeInclusive<u16> = 49152..=65535;

/// FNV-1a, 64 bits: a fixed-key hash, the same in every process.
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// The state through a final avalanche (MurmurHash3's `fmix64`), so that
    /// the low bits the fold keeps depend on every input byte.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The outer UDP source port for `inner` (RFC 7348 §5): a hash of the inner
/// flow folded into `range` (inclusive), so that the underlay's ECMP spreads
/// flows while keeping each flow's datagrams in order.
///
/// The hash covers the Ethernet addresses and, for IPv4 (behind VLAN tags or
/// not), the addresses, the protocol and, for TCP and UDP outside non-first
/// fragments, the ports. Both directions of a flow need not get the same port.
/// A frame that cannot be parsed that far hashes what it has of its Ethernet
/// addresses. Deterministic: no per-process seed. An empty range (start above
/// end) gives its start.
pub fn source_port(inner: &[u8], range: RangeInclusive<u16>) -> u16 {
    let (lo, hi) = (*range.start(), *range.end());
    if lo >= hi {
        return lo;
    }
    let mut h = Fnv(Fnv::OFFSET);
    h.write(&inner[..inner.len().min(12)]);
    if let Some((ethertype::IPV4, at)) = payload_ethertype(inner) {
        if let Ok(ip) = Ipv4Packet::new_checked(&inner[at..]) {
            let proto = ip.protocol();
            h.write(&ip.src_addr().octets());
            h.write(&ip.dst_addr().octets());
            h.write(&[proto]);
            if (proto == tcp::PROTOCOL || proto == udp::PROTOCOL) && ip.frag_offset() == 0 {
                if let Some(ports) = ip.payload().get(..4) {
                    h.write(ports);
                }
            }
        }
    }
    let span = u64::from(hi - lo) + 1;
    // `h % span` < span ≤ 65536 and lo + it ≤ hi: the sum fits in u16.
    lo + (h.finish() % span) as u16
}
