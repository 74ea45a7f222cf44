use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::*;
use crate::member::config;

fn addr(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 7946)
}

fn node(i: u8) -> Node {
    let id = NodeId::new(addr(i), 100 + u64::from(i));
    Node::new(
        id,
        config(2),
        table::Config::default(),
        u64::from(i),
        Duration::ZERO,
    )
}

/// Run two nodes against each other (no loss, no latency) until `until`.
fn run(nodes: &mut [Node; 2], from: Duration, until: Duration, events: &mut [Vec<NodeEvent>; 2]) {
    let mut now = from;
    while now <= until {
        for n in nodes.iter_mut() {
            n.tick(now);
        }
        let mut moved = true;
        while moved {
            moved = false;
            for i in 0..2 {
                while let Some((to, bytes)) = nodes[i].poll_send(now) {
                    moved = true;
                    let j = usize::from(to == addr(2));
                    let from = nodes[i].id().addr;
                    let _ = nodes[j].handle(from, &bytes, now);
                }
                while let Some(e) = nodes[i].poll_event() {
                    events[i].push(e);
                }
            }
        }
        now += Duration::from_millis(50);
    }
}

#[test]
fn entries_reach_a_member_and_go_with_it() {
    let mut nodes = [node(1), node(2)];
    let mut events = [Vec::new(), Vec::new()];
    nodes[1].join(addr(1), Duration::ZERO);
    run(
        &mut nodes,
        Duration::ZERO,
        Duration::from_secs(2),
        &mut events,
    );
    assert_eq!(nodes[0].membership().num_members(), 1);
    for n in &mut nodes {
        n.join_network("blue", Duration::from_secs(2)).unwrap();
    }
    nodes[0]
        .set("blue", "ep1", b"mac", Duration::from_secs(2))
        .unwrap();
    run(
        &mut nodes,
        Duration::from_secs(2),
        Duration::from_secs(4),
        &mut events,
    );
    let seen = nodes[1].tables().entries("blue");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].owner, 101);
    assert!(events[1].iter().any(|e| matches!(
        e,
        NodeEvent::Table(table::Event::Upsert { key, owner: 101, .. }) if key == "ep1"
    )));
    assert!(
        events[1]
            .iter()
            .any(|e| matches!(e, NodeEvent::Member(MemberEvent::Up(id)) if id.key == 101))
    );
    assert_eq!(nodes[1].stats().table_to_stranger, 0);
}

#[test]
fn graceful_leave_removes_the_entries_at_the_peer() {
    let mut nodes = [node(1), node(2)];
    let mut events = [Vec::new(), Vec::new()];
    nodes[1].join(addr(1), Duration::ZERO);
    run(
        &mut nodes,
        Duration::ZERO,
        Duration::from_secs(2),
        &mut events,
    );
    for n in &mut nodes {
        n.join_network("blue", Duration::from_secs(2)).unwrap();
        n.set("blue", "ep", b"v", Duration::from_secs(2)).unwrap();
    }
    run(
        &mut nodes,
        Duration::from_secs(2),
        Duration::from_secs(4),
        &mut events,
    );
    assert_eq!(nodes[1].tables().entries("blue").len(), 2);
    nodes[0].leave(Duration::from_secs(4));
    assert!(nodes[0].tables().entries("blue").is_empty());
    run(
        &mut nodes,
        Duration::from_secs(4),
        Duration::from_secs(5),
        &mut events,
    );
    assert_eq!(nodes[1].tables().entries("blue").len(), 1);
}

#[test]
fn strangers_and_unknown_kinds_are_counted() {
    let mut n = node(1);
    let now = Duration::ZERO;
    assert_eq!(n.handle(addr(9), &[], now), Err(NodeReject::UnknownKind));
    assert_eq!(
        n.handle(addr(9), &[7, 1], now),
        Err(NodeReject::UnknownKind)
    );
    assert_eq!(
        n.handle(addr(9), &[KIND_TABLE, 1, 0], now),
        Err(NodeReject::Stranger)
    );
    assert_eq!(n.stats().unknown_kind, 2);
    assert_eq!(n.stats().table_from_stranger, 1);
    assert!(matches!(
        n.handle(addr(9), &[KIND_MEMBERSHIP], now),
        Err(NodeReject::Member(_))
    ));
}
