//! The swarm control plane's decoders and state machines: datagrams into
//! `tapnet_cluster::table::Tables` (node A, on network `n`) and into
//! `tapnet_cluster::member::Membership`, raw or as real datagrams of a peer (node B, also
//! on `n`, writing and deleting its entries) with bytes overwritten, between steps of
//! time, membership changes and B's writes.
//!
//! Each operation is one byte and its arguments: raw bytes to A's tables or to A's
//! membership, one of B's datagrams mutated (or whole) to A, B writes or deletes, time
//! passes and A's datagrams reach B, B goes down, comes up (same or next generation) or
//! leaves, raw bytes through `table::decode`.
//!
//! Invariants: whatever decodes encodes and decodes back equal; every datagram either
//! side sends is at most `MAX_DATAGRAM` bytes and decodes; A's visible entries keep the
//! key and value bounds, and none is in A's name (A writes nothing, and the owner is the
//! authority over its entries: others' entries are relayed, unauthenticated until the
//! control plane is encrypted); A's events are only for `n` and never in A's name.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet_cluster::member::{self, Membership, NodeId};
use tapnet_cluster::table::{
    self, Config, Event, MAX_DATAGRAM, MAX_KEY_LEN, MAX_VALUE_LEN, Tables,
};
use tapnet_fuzz::Input;

const A: u64 = 1;
const B: u64 = 2;

fn check_sends(t: &mut Tables, now: Duration, out: &mut Vec<Vec<u8>>) {
    // Bounded: the outbox holds at most a few thousand datagrams.
    for _ in 0..10_000 {
        let Some((_, d)) = t.poll_send(now) else {
            return;
        };
        assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
        assert!(table::decode(&d).is_ok(), "a datagram sent does not decode");
        out.push(d);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut now = Duration::ZERO;
    let cfg = Config::default();
    let mut a = Tables::new(A, 1, cfg.clone(), 1, now);
    let mut b = Tables::new(B, 1, cfg, 2, now);
    a.join_network("n", now).expect("a valid network");
    b.join_network("n", now).expect("a valid network");
    a.node_up(B, 1, now);
    b.node_up(A, 1, now);
    let mut b_gen = 1;
    let addr = |n: u8| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n), 7946);
    let mut m = Membership::new(NodeId::new(addr(1), A), member::config(10), 1);
    let mut from_b = Vec::new();
    let mut from_a = Vec::new();
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 9 {
            0 => {
                let from = if input.u8() & 1 == 0 { B } else { 3 };
                let _ = a.handle(from, input.long_chunk(2 * MAX_DATAGRAM), now);
            }
            1 => {
                let _ = m.handle(addr(2), input.long_chunk(2 * MAX_DATAGRAM), now);
                m.tick(now);
                while let Some((_, d)) = m.poll_send() {
                    assert!(d.len() <= member::MAX_DATAGRAM);
                }
            }
            2 => {
                check_sends(&mut b, now, &mut from_b);
                if !from_b.is_empty() {
                    let i = usize::from(input.u8()) % from_b.len();
                    let mut d = from_b.swap_remove(i);
                    for _ in 0..input.u8() % 4 {
                        let at = usize::from(input.u16());
                        let v = input.u8();
                        if !d.is_empty() {
                            let n = d.len();
                            d[at % n] = v;
                        }
                    }
                    let _ = a.handle(B, &d, now);
                }
            }
            3 => {
                let key = format!("e{}", input.u8() % 8);
                let value = input.chunk();
                let _ = b.set("n", &key, value, now);
            }
            4 => {
                let key = format!("e{}", input.u8() % 8);
                let _ = b.delete("n", &key, now);
            }
            5 => {
                now += Duration::from_millis(u64::from(input.u16()) * 10);
                check_sends(&mut a, now, &mut from_a);
                for d in from_a.drain(..) {
                    let _ = b.handle(A, &d, now);
                }
                m.tick(now);
                while m.poll_send().is_some() {}
            }
            6 => match input.u8() % 4 {
                0 => a.node_down(B, now),
                1 => a.node_up(B, b_gen, now),
                2 => {
                    b_gen += 1;
                    b = Tables::new(B, b_gen, Config::default(), u64::from(b_gen), now);
                    let _ = b.join_network("n", now);
                    b.node_up(A, 1, now);
                    a.node_up(B, b_gen, now);
                }
                _ => a.node_left(B, now),
            },
            7 => {
                let raw = input.long_chunk(2 * MAX_DATAGRAM);
                if let Ok(msg) = table::decode(raw) {
                    assert_eq!(table::decode(&msg.encode()), Ok(msg));
                }
            }
            _ => {
                let _ = a.leave_network("n", now);
                let _ = a.join_network("n", now);
            }
        }
        for e in a.entries("n") {
            assert!(e.key.len() <= MAX_KEY_LEN && e.value.len() <= MAX_VALUE_LEN);
            // A writes nothing: an entry in its name that it does not hold is not its.
            assert_ne!(e.owner, A, "an entry of A that A never wrote: {e:?}");
        }
        while let Some(ev) = a.poll_event() {
            let (net, owner) = match &ev {
                Event::Upsert { net, owner, .. } | Event::Remove { net, owner, .. } => {
                    (net, *owner)
                }
            };
            assert_eq!(net, "n");
            assert_ne!(owner, A, "{ev:?}");
        }
        check_sends(&mut b, now, &mut from_b);
        from_b.truncate(256);
    }
});
