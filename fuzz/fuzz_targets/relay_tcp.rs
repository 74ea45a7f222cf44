//! The relay with an established TCP flow, then mutated segments (stateful).
//!
//! Each run sets up a network as the relay's tests do (`tapnet_fuzz::rig`): a container
//! stack dials 203.0.113.5:80, the host connect succeeds, the flow is established.
//! Then the input is a program of operations: segments built from the flow's last
//! segment with fields changed (sequence and acknowledgement numbers moved, flags,
//! window, options, payload, data offset), raw TCP bytes, time passing on the fake
//! clock, the host sending or refusing bytes or closing, the container sending,
//! closing or aborting, new connections answered or refused, flows ended by the host,
//! published-port connections. Legitimate traffic moves between operations, so
//! mutated segments meet every state of the connection.
//!
//! Invariants: every frame the relay writes is well formed (see `rig::check_frame`);
//! flow counts stay within their bounds; no panic, overflow or debug assertion in the
//! relay or in smoltcp.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_fuzz::frames::{self, CTR, GW, PROTO_TCP, REMOTE};
use tapnet_fuzz::rig::Rig;
use tapnet_nat::relay::ConnectError;

/// The TCP header of the last segment the container sent, if it was TCP.
struct Seg {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
}

fn last_segment(rig: &Rig) -> Seg {
    let f = &rig.last_from_ctr;
    let tcp = f.get(34..54).filter(|_| f.get(23) == Some(&PROTO_TCP));
    match tcp {
        Some(t) => Seg {
            sport: u16::from_be_bytes([t[0], t[1]]),
            dport: u16::from_be_bytes([t[2], t[3]]),
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            flags: t[13],
            window: u16::from_be_bytes([t[14], t[15]]),
        },
        None => Seg {
            sport: 40000,
            dport: 80,
            seq: 0,
            ack: 0,
            flags: 0x10,
            window: 1024,
        },
    }
}

/// A segment like the container's last one, with the fields the input names changed.
fn mutated(rig: &Rig, input: &mut Input<'_>) -> Vec<u8> {
    let mut s = last_segment(rig);
    let mut options: &[u8] = &[];
    let mut payload: &[u8] = &[];
    let mut offset = None;
    for _ in 0..input.u8() % 5 {
        match input.u8() % 8 {
            0 => s.seq = s.seq.wrapping_add(input.u16().into()),
            1 => s.seq = s.seq.wrapping_sub(input.u16().into()),
            2 => {
                s.ack = s
                    .ack
                    .wrapping_add(i16::from_be_bytes([input.u8(), input.u8()]) as u32)
            }
            3 => s.flags = input.u8(),
            4 => s.window = input.u16(),
            5 => {
                let n = usize::from(input.u8() % 41);
                options = input.bytes(n);
            }
            6 => payload = input.long_chunk(40_000),
            _ => offset = Some(input.u8()),
        }
    }
    let mut t = frames::tcp(
        s.sport, s.dport, s.seq, s.ack, s.flags, s.window, options, payload,
    );
    if let Some(o) = offset {
        t[12] = o;
    }
    let mut f = frames::eth_ip(CTR, REMOTE, PROTO_TCP, &t);
    frames::fix_checksums(&mut f);
    f
}

fuzz_target!(|data: &[u8]| {
    let (mut rig, id, h) = Rig::established(REMOTE);
    let mut input = Input::new(data);
    let mut ports = 41000u16;
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        match input.u8() % 16 {
            0..=4 => {
                let f = mutated(&rig, &mut input);
                let gso = input.u8() & 1 == 1;
                rig.inject(&f, gso);
                rig.pump();
            }
            5 => {
                // Raw TCP header and payload.
                let mut f = frames::eth_ip(CTR, REMOTE, PROTO_TCP, input.chunk());
                if input.u8() & 1 == 0 {
                    frames::fix_checksums(&mut f);
                }
                rig.inject(&f, false);
                rig.pump();
            }
            6 => {
                let ms = u64::from(input.u16()) * if input.u8() & 1 == 0 { 1 } else { 100 };
                rig.now += Duration::from_millis(ms);
                rig.pump();
            }
            7 => {
                let chunk = input.long_chunk(20_000);
                let mode = input.u8();
                if let Some((_, host)) = rig.hosts.iter_mut().find(|(f, _)| *f == id) {
                    host.to_ctr.extend(chunk);
                    host.eof |= mode & 1 == 1;
                    host.block_writes = mode & 2 == 2;
                }
                rig.pump();
            }
            8 => {
                let chunk = input.long_chunk(20_000);
                let s = rig.socket(h);
                match input.u8() % 4 {
                    0 => s.close(),
                    1 => s.abort(),
                    _ => {
                        let _ = s.send_slice(chunk);
                    }
                }
                while s.can_recv() {
                    let _ = s.recv(|b| (b.len(), ()));
                }
            }
            9 => {
                let to = if input.u8() & 1 == 0 { REMOTE } else { GW };
                ports = ports.wrapping_add(1).max(1024);
                let _ = rig.dial(to, input.u16(), ports);
            }
            10 => {
                let result = match input.u8() % 3 {
                    0 => Ok(()),
                    1 => Err(ConnectError::Refused),
                    _ => Err(ConnectError::Failed),
                };
                rig.answer(result);
            }
            11 => {
                let flows: Vec<_> = rig.hosts.iter().map(|(f, _)| *f).collect();
                if let Some(&f) = flows.get(usize::from(input.u8()) % flows.len().max(1)) {
                    if input.u8() & 1 == 0 {
                        rig.relay.end_flow(rig.now, f);
                    } else {
                        rig.relay.host_reset(rig.now, f);
                    }
                }
            }
            12 => {
                let client =
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(input.u32()), input.u16()));
                let ctr = SocketAddrV4::new(CTR, input.u16());
                if let Some(f) = rig.relay.tcp_inbound(rig.now, client, ctr, &mut rig.budget) {
                    rig.hosts.push((f, Default::default()));
                }
            }
            _ => {}
        }
        rig.drain();
        rig.step();
    }
});
