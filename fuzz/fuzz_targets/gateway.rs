//! Frames into a network's gateway port (`tapnet_nat::Gateway`): ARP, ICMP, IPv4 and
//! IPv6, both for a network with egress and for an internal one.
//!
//! The first byte picks how the frame is built: raw bytes, or a well-formed ARP
//! request, ICMP echo, IPv4 packet of any protocol (checksums fixed after the fuzzer's
//! bytes are placed) or IPv6 packet, whose fields come from the input, so that the
//! gateway's logic is reached past its checksum checks.
//!
//! Invariants: a reply fits the output buffer and is a well-formed Ethernet frame from
//! the gateway's MAC, ARP or IPv4 (to the frame's sender) (its IP total length is the
//! frame's); an internal network forwards nothing; `received` counts every frame.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_fuzz::frames::{self, CTR, GW};
use tapnet_fuzz::rig::gw_cfg;
use tapnet_nat::{Gateway, GatewayConfig, Outcome};
use tapnet_wire::{EtherType, EthernetFrame, Ipv4Packet, MacAddr};

fn addr(input: &mut Input<'_>) -> Ipv4Addr {
    match input.u8() % 6 {
        0 => GW,
        1 => CTR,
        2 => Ipv4Addr::new(10, 0, 0, 255),
        3 => Ipv4Addr::new(127, 0, 0, 1),
        4 => frames::REMOTE,
        _ => Ipv4Addr::from(input.u32()),
    }
}

fn frame(input: &mut Input<'_>) -> Vec<u8> {
    match input.u8() % 6 {
        0 => input.chunk().to_vec(),
        1 => {
            let mut f = frames::arp_request(addr(input), addr(input));
            // Mutate one byte of the ARP body (operation, lengths, addresses).
            let at = 14 + usize::from(input.u8() % 28);
            f[at] ^= input.u8();
            f
        }
        2 => {
            let (src, dst) = (addr(input), addr(input));
            let echo = frames::icmp_echo(input.u16(), input.u16(), input.chunk());
            frames::eth_ip(src, dst, frames::PROTO_ICMP, &echo)
        }
        3 => {
            // Any IPv4 packet: the header's bytes from the input, lengths and
            // checksums made consistent unless the input says not to.
            let (src, dst, proto) = (addr(input), addr(input), input.u8());
            let mut f = frames::eth_ip(src, dst, proto, input.chunk());
            let flags = input.u8();
            if flags & 1 != 0 {
                f[14 + 6] = input.u8(); // flags and fragment offset
                f[14 + 7] = input.u8();
            }
            if flags & 2 != 0 {
                f[14 + 8] = input.u8(); // TTL
            }
            if flags & 4 != 0 {
                let at = 14 + usize::from(input.u8()) % (f.len() - 14);
                f[at] = input.u8();
            }
            if flags & 8 == 0 {
                frames::fix_checksums(&mut f);
            }
            f
        }
        4 => {
            let src = MacAddr::from_ipv4(CTR);
            frames::ipv6(src, input.u8(), input.chunk())
        }
        _ => {
            // A well-formed frame with a different destination MAC.
            let mut f = frames::eth_ip(CTR, GW, frames::PROTO_ICMP, &frames::icmp_echo(1, 1, &[]));
            let dst = input.bytes(6);
            f[..dst.len()].copy_from_slice(dst);
            f
        }
    }
}

fn check(gw: &GatewayConfig, frame: &[u8], out: &[u8], outcome: Outcome) {
    match outcome {
        Outcome::Reply(n) => {
            assert!(n <= out.len());
            let reply = EthernetFrame::new_checked(&out[..n]).expect("a reply parses");
            assert_eq!(reply.src_addr(), gw.mac, "replies come from the gateway");
            let asker = EthernetFrame::new_checked(frame).expect("a replied frame parses");
            match reply.ethertype() {
                EtherType::Arp => {}
                EtherType::Ipv4 => {
                    assert_eq!(
                        reply.dst_addr(),
                        asker.src_addr(),
                        "replies go to the asker"
                    );
                    let ip = Ipv4Packet::new_checked(reply.payload()).expect("IPv4 reply parses");
                    assert_eq!(usize::from(ip.total_len()) + 14, n);
                    assert_eq!(ip.src_addr(), gw.ip);
                }
                other => panic!("reply of ethertype {other:?}"),
            }
        }
        Outcome::Forward => assert!(!gw.internal, "an internal network routes nothing"),
        Outcome::Consumed | Outcome::Drop(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let internal = GatewayConfig {
        internal: true,
        ..gw_cfg()
    };
    let mut gws = [
        Gateway::with_egress(gw_cfg()),
        Gateway::new(gw_cfg()),
        Gateway::with_egress(internal),
    ];
    let mut out = vec![0u8; 1514];
    let mut small = [0u8; 60];
    let mut frames = 0;
    while !input.is_empty() {
        let which = usize::from(input.u8() % 3);
        let f = frame(&mut input);
        let gw = &mut gws[which];
        // Now and then an output buffer too small for most replies.
        let buf: &mut [u8] = if frames % 7 == 6 {
            &mut small
        } else {
            &mut out
        };
        let outcome = gw.handle(&f, buf);
        check(&gw.config().clone(), &f, buf, outcome);
        frames += 1;
    }
    let received: u64 = gws.iter().map(|g| g.snapshot().received).sum();
    assert_eq!(received, frames);
});
