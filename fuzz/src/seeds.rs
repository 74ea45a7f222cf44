//! Seed corpora (`fuzz/corpus/<target>/`), built from the frames, specs and bodies the
//! crates' own tests use, written in each target's input format.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --lib -- --ignored write_seeds` rewrites
//! them (files named by a hash of their bytes).

use std::net::Ipv4Addr;

use tapnet_wire::MacAddr;

use crate::frames::{self, CTR, GW, PROTO_ICMP, PROTO_UDP};

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("switch_frames", switch_frames()),
        ("gateway", gateway()),
        ("relay_tcp", relay_tcp()),
        ("relay_datagram", relay_datagram()),
        ("vnet_gso", vnet_gso()),
        ("portspec", portspec()),
        ("api_bodies", api_bodies()),
        ("dns", dns()),
        ("vxlan", vxlan()),
        ("cluster", cluster()),
    ]
}

/// Op 0 of `switch_frames`: a frame on `port` (index) between two chosen MACs.
fn sw_frame(port: u8, dst: [u8; 2], src: [u8; 2], ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0,
        port,
        dst[0],
        dst[1],
        src[0],
        src[1],
        ethertype[0],
        ethertype[1],
    ];
    v.push(payload.len() as u8);
    v.extend_from_slice(payload);
    v
}

fn switch_frames() -> Vec<Vec<u8>> {
    let arp = &frames::arp_request(CTR, GW)[14..];
    // Broadcast from port 1, the answer from port 2, then unicast both ways; the same on
    // the isolated domain (ports 5-7); a move; time passing past the aging.
    let mut conversation = Vec::new();
    conversation.extend(sw_frame(0, [0, 0], [5, 1], [8, 6], arp));
    conversation.extend(sw_frame(1, [5, 1], [6, 2], [8, 6], arp));
    conversation.extend(sw_frame(0, [6, 2], [5, 1], [8, 0], &[0x45; 40]));
    conversation.extend(sw_frame(4, [0, 0], [7, 0], [8, 6], arp));
    conversation.extend(sw_frame(5, [7, 0], [5, 3], [8, 6], arp));
    conversation.extend(sw_frame(6, [7, 0], [6, 3], [8, 0], &[0x45; 20]));
    conversation.extend(sw_frame(2, [6, 2], [5, 1], [8, 0], &[0x45; 20]));
    conversation.extend([11, 0, 0xff, 0xff, 0xff]);
    conversation.extend(sw_frame(0, [6, 2], [5, 1], [8, 0], &[0x45; 20]));
    let mut raw = vec![10, 0, 60];
    raw.extend(frames::arp_request(CTR, GW));
    raw.resize(63, 0);
    vec![conversation, raw]
}

fn gateway() -> Vec<Vec<u8>> {
    let mut raw_arp = vec![0, 0, 42];
    raw_arp.extend(frames::arp_request(CTR, GW));
    let arp = vec![0, 1, 1, 0, 14, 0];
    let mut ping = vec![0, 2, 1, 0, 0, 7, 0, 1, 8];
    ping.extend(b"abcdefgh");
    let mut udp = vec![0, 3, 1, 4, PROTO_UDP, 12];
    udp.extend(frames::udp(40000, 53, b"dns?"));
    udp.push(0);
    let v6 = [vec![1, 4, 58, 8], vec![133, 0, 0, 0, 0, 0, 0, 0]].concat();
    let mut internal = vec![2, 2, 1, 4, 0, 1, 0, 1, 0];
    internal.extend([0, 2, 1, 0, 0, 9, 0, 9, 0]);
    vec![raw_arp, arp, ping, udp, v6, internal]
}

fn relay_tcp() -> Vec<Vec<u8>> {
    // The container sends, the host answers, time passes, both close.
    let mut v = vec![8, 0, 5];
    v.extend(b"hello");
    v.push(2);
    v.extend([7, 0, 5]);
    v.extend(b"world");
    v.push(0);
    v.extend([6, 0, 200, 0]);
    v.extend([8, 0, 0, 0]);
    v.extend([7, 0, 0, 1]);
    v.extend([6, 0xff, 0xff, 1]);
    // A segment with data past the window, one with a moved ack, a RST.
    let mut w = vec![0, 2, 6, 0, 100, 0x10, 0x10, 0];
    w.extend(b"0123456789abcdef");
    w.extend([0]);
    w.extend([1, 2, 2, 0x00, 0x80, 0]);
    w.extend([2, 1, 3, 0x04, 0]);
    w.extend([9, 0, 0, 80, 10, 0, 10, 1, 6, 0, 10]);
    vec![v, w]
}

fn relay_datagram() -> Vec<Vec<u8>> {
    // UDP to the remote, the host connects and answers, an idle timeout; a ping.
    let mut v = vec![0, 0, 4, 0x9c, 0x40, 0, 53, 4];
    v.extend(b"dns?");
    v.push(0);
    v.extend([6, 0, 7, 0, 4]);
    v.extend(b"ans!");
    v.extend([3, 4, 0, 7, 0, 1, 4]);
    v.extend(b"ping");
    v.push(0);
    v.extend([6, 0, 7, 0, 4]);
    v.extend(b"pong");
    v.extend([9, 0xff, 0xff, 1]);
    // A published port.
    let mut p = vec![1, 8, 127, 0, 0, 1, 0xc3, 0x50, 0, 53, 3];
    p.extend(b"hey");
    p.extend([5, 0, 4, PROTO_ICMP, 8]);
    p.extend([0u8; 8]);
    vec![v, p]
}

fn vnet_gso() -> Vec<Vec<u8>> {
    let hdr = |flags: u8, kind: u8, size: u16| {
        let mut h = vec![flags, kind, 54, 0];
        h.extend(size.to_le_bytes());
        h.extend([34, 0, 16, 0, 0, 0]);
        h
    };
    // TSO over IPv4 with the partial checksum, MTU 1500, MSS 1448, 4000 bytes.
    let mut v4 = hdr(1, 1, 1448);
    v4.extend(1500u16.to_be_bytes());
    v4.extend([255, 1, 0, 0]);
    v4.extend(4000u16.to_be_bytes());
    v4.extend([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x19, 0xff, 0xff, 1, 1]);
    // IPv6 behind a VLAN tag, TCP options, a FIN; the sink runs out after 2 segments.
    let mut v6 = hdr(0, 4, 536);
    v6.extend(1280u16.to_be_bytes());
    v6.extend([2, 1, 1, 0, 100, 1, 3]);
    v6.extend(3000u16.to_be_bytes());
    v6.extend([1, 0, 0, 0, 1, 0, 0, 0, 0, 0x11, 0x20, 0, 1, 1]);
    // A plain frame with a partial UDP checksum, raw.
    let mut plain = hdr(1, 0, 0);
    plain[6] = 34;
    plain[8] = 6;
    plain.extend([5, 220, 1, 0]);
    plain.extend(frames::eth_ip(
        CTR,
        frames::REMOTE,
        PROTO_UDP,
        &frames::udp(1, 2, b"x"),
    ));
    vec![v4, v6, plain]
}

fn portspec() -> Vec<Vec<u8>> {
    [
        "80",
        "8080:80",
        "8080:80/UDP",
        "127.0.0.1:8080:80/udp",
        "127.0.0.1::80",
        "8000-8010:80",
        "8000-8002:80-82/udp",
        "[::1]::80",
        "[::1:80:80",
        "0.0.0.0:0:80/tcp",
        "80/sctp",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn api_bodies() -> Vec<Vec<u8>> {
    let bodies: [(u8, &str); 8] = [
        (
            0,
            r#"{"Name":"n1","Driver":"bridge","Internal":false,"Options":{"com.docker.network.driver.mtu":"1400","com.docker.network.bridge.enable_icc":"false","tapnet.host_loopback":"true"},"IPAM":{"Driver":"default","Config":[{"Subnet":"10.5.0.0/16","IPRange":"10.5.1.0/24","Gateway":"10.5.0.1"}]},"Labels":{"a":"b"}}"#,
        ),
        (
            0,
            r#"{"Name":null,"Driver":null,"IPAM":null,"Options":null}"#,
        ),
        (
            1,
            r#"{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.5.0.9"},"Aliases":["web"],"MacAddress":"02:42:0a:05:00:09"}}"#,
        ),
        (2, r#"{"Container":"c1","Force":true}"#),
        (
            3,
            r#"{"Name":"s1","Networks":[{"Network":"n1","IPv4Address":"10.5.0.7","Aliases":["a"]}],"Hostname":"h","PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}],"53/udp":null,"90":[{"HostIp":"","HostPort":"9000-9010"}]},"Rootless":true}"#,
        ),
        (9, r#"{"message":"network n1 not found"}"#),
        (
            4,
            r#"{"Interfaces":[{"Network":"n1","Name":"eth0","Mac":"02:42:0a:05:00:07"}]}"#,
        ),
        (11, r#"{"Id":"0123456789abcdef","Warning":""}"#),
    ];
    bodies
        .iter()
        .map(|(k, b)| {
            let mut v = vec![*k];
            v.extend_from_slice(b.as_bytes());
            v
        })
        .collect()
}

/// `dns`: setup (network n1, forwarding, three resolvers), rate and burst off, a seed;
/// then operations.
fn dns() -> Vec<Vec<u8>> {
    let setup = [0x70, 0, 0, 1, 2, 3, 4];
    // Op 1: a built query from web over UDP for NAMES[which], type A, RD, no EDNS.
    let built = |which: u8, asker: u8, edns: bool| {
        let mut v = vec![1, asker, which, 0x12, 0x34, 1, 0];
        if edns {
            v.extend([1, 0x10, 0]);
        } else {
            v.push(0);
        }
        v.push(0); // no flips
        v
    };
    // Local names: web, db.pets, lots over UDP (truncated), over TCP, with EDNS; PTR.
    let mut local = setup.to_vec();
    for (which, asker, edns) in [
        (0, 0, false),
        (2, 0, false),
        (3, 0, false),
        (3, 0x80, false),
        (3, 0, true),
        (7, 1, false),
        (4, 0, false),
    ] {
        local.extend(built(which, asker, edns));
    }
    // Forwarded: example.com, the resolver answers with 3 records; another times out.
    let mut fwd = setup.to_vec();
    fwd.extend(built(6, 0, false));
    fwd.extend([3, 1, 0, 3, 0]);
    fwd.extend(built(6, 0x80, true));
    fwd.extend([5, 0x02, 0x00, 5, 0x02, 0x00, 5, 0x02, 0x00]);
    fwd.extend([6, 0]);
    // A raw query: the header of a query for "db", then garbage after it.
    let mut raw = setup.to_vec();
    let q = [
        0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'd', b'b', 0, 0, 1, 0, 1,
    ];
    raw.extend([0, 0, 0, q.len() as u8]);
    raw.extend(q);
    raw.extend([0, 0, 0, q.len() as u8 + 1]);
    raw.extend(q);
    raw.push(0xff);
    // An internal network (setup bit 0).
    let mut internal = vec![0x71, 0, 0, 1, 2, 3, 4];
    internal.extend(built(6, 0, false));
    vec![local, fwd, raw, internal]
}

/// `vxlan`: op byte (bit 0 stranger, bit 1 entry's source MAC, bit 2 unknown VNI, bit 3
/// the local container's source MAC), then the bytes: a datagram from the remote
/// container to the local one, the same inner frame alone, an ARP request for the remote
/// address and one for an unknown address.
fn vxlan() -> Vec<Vec<u8>> {
    let remote = Ipv4Addr::new(10, 0, 0, 5);
    let inner = frames::eth(
        MacAddr::from_ipv4(CTR),
        MacAddr::from_ipv4(remote),
        0x0800,
        &frames::ipv4(remote, CTR, PROTO_UDP, &frames::udp(40000, 53, b"q")),
    );
    let mut datagram = vec![0, 0x08, 0, 0, 0, 0, 0, 42, 0];
    datagram.extend_from_slice(&inner);
    let mut alone = vec![2];
    alone.extend_from_slice(&inner);
    let mut proxied = vec![8];
    proxied.extend(frames::arp_request(CTR, remote));
    let mut flooded = vec![8];
    flooded.extend(frames::arp_request(CTR, Ipv4Addr::new(10, 0, 0, 77)));
    vec![datagram, alone, proxied, flooded]
}

/// `cluster`: B writes entries and its datagrams reach A whole, time passes both ways, B
/// fails and returns; and real datagrams (B's table messages, a membership join) as raw
/// bytes, to A and through the decoder.
fn cluster() -> Vec<Vec<u8>> {
    use std::net::SocketAddrV4;
    use std::time::Duration;
    use tapnet_cluster::member::{self, Membership, NodeId};
    use tapnet_cluster::table::{Config, Tables};

    let raw = |op: u8, d: &[u8]| {
        let mut v = vec![op, 0];
        if op == 1 || op == 7 {
            v.pop();
        }
        v.extend_from_slice(&(d.len() as u16).to_be_bytes());
        v.extend_from_slice(d);
        v
    };
    let mut b = Tables::new(2, 1, Config::default(), 2, Duration::ZERO);
    b.join_network("n", Duration::ZERO)
        .expect("a valid network");
    b.node_up(1, 1, Duration::ZERO);
    b.set("n", "e0", b"value", Duration::ZERO)
        .expect("an entry");
    let mut seeds = vec![
        // Set e0 and e1, deliver two datagrams, 200 ms, deliver, B down and up.
        vec![
            3, 0, 3, b'a', b'b', b'c', 3, 1, 1, b'x', 2, 0, 0, 2, 0, 0, 5, 0, 20, 2, 0, 0, 6, 0, 6,
            1,
        ],
        // Set then delete, a sync period later, B restarts with the next generation.
        vec![
            3, 2, 1, b'v', 2, 0, 0, 4, 2, 2, 0, 0, 5, 6, 0, 2, 0, 0, 6, 2, 2, 0, 0, 5, 1, 0,
        ],
    ];
    let mut now = Duration::ZERO;
    for _ in 0..3 {
        now += Duration::from_millis(200);
        while let Some((_, d)) = b.poll_send(now) {
            seeds.push(raw(0, &d));
            seeds.push(raw(7, &d));
        }
    }
    let addr = |n: u8| SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, n), 7946);
    let mut m = Membership::new(NodeId::new(addr(2), 2), member::config(10), 2);
    m.join(NodeId::new(addr(1), 1), Duration::ZERO);
    while let Some((_, d)) = m.poll_send() {
        seeds.push(raw(1, &d));
    }
    seeds.truncate(12);
    seeds
}

/// A stable file name for a seed: FNV-1a of its bytes.
pub fn name(seed: &[u8]) -> String {
    let h = seed.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("seed-{h:016x}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    #[ignore = "writes fuzz/corpus; run by hand after changing a target's input format"]
    fn write_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (target, seeds) in super::all() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for s in seeds {
                std::fs::write(dir.join(super::name(&s)), &s).unwrap();
            }
        }
    }

    #[test]
    fn every_target_has_seeds() {
        for (target, seeds) in super::all() {
            assert!(!seeds.is_empty(), "{target}");
        }
    }
}
