//! The Internet checksum (RFC 1071) and the pseudo-header sums that the TCP
//! (RFC 9293 §3.1) and UDP (RFC 768) checksums cover, for IPv4 (RFC 791) and
//! IPv6 (RFC 8200 §8.1).
//!
//! A *sum* here is the one's-complement sum of 16-bit big-endian words, folded
//! to 16 bits and not complemented: sums of separate pieces combine with
//! [`combine`], in any order (RFC 1071 §2(A), commutative and associative). The
//! *checksum*, the value stored in a header, is the complement of the sum of
//! everything it covers ([`finish`], or [`checksum`] for one piece of bytes).
//! A buffer whose checksum field is right sums to `0xffff`.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use tapnet_wire::checksum;
//!
//! // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
//! let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
//! assert_eq!(checksum::ones_complement_sum(&data), 0xddf2);
//! assert_eq!(checksum::checksum(&data), !0xddf2);
//!
//! // An empty UDP datagram 10.0.0.1:53 -> 10.0.0.2:5353, pseudo-header and
//! // datagram summed apart: 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 0x0011 + 0x0008
//! // = 0x141c, 0x0035 + 0x14e9 + 0x0008 + 0x0000 = 0x1526; together 0x2942.
//! let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! let udp = [0x00, 0x35, 0x14, 0xe9, 0x00, 0x08, 0x00, 0x00];
//! let pseudo = checksum::pseudo_header_v4(src, dst, 17, 8);
//! assert_eq!(pseudo, 0x141c);
//! let sum = checksum::combine(pseudo, checksum::ones_complement_sum(&udp));
//! assert_eq!(checksum::non_zero(checksum::finish(sum)), !0x2942);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// The one's-complement sum (RFC 1071 §4.1) of `data` taken as big-endian
/// 16-bit words, an odd last byte padded with zero; folded to 16 bits, not
/// complemented. 0 only for data that is all zero bytes (or empty).
///
/// Native-endian 32-bit words go into four 64-bit accumulators (no carry
/// handling needed below 2^32 words, i.e. 16 GiB), which the compiler
/// vectorises; one fold and, on little-endian hosts, one byte swap at the end
/// (RFC 1071 §2(B): the sum is independent of byte order).
#[inline]
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut acc = [0u64; 4];
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        acc[0] += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        acc[1] += u64::from(u32::from_ne_bytes([c[4], c[5], c[6], c[7]]));
        acc[2] += u64::from(u32::from_ne_bytes([c[8], c[9], c[10], c[11]]));
        acc[3] += u64::from(u32::from_ne_bytes([c[12], c[13], c[14], c[15]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 16];
    tail[..rest.len()].copy_from_slice(rest);
    for w in tail.chunks_exact(4) {
        acc[0] += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let s = s as u16;
    if cfg!(target_endian = "little") {
        s.swap_bytes()
    } else {
        s
    }
}

/// One's-complement addition of two sums (RFC 1071 §1): the sum of two pieces
/// from the sums of each. Each piece must start at an even offset of the
/// whole, or its sum must be byte-swapped first (RFC 1071 §2(B)).
#[inline]
pub const fn combine(a: u16, b: u16) -> u16 {
    let s = a as u32 + b as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The checksum field value for everything that sums to `sum`: its
/// complement (RFC 1071 §1).
#[inline]
pub const fn finish(sum: u16) -> u16 {
    !sum
}

/// The Internet checksum of `data`: [`finish`] of its
/// [`ones_complement_sum`], the value that goes in a checksum field which
/// `data` holds as zero.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(ones_complement_sum(data))
}

/// A computed checksum of 0 stored as `0xffff`, its other one's-complement
/// form: for UDP a 0 in the field means "no checksum" (RFC 768, RFC 8200
/// §8.1), and Linux stores every completed partial checksum this way.
#[inline]
pub const fn non_zero(checksum: u16) -> u16 {
    if checksum == 0 { 0xffff } else { checksum }
}

/// Adds a 32-bit length as two 16-bit words.
#[inline]
const fn add_len(sum: u16, len: u32) -> u16 {
    combine(combine(sum, (len >> 16) as u16), len as u16)
}

/// The sum of the IPv4 pseudo-header that TCP and UDP checksums cover
/// (RFC 9293 §3.1, RFC 768): source and destination address, zero, protocol,
/// and `len`, the TCP or UDP length (header and data). Pass `len` 0 for the
/// sum without the length, to [`combine`] with each segment's own.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u16 {
    let (s, d) = (src.octets(), dst.octets());
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(protocol),
        len,
    ];
    words.iter().fold(0, |acc, &w| combine(acc, w))
}

/// The sum of the IPv6 pseudo-header that upper-layer checksums cover
/// (RFC 8200 §8.1): source and destination address, the 32-bit upper-layer
/// packet length `len`, three zero bytes and the next-header value of the
/// upper-layer protocol. Pass `len` 0 for the sum without the length.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u16 {
    let mut addrs = [0u8; 32];
    addrs[..16].copy_from_slice(&src.octets());
    addrs[16..].copy_from_slice(&dst.octets());
    add_len(
        combine(ones_complement_sum(&addrs), u16::from(next_header)),
        len,
    )
}

/// The source and destination address of the IP header around a TCP or UDP
/// packet: what its pseudo-header takes from the network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpPair {
    /// An IPv4 packet's addresses.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
    },
    /// An IPv6 packet's addresses.
    V6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
    },
}

impl From<(Ipv4Addr, Ipv4Addr)> for IpPair {
    /// `(src, dst)`.
    fn from((src, dst): (Ipv4Addr, Ipv4Addr)) -> IpPair {
        IpPair::V4 { src, dst }
    }
}

impl From<(Ipv6Addr, Ipv6Addr)> for IpPair {
    /// `(src, dst)`.
    fn from((src, dst): (Ipv6Addr, Ipv6Addr)) -> IpPair {
        IpPair::V6 { src, dst }
    }
}

impl IpPair {
    /// The pseudo-header sum for `protocol` (IANA protocol number / IPv6 next
    /// header) and an upper-layer length of `len` bytes: see
    /// [`pseudo_header_v4`] and [`pseudo_header_v6`]. For IPv4 a `len` above
    /// 65535, which no IPv4 packet carries, is summed as a 32-bit value.
    pub fn pseudo_header(&self, protocol: u8, len: u32) -> u16 {
        match self {
            IpPair::V4 { src, dst } => add_len(pseudo_header_v4(*src, *dst, protocol, 0), len),
            IpPair::V6 { src, dst } => pseudo_header_v6(src, dst, protocol, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 the slow way: one word at a time.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for w in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn known_sums() {
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(ones_complement_sum(&[]), 0);
        assert_eq!(ones_complement_sum(&[0xab]), 0xab00);
        assert_eq!(ones_complement_sum(&[0x01]), 0x0100);
        assert_eq!(ones_complement_sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(ones_complement_sum(&[0xff; 64]), 0xffff);
        assert_eq!(checksum(&[0xff; 64]), 0);
        assert_eq!(non_zero(checksum(&[0xff; 64])), 0xffff);
        assert_eq!(non_zero(0x1234), 0x1234);
    }

    #[test]
    fn matches_naive_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for start in 0..2 {
            for end in start..data.len() {
                let d = &data[start..end];
                assert_eq!(ones_complement_sum(d), naive_sum(d), "{start}..{end}");
            }
        }
    }

    #[test]
    fn combine_is_the_sum_of_pieces() {
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        for cut in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                combine(ones_complement_sum(a), ones_complement_sum(b)),
                ones_complement_sum(&data)
            );
        }
        assert_eq!(combine(0xffff, 0x0001), 0x0001);
        assert_eq!(combine(0x8000, 0x8000), 0x0001);
    }

    proptest! {
        #[test]
        fn matches_naive(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(ones_complement_sum(&data), naive_sum(&data));
        }
    }

    #[test]
    fn pseudo_headers_match_their_bytes() {
        let (s4, d4) = (
            Ipv4Addr::new(172, 17, 0, 2),
            Ipv4Addr::new(93, 184, 216, 34),
        );
        let mut ph = Vec::new();
        ph.extend_from_slice(&s4.octets());
        ph.extend_from_slice(&d4.octets());
        ph.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(pseudo_header_v4(s4, d4, 6, 1500), naive_sum(&ph));
        let pair = IpPair::from((s4, d4));
        assert_eq!(pair, IpPair::V4 { src: s4, dst: d4 });
        assert_eq!(pair.pseudo_header(6, 1500), naive_sum(&ph));

        let s6: Ipv6Addr = "fd00::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::ff:2".parse().unwrap();
        let mut ph = Vec::new();
        ph.extend_from_slice(&s6.octets());
        ph.extend_from_slice(&d6.octets());
        ph.extend_from_slice(&70_000u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(pseudo_header_v6(&s6, &d6, 17, 70_000), naive_sum(&ph));
        let pair = IpPair::from((s6, d6));
        assert_eq!(pair, IpPair::V6 { src: s6, dst: d6 });
        assert_eq!(pair.pseudo_header(17, 70_000), naive_sum(&ph));
        // Without the length, then with it: the same sum.
        assert_eq!(
            add_len(pseudo_header_v6(&s6, &d6, 17, 0), 70_000),
            naive_sum(&ph)
        );
    }
}
