//! The relay's UDP and ICMP echo flows: datagrams from the container (well formed with
//! fuzzed fields, or raw), answers from the host, published UDP ports, connect results
//! and idle timeouts on the fake clock.
//!
//! Invariants: every frame the relay writes toward the container is well formed
//! (`rig::check_frame`); flow counts stay within their (small) bounds; every datagram
//! for the host is taken; no panic.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_fuzz::frames::{self, CTR, GW, PROTO_ICMP, PROTO_UDP, REMOTE};
use tapnet_fuzz::rig::Rig;
use tapnet_nat::relay::ConnectError;

fn dst(input: &mut Input<'_>) -> Ipv4Addr {
    match input.u8() % 5 {
        0 => GW,
        1 => Ipv4Addr::new(127, 0, 0, 1),
        2 => Ipv4Addr::new(10, 1, 2, 3),
        3 => Ipv4Addr::from(input.u32()),
        _ => REMOTE,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut rig = Rig::new(input.u8() & 1 == 1);
    rig.isolation
        .insert("other", Ipv4Addr::new(10, 1, 0, 0), 16);
    // Flows the host side knows, UDP or ICMP.
    let mut flows = Vec::new();
    let mut ops = 0;
    while !input.is_empty() && ops < 512 {
        ops += 1;
        match input.u8() % 10 {
            0..=2 => {
                let to = dst(&mut input);
                let u = frames::udp(input.u16(), input.u16(), input.chunk());
                let mut f = frames::eth_ip(CTR, to, PROTO_UDP, &u);
                let mode = input.u8();
                if mode & 1 == 1 {
                    // A length field that lies.
                    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&input.u16().to_be_bytes());
                }
                if mode & 2 == 0 {
                    frames::fix_checksums(&mut f);
                }
                rig.inject(&f, mode & 4 == 4);
            }
            3..=4 => {
                let to = dst(&mut input);
                let mut m = frames::icmp_echo(input.u16(), input.u16(), input.chunk());
                let mode = input.u8();
                if mode & 1 == 1 {
                    m[0] = input.u8();
                    m[1] = input.u8();
                }
                let mut f = frames::eth_ip(CTR, to, PROTO_ICMP, &m);
                frames::fix_checksums(&mut f);
                rig.inject(&f, false);
            }
            5 => {
                let proto = [PROTO_UDP, PROTO_ICMP, input.u8()][usize::from(input.u8() % 3)];
                let f = frames::eth_ip(CTR, dst(&mut input), proto, input.chunk());
                rig.inject(&f, false);
            }
            6 => {
                let result = match input.u8() % 3 {
                    0 => Ok(()),
                    1 => Err(ConnectError::Refused),
                    _ => Err(ConnectError::Failed),
                };
                if !rig.pending.is_empty() {
                    let id = rig.pending.remove(0);
                    rig.relay.connected(rig.now, id, result, &mut rig.budget);
                    if result.is_ok() {
                        flows.push(id);
                    }
                }
            }
            7 => {
                // The host answers on one of its flows.
                if let Some(&id) = flows.get(usize::from(input.u8()) % flows.len().max(1)) {
                    let _ = rig.relay.datagram_from_host(rig.now, id, input.chunk());
                }
            }
            8 => {
                let client =
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(input.u32()), input.u16()));
                let ctr = SocketAddrV4::new(CTR, input.u16());
                if let Some(id) = rig.relay.udp_inbound(rig.now, client, ctr, input.chunk()) {
                    if !flows.contains(&id) {
                        flows.push(id);
                    }
                }
            }
            _ => {
                let ms = u64::from(input.u16()) * if input.u8() & 1 == 0 { 1 } else { 100 };
                rig.now += Duration::from_millis(ms);
            }
        }
        rig.pump();
        rig.drain();
        // Closed flows leave the host's list (the host thread closes their sockets).
        flows.retain(|id| !rig.closed.contains(id));
        rig.closed.clear();
    }
});
