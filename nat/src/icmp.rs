//! ICMP echo between a relay's flows and the host's sockets, without I/O.
//!
//! The relay carries a container's ping (RFC 792, "Echo or Echo Reply Message") over a
//! host socket of its flow. An unprivileged ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`)
//! sets the echo identifier itself and hands back only its own replies. Where the
//! daemon's group may not use one (`net.ipv4.ping_group_range`), the host thread falls
//! back to a raw ICMP socket (CAP_NET_RAW); then the identifier is the flow's to choose
//! ([`RawIdents`]: one allocator for every network of the host, so that no two flows
//! share one), written into each request ([`set_echo_ident`]), and the socket sees
//! every echo reply to the host, IP header included, among which the flow keeps its own
//! ([`raw_echo_reply`]).

use tapnet_wire::{Icmpv4Message, Icmpv4Packet};

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

/// Echo identifiers a host can give its raw-socket flows: every `u16` but 0.
pub const RAW_IDENTS: usize = u16::MAX as usize;
/// The first identifier handed out (then the next free one, round the range).
const FIRST_IDENT: u16 = 0x7001;

/// The echo identifiers of raw-socket flows, unique among all the flows of every
/// network of a host (a raw socket sees every echo reply to the host, so two flows with
/// one identifier would each take the other's replies). At most [`RAW_IDENTS`] at once;
/// an identifier given back is handed out again only after every other free one
/// (next fit), so a late reply to an ended flow seldom meets a new one.
///
/// Owned by the one thread that opens the host's ICMP sockets; no lock.
#[derive(Debug)]
pub struct RawIdents {
    /// One bit per identifier, set when in use.
    used: Vec<u64>,
    /// Where the search for a free one starts.
    next: u16,
    in_use: usize,
}

impl Default for RawIdents {
    fn default() -> Self {
        RawIdents {
            used: vec![0; 1 << 10],
            next: FIRST_IDENT,
            in_use: 0,
        }
    }
}

impl RawIdents {
    /// A free identifier, now in use; `None` when all [`RAW_IDENTS`] are.
    pub fn alloc(&mut self) -> Option<u16> {
        if self.in_use >= RAW_IDENTS {
            return None;
        }
        let mut i = self.next;
        loop {
            if i != 0 && !self.is_used(i) {
                self.used[usize::from(i / 64)] |= 1 << (i % 64);
                self.in_use += 1;
                self.next = i.wrapping_add(1);
                return Some(i);
            }
            i = i.wrapping_add(1);
        }
    }

    /// Give back `ident` (from [`RawIdents::alloc`]).
    pub fn free(&mut self, ident: u16) {
        if self.is_used(ident) {
            self.used[usize::from(ident / 64)] &= !(1 << (ident % 64));
            self.in_use -= 1;
        }
    }

    /// Whether `ident` is in use.
    pub fn is_used(&self, ident: u16) -> bool {
        self.used[usize::from(ident / 64)] & (1 << (ident % 64)) != 0
    }

    /// Identifiers in use now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

/// The ICMP message of `pkt`, an IPv4 packet read from a raw ICMP socket, if it is an
/// echo reply with identifier `ident`.
pub fn raw_echo_reply(pkt: &[u8], ident: u16) -> Option<&[u8]> {
    let icmp = raw_echo_reply_any(pkt)?;
    (icmp.echo_ident() == ident).then(|| icmp.into_inner())
}

/// The identifier of `pkt`, an IPv4 packet read from a raw ICMP socket, if it is an echo
/// reply.
pub fn raw_echo_reply_ident(pkt: &[u8]) -> Option<u16> {
    raw_echo_reply_any(pkt).map(|p| p.echo_ident())
}

fn raw_echo_reply_any(pkt: &[u8]) -> Option<Icmpv4Packet<&[u8]>> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let icmp = Icmpv4Packet::new_checked(pkt.get(ihl..)?).ok()?;
    (icmp.msg_type() == Icmpv4Message::EchoReply).then_some(icmp)
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
    fn raw_identifiers_are_unique_until_given_back() {
        let mut ids = RawIdents::default();
        let a = ids.alloc().unwrap();
        let b = ids.alloc().unwrap();
        assert_eq!((a, b), (0x7001, 0x7002));
        ids.free(a);
        // Next fit: the one given back comes last.
        assert_eq!(ids.alloc(), Some(0x7003));
        let mut all = vec![a, b, 0x7003];
        ids.free(a);
        ids.free(a);
        assert_eq!(ids.in_use(), 2, "a double free changes nothing");
        while let Some(i) = ids.alloc() {
            assert_ne!(i, 0);
            all.push(i);
        }
        assert_eq!(ids.in_use(), RAW_IDENTS);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), RAW_IDENTS, "every identifier but 0, once");
        ids.free(0x1234);
        assert_eq!(ids.alloc(), Some(0x1234));
        assert_eq!(ids.alloc(), None);
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
        assert_eq!(raw_echo_reply_ident(&in_ipv4(5, &reply)), Some(0x7001));
        assert_eq!(raw_echo_reply_ident(&in_ipv4(5, &request)), None);
    }
}
