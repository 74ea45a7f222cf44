//! ICMP echo between a relay's flows and the host's sockets, without I/O.
//!
//! The relay carries a container's ping (RFC 792, "Echo or Echo Reply Message") over a
//! host socket of its flow. An unprivileged ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`)
//! sets the echo identifier itself and hands back only its own replies. Where the
//! daemon's group may not use one (`net.ipv4.ping_group_range`), the host thread falls
//! back to a raw ICMP socket (CAP_NET_RAW); then the identifier is the flow's to choose
//! ([`raw_echo_ident`]), written into each request ([`set_echo_ident`]), and the socket
//! sees every echo reply to the host, IP header included, among which the flow keeps its
//! own ([`raw_echo_reply`]).

use tapnet_wire::{Icmpv4Message, Icmpv4Packet};

use crate::relay::FlowId;

/// Rewrite the identifier of the echo message `msg` (ICMP header and data) to `ident`
/// and fill its checksum again. False, and `msg` untouched, if it is shorter than an
/// ICMP header.
pub fn set_echo_ident(msg: &mut [u8], ident: u16) -> bool {
    let Ok(mut p) = Icmpv4Packet::new_checked(msg) else {
        return false;
    };
    p.set_echo_ident(ident);
    p.fill_checksum();
    true
}

/// The echo identifier flow `id` uses on a raw ICMP socket.
pub fn raw_echo_ident(id: FlowId) -> u16 {
    0x7000 ^ (id.raw() as u16)
}

/// The ICMP message of `pkt`, an IPv4 packet read from a raw ICMP socket, if it is an
/// echo reply with identifier `ident`.
pub fn raw_echo_reply(pkt: &[u8], ident: u16) -> Option<&[u8]> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let icmp = Icmpv4Packet::new_checked(pkt.get(ihl..)?).ok()?;
    (icmp.msg_type() == Icmpv4Message::EchoReply && icmp.echo_ident() == ident)
        .then(|| icmp.into_inner())
}

#[cfg(test)]
mod tests {
    use tapnet_wire::checksum::checksum;

    use super::*;

    /// An echo message of `kind` (8 request, 0 reply) with a correct checksum.
    fn echo(kind: u8, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&ident.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// `msg` behind an IPv4 header of `ihl` 32-bit words.
    fn in_ipv4(ihl: u8, msg: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl) * 4];
        p[0] = 0x40 | ihl;
        p[9] = 1;
        p.extend_from_slice(msg);
        p
    }

    #[test]
    fn the_identifier_is_rewritten_and_the_checksum_filled() {
        let mut m = echo(8, 0x1234, 7, b"tapnet ping");
        assert!(set_echo_ident(&mut m, 0x7005));
        assert_eq!(m, echo(8, 0x7005, 7, b"tapnet ping"));
        assert_eq!(checksum(&m), 0, "the checksum verifies");
        // As the relay wrote it by hand: bytes 4..6, then the checksum over zero.
        let mut by_hand = echo(8, 0x1234, 7, b"tapnet ping");
        by_hand[4..6].copy_from_slice(&0x7005u16.to_be_bytes());
        by_hand[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(&by_hand);
        by_hand[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(m, by_hand);
        // A message shorter than a header is left alone.
        let mut short = vec![8, 0, 1, 2, 3, 4, 5];
        assert!(!set_echo_ident(&mut short, 1));
        assert_eq!(short, vec![8, 0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn raw_identifiers_follow_the_flow_id() {
        assert_eq!(raw_echo_ident(FlowId::from_raw(1)), 0x7001);
        assert_eq!(raw_echo_ident(FlowId::from_raw(0x7000)), 0);
        // Only the low 16 bits of the id count.
        assert_eq!(raw_echo_ident(FlowId::from_raw(0x1_0002)), 0x7002);
    }

    #[test]
    fn a_raw_socket_keeps_its_flows_echo_replies() {
        let reply = echo(0, 0x7001, 3, b"pong");
        assert_eq!(
            raw_echo_reply(&in_ipv4(5, &reply), 0x7001),
            Some(&reply[..])
        );
        // IPv4 options before the message.
        assert_eq!(
            raw_echo_reply(&in_ipv4(6, &reply), 0x7001),
            Some(&reply[..])
        );
        // Another flow's reply, a request, a cut message, nothing at all.
        assert_eq!(raw_echo_reply(&in_ipv4(5, &reply), 0x7002), None);
        let request = echo(8, 0x7001, 3, b"ping");
        assert_eq!(raw_echo_reply(&in_ipv4(5, &request), 0x7001), None);
        assert_eq!(raw_echo_reply(&in_ipv4(5, &reply[..7]), 0x7001), None);
        assert_eq!(raw_echo_reply(&in_ipv4(15, &[]), 0x7001), None);
        assert_eq!(raw_echo_reply(&[], 0x7001), None);
    }
}
