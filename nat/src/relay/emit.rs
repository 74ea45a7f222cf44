//! What the relay sends the container: smoltcp's packets framed for the network (with
//! the partial checksum and the GSO size a TCP superframe needs), and the UDP datagrams
//! and echo replies the relay writes itself.

use std::net::{Ipv4Addr, SocketAddrV4};

use tapnet_wire::checksum::pseudo_header_v4;
use tapnet_wire::{
    EtherType, EthernetFrame, IpPair, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
    ethernet, icmpv4, ipv4, tcp, udp,
};

use super::Relay;
use super::device::IP_MAX;

const ETH_LEN: usize = ethernet::HEADER_LEN;

/// A frame for the container network, written by [`Relay::next_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOut {
    /// Bytes written, Ethernet header included.
    pub len: usize,
    /// The transport checksum holds only the pseudo-header sum: the receiver (or the
    /// engine's software offload) completes it. Checksum start is the transport
    /// header, at [`tcp::CHECKSUM_OFFSET`] (TCP).
    pub csum_partial: bool,
    /// A TCP superframe to be cut into segments of this payload size (0: none).
    pub gso_size: u16,
    /// Length of the Ethernet, IPv4 and TCP headers (for the virtio-net header).
    pub hdr_len: u16,
    /// Offset of the transport header in the frame (where a partial checksum starts).
    pub l4_offset: u16,
}

impl Relay {
    /// Length of the frame [`Relay::next_frame`] would write next, if any.
    pub fn peek_frame_len(&self) -> Option<usize> {
        self.dev.tx.front().map(|p| ETH_LEN + p.len())
    }

    /// The next frame for the container network, written into `out` (which must hold
    /// 14 + 65535 bytes for a superframe; a frame that does not fit is dropped).
    pub fn next_frame(&mut self, out: &mut [u8]) -> Option<FrameOut> {
        loop {
            let pkt = self.dev.tx.pop_front()?;
            let f = self.frame(&pkt, out);
            self.dev.recycle_tx(pkt);
            if let Some(f) = f {
                self.counters.frames_out.inc();
                return Some(f);
            }
        }
    }

    fn frame(&self, pkt: &[u8], out: &mut [u8]) -> Option<FrameOut> {
        if pkt.len() < ipv4::HEADER_LEN || out.len() < ETH_LEN + pkt.len() {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(pkt);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Some(&mac) = self.endpoints.get(&dst) else {
            self.counters.drop_no_endpoint.inc();
            return None;
        };
        let mut eth = EthernetFrame::new_unchecked(&mut out[..ETH_LEN + pkt.len()]);
        eth.set_dst_addr(mac);
        eth.set_src_addr(self.cfg.gateway.mac);
        eth.set_ethertype(EtherType::Ipv4);
        eth.payload_mut().copy_from_slice(pkt);
        let ihl = ip.header_len();
        let mut f = FrameOut {
            len: ETH_LEN + pkt.len(),
            csum_partial: false,
            gso_size: 0,
            hdr_len: 0,
            l4_offset: (ETH_LEN + ihl) as u16,
        };
        if ip.protocol() == tcp::PROTOCOL && pkt.len() >= ihl + tcp::HEADER_LEN {
            let seg = TcpPacket::new_unchecked(&pkt[ihl..]);
            let thl = seg.header_len();
            let tcp_len = pkt.len() - ihl;
            // Pseudo-header sum only; the receiver completes it.
            let sum = pseudo_header_v4(src, dst, tcp::PROTOCOL, tcp_len as u16);
            TcpPacket::new_unchecked(&mut out[ETH_LEN + ihl..]).set_checksum(sum);
            f.csum_partial = true;
            f.hdr_len = (ETH_LEN + ihl + thl) as u16;
            let payload = tcp_len.saturating_sub(thl);
            let key = (
                SocketAddrV4::new(dst, seg.dst_port()),
                SocketAddrV4::new(src, seg.src_port()),
            );
            let mss = self.flows.tcp_mss(&key).unwrap_or(self.max_mss());
            if payload > usize::from(mss) {
                f.gso_size = mss;
            }
        }
        Some(f)
    }

    /// A UDP datagram from `src` to the container at `dst`, carrying `data`.
    pub(super) fn emit_udp(&mut self, src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) {
        let udp = UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            payload: data,
        };
        if ipv4::HEADER_LEN + udp.buffer_len() > IP_MAX {
            self.counters.drop_malformed.inc();
            return;
        }
        let ip = Ipv4Repr::new(*src.ip(), *dst.ip(), udp::PROTOCOL, udp.buffer_len());
        let mut p = self.dev.tx_buffer(ip.buffer_len() + udp.buffer_len());
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
        let addrs = IpPair::from((*src.ip(), *dst.ip()));
        udp.emit(
            &mut UdpPacket::new_unchecked(&mut p[ipv4::HEADER_LEN..]),
            &addrs,
        );
        self.dev.tx.push_back(p);
    }

    /// The echo reply `msg` from `src` to the container at `dst`, under the container's
    /// own identifier `ident`.
    pub(super) fn emit_echo_reply(&mut self, src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8], ident: u16) {
        let ip = Ipv4Repr::new(src, dst, icmpv4::PROTOCOL, msg.len());
        let mut p = self.dev.tx_buffer(ip.buffer_len() + msg.len());
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
        let icmp = &mut p[ipv4::HEADER_LEN..];
        icmp.copy_from_slice(msg);
        crate::icmp::set_echo_ident(icmp, ident);
        self.dev.tx.push_back(p);
    }
}
