//! End to end: a sandbox cannot send from a neighbour's address. A real `tapnet
//! daemon`, sandboxes in real network namespaces, kernel TCP/UDP inside them.
//!
//! The attacker takes its neighbour's IPv4 address (`ip addr add` in its own namespace,
//! which any sandbox with CAP_NET_ADMIN can do) and sends a datagram from it through
//! the gateway. Whatever learns addresses from frames must not learn that one: a host
//! client of the neighbour's published port still reaches the neighbour, not the
//! attacker. Traffic stays on this host: the gateway address leads to 127.0.0.1
//! (`tapnet.host_loopback=true`). Root only: `#[ignore = "needs root"]`. Networks
//! 10.247.<n>.0/24.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, assert_pings, in_ns_ok};
use serde_json::Value;
use tapnet_engine::sys::netns::NetNs;

const IO_LIMIT: Duration = Duration::from_secs(10);

/// The host port published for `sb`'s first port.
fn host_port(d: &Daemon, sb: &str) -> u16 {
    let v = d.inspect("sandbox", sb);
    let (_, list) = v["Ports"]
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("a published port");
    list[0]["HostPort"].as_str().unwrap().parse().unwrap()
}

/// A relay counter of network `net` from `tapnet stats` (0 when absent).
fn relay_counter(d: &Daemon, net: &str, name: &str) -> u64 {
    let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    v["External"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["Network"] == net)
        .and_then(|e| e["Counters"][name].as_u64())
        .unwrap_or(0)
}

/// TCP servers that answer every connection with a fixed text; stopped and joined on
/// drop.
#[derive(Default)]
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    /// A server in namespace `ns` on `addr` answering `answer`.
    fn answer_with(&mut self, ns: &str, addr: SocketAddrV4, answer: &'static [u8]) {
        let l = NetNs::open(ns)
            .unwrap()
            .run(|| TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(answer);
                        let _ = s.shutdown(Shutdown::Write);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Send one UDP datagram from `from` to `to` inside namespace `ns`.
fn udp_from(ns: &str, from: Ipv4Addr, to: SocketAddrV4) {
    NetNs::open(ns)
        .unwrap()
        .run(|| {
            let s = UdpSocket::bind((from, 0)).unwrap();
            s.send_to(b"x", to).unwrap();
        })
        .unwrap();
}

/// Connect to the published port on 127.0.0.1 and read what the server answers.
fn who_answers(port: u16) -> String {
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut c = TcpStream::connect_timeout(&to.into(), IO_LIMIT)
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    c.set_read_timeout(Some(IO_LIMIT)).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// The attacker sends from the victim's address; the victim's published port must
/// still lead to the victim.
fn spoof_and_check(d: &Daemon, net: &str, subnet: u8, icc: bool) {
    let mut create = vec![
        "network".to_string(),
        "create".into(),
        "--subnet".into(),
        format!("10.247.{subnet}.0/24"),
        "-o".into(),
        "tapnet.host_loopback=true".into(),
    ];
    if !icc {
        create.extend([
            "-o".into(),
            "com.docker.network.bridge.enable_icc=false".into(),
        ]);
    }
    create.push(net.into());
    d.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    let victim = d.sandbox(&format!("{net}-victim"), &[net], &["-p", "127.0.0.1::8080"]);
    let attacker = d.sandbox(&format!("{net}-attacker"), &[net], &[]);
    let (v_ip, a_ip, gw) = (victim.ipv4(net), attacker.ipv4(net), attacker.gateway(net));
    let port = host_port(d, &victim.name);
    let mut servers = Servers::default();
    servers.answer_with(&victim.netns, SocketAddrV4::new(v_ip, 8080), b"victim");
    servers.answer_with(
        &attacker.netns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080),
        b"attacker",
    );
    assert_eq!(who_answers(port), "victim", "before any spoofing");

    // The attacker resolves the gateway with its own address, then takes the victim's.
    assert_pings(&attacker.netns, &gw.to_string());
    in_ns_ok(
        &attacker.netns,
        &["ip", "addr", "add", &format!("{v_ip}/32"), "dev", "eth0"],
    );
    let opened = relay_counter(d, net, "udp_opened");
    udp_from(&attacker.netns, v_ip, SocketAddrV4::new(gw, 9));
    // Then a datagram from its own address: once the relay has opened its flow, it has
    // seen every earlier frame of the attacker's port (one port, one ring, in order).
    udp_from(&attacker.netns, a_ip, SocketAddrV4::new(gw, 9));
    let deadline = Instant::now() + IO_LIMIT;
    while relay_counter(d, net, "udp_opened") <= opened {
        assert!(
            Instant::now() < deadline,
            "the relay never saw the attacker's own datagram"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        who_answers(port),
        "victim",
        "the victim's published port leads to the attacker (icc={icc})"
    );
    // The victim's own egress still works.
    assert_pings(&victim.netns, &gw.to_string());
}

#[test]
#[ignore = "needs root"]
fn a_sandbox_cannot_divert_its_neighbours_traffic() {
    let d = Daemon::start("guard-icc");
    spoof_and_check(&d, "guard-icc", 1, true);
}

#[test]
#[ignore = "needs root"]
fn a_sandbox_cannot_divert_its_neighbours_traffic_with_icc_off() {
    let d = Daemon::start("guard-noicc");
    spoof_and_check(&d, "guard-noicc", 2, false);
}
