//! Frame builders with the lengths and checksums right, so that a mutation of one field
//! is not rejected by a checksum before it reaches the logic behind it.

use std::net::Ipv4Addr;

use tapnet_wire::MacAddr;
use tapnet_wire::checksum::{checksum, combine, non_zero, ones_complement_sum, pseudo_header_v4};

/// The gateway of the fuzzed network (10.0.0.1/24), as in the relay's tests.
pub const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The container.
pub const CTR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A remote host on the internet side.
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

/// IP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// An Ethernet frame.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet (no options, DF, TTL 64) with its header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()).min(usize::from(u16::MAX)) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// An Ethernet + IPv4 frame from `src`'s MAC (derived from its address, as Docker
/// derives container MACs) to the gateway's.
pub fn eth_ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    eth(
        MacAddr::from_ipv4(GW),
        MacAddr::from_ipv4(src),
        0x0800,
        &ipv4(src, dst, proto, payload),
    )
}

/// Recomputes the IPv4 header checksum and the transport checksum (TCP, UDP, ICMP) of
/// the IPv4 packet in `frame` (after a 14-byte Ethernet header), as far as the lengths
/// in it are consistent; leaves the frame alone where they are not.
pub fn fix_checksums(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return;
    }
    ip[10..12].fill(0);
    let c = checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let l4 = &mut ip[ihl..total];
    let at = match proto {
        PROTO_TCP if l4.len() >= 20 => 16,
        PROTO_UDP if l4.len() >= 8 => 6,
        PROTO_ICMP if l4.len() >= 4 => 2,
        _ => return,
    };
    l4[at..at + 2].fill(0);
    let c = if proto == PROTO_ICMP {
        checksum(l4)
    } else {
        let pseudo = pseudo_header_v4(src, dst, proto, l4.len() as u16);
        let c = !combine(ones_complement_sum(l4), pseudo);
        if proto == PROTO_UDP { non_zero(c) } else { c }
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A TCP header (data offset 5 plus `options`, padded to 4 bytes) and payload, checksum
/// left 0 (see [`fix_checksums`]).
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().min(40).next_multiple_of(4);
    let mut t = vec![0u8; 20 + opt_len];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (((20 + opt_len) / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    let n = options.len().min(40);
    t[20..20 + n].copy_from_slice(&options[..n]);
    t.extend_from_slice(payload);
    t
}

/// A UDP header and payload, checksum left 0.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// An ICMP echo request with its checksum.
pub fn icmp_echo(ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A broadcast ARP request from `sender` (MAC derived from the address) for `target`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mac = MacAddr::from_ipv4(sender);
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&mac.0);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth(MacAddr::BROADCAST, mac, 0x0806, &a)
}

/// An IPv6 frame (next header `next`, hop limit 64) from a link-local address to the
/// all-nodes group, as a container's kernel sends them.
pub fn ipv6(src_mac: MacAddr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    let mut src = [0u8; 16];
    src[0] = 0xfe;
    src[1] = 0x80;
    src[10..16].copy_from_slice(&src_mac.0);
    p.extend_from_slice(&src);
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 1;
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    eth(MacAddr([0x33, 0x33, 0, 0, 0, 1]), src_mac, 0x86dd, &p)
}
