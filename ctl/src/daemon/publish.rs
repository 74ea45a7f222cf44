//! Published ports (`-p`): parsing the API's `PortBindings`, binding the host sockets
//! with Docker's allocation rules, and the live table of what host networking carries.
//!
//! The daemon binds every host socket itself, before it commits the sandbox, so that a
//! taken port is refused at once with Docker's text ("Bind for 0.0.0.0:8080 failed:
//! port is already allocated", or "Bind for :::8080 failed: …" for `::`, as Docker
//! prints an IPv6 address there) and leaves nothing stored. Docker's rules:
//! - no host port: a free port of `/proc/sys/net/ipv4/ip_local_port_range`
//!   (49153–65535 if it cannot be read), as libnetwork's `portallocator_unix.go`;
//! - a host port range: the first free port of it;
//! - no host address: both `0.0.0.0` and `::`, on the same port (one free on both is
//!   chosen), each a binding of its own in `Ports`; on a host without IPv6 `0.0.0.0`
//!   only, silently, as libnetwork's bridge driver does (it binds `::` only where
//!   `[::1]` can be bound, `netutils.IsV6Listenable`; so does tapnet, which also takes
//!   `EAFNOSUPPORT` or `EADDRNOTAVAIL` from binding `::` as "no IPv6");
//! - a given address, IPv4 or IPv6, binds that address only.
//!
//! TCP listeners get `SO_REUSEADDR` (as Docker's proxy sockets do), so a port whose last
//! connections linger in TIME_WAIT (after a daemon restart) can be bound again; a port
//! another socket listens on cannot. IPv6 sockets are IPv6-only (`IPV6_V6ONLY`, as
//! Docker's), so that `::` and `0.0.0.0` are two bindings of one port whatever
//! `net.ipv6.bindv6only` says. The container side stays IPv4: IPv6 clients reach it
//! through the relay from the network's gateway address (see `tapnet_engine::hostnet`). The
//! bound ports are recorded with the sandbox ([`PortRecord`]); a restarted daemon binds
//! exactly those again ([`rebind`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use tapnet_nat::portspec::{self, PortMapping, Proto};

use super::core::Fail;
use super::model::PortRecord;
use tapnet_api::{PortBinding, PortMap};
use tapnet_engine::hostnet::{HostListener, HostNet, HostNetError, PublishId};

/// Docker's ephemeral range when `ip_local_port_range` cannot be read.
pub const FALLBACK_PORT_RANGE: (u16, u16) = (49153, 65535);

const PORT_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The host's ephemeral port range, where ports without a host port come from.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string(PORT_RANGE_FILE)
        .ok()
        .and_then(|s| parse_port_range_file(&s))
        .unwrap_or(FALLBACK_PORT_RANGE)
}

fn parse_port_range_file(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
    match (it.next()?, it.next()?) {
        (Ok(a), Ok(b)) if a > 0 && a <= b => Some((a, b)),
        _ => None,
    }
}

/// Turn the API's `PortBindings` into mappings (one per host binding), checking every
/// key, address and port. An entry with no binding publishes to a free port, as Docker.
pub fn mappings(map: &PortMap) -> Result<Vec<PortMapping>, Fail> {
    let bad = |e: portspec::PortSpecError| Fail::bad_request(e.to_string());
    let mut out = Vec::new();
    for (key, bindings) in map {
        let (container_port, proto) = portspec::parse_port_key(key).map_err(bad)?;
        let default = [PortBinding::default()];
        let bindings = if bindings.is_empty() {
            &default[..]
        } else {
            &bindings[..]
        };
        for b in bindings {
            let host_ip = portspec::parse_host_ip(&b.host_ip).map_err(bad)?;
            let host_ports = match b.host_port.as_str() {
                "" | "0" => None,
                p => Some(
                    portspec::parse_port_range(p)
                        .ok_or_else(|| bad(portspec::PortSpecError::HostPort(p.to_string())))?,
                ),
            };
            out.push(PortMapping {
                host_ip,
                host_ports,
                container_port,
                proto,
            });
        }
    }
    Ok(out)
}

/// Docker's `NetworkSettings.Ports` of recorded ports.
pub fn port_map(ports: &[PortRecord]) -> PortMap {
    let mut out: PortMap = BTreeMap::new();
    for p in ports {
        out.entry(format!("{}/{}", p.container_port, p.proto))
            .or_default()
            .push(PortBinding {
                host_ip: p.host_ip.to_string(),
                host_port: p.host_port.to_string(),
            });
    }
    out
}

/// A host socket bound for a published port, not yet handed to host networking.
#[derive(Debug)]
pub struct BoundPort {
    /// What was bound (what the sandbox's record keeps).
    pub record: PortRecord,
    listener: HostListener,
}

/// Bind one host socket: a TCP listener (`SO_REUSEADDR`) or a UDP socket; on an IPv6
/// address an IPv6-only one.
pub fn bind_one(proto: Proto, addr: SocketAddr) -> io::Result<HostListener> {
    let addr = match addr {
        // `std` binds IPv4 just so.
        SocketAddr::V4(a) => {
            return Ok(match proto {
                Proto::Tcp => HostListener::Tcp(TcpListener::bind(a)?),
                Proto::Udp => HostListener::Udp(UdpSocket::bind(a)?),
            });
        }
        SocketAddr::V6(a) => a,
    };
    use nix::sys::socket::{self as so, sockopt};
    let ty = match proto {
        Proto::Tcp => so::SockType::Stream,
        Proto::Udp => so::SockType::Datagram,
    };
    let fd: OwnedFd = so::socket(
        so::AddressFamily::Inet6,
        ty,
        so::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    so::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    if proto == Proto::Tcp {
        so::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    so::bind(fd.as_raw_fd(), &so::SockaddrIn6::from(addr))?;
    Ok(match proto {
        Proto::Tcp => {
            so::listen(&fd, so::Backlog::MAXCONN)?;
            HostListener::Tcp(TcpListener::from(fd))
        }
        Proto::Udp => HostListener::Udp(UdpSocket::from(fd)),
    })
}

fn record(proto: Proto, container_port: u16, addr: SocketAddr) -> PortRecord {
    PortRecord {
        proto: proto.as_str().to_string(),
        container_port,
        host_ip: addr.ip(),
        host_port: addr.port(),
    }
}

/// Whether IPv6 can be listened on here: `[::1]` can be bound (libnetwork's
/// `IsV6Listenable`). False where IPv6 is off (`ipv6.disable=1`, or `disable_ipv6` on
/// the loopback).
fn ipv6_listenable() -> bool {
    bind_one(
        Proto::Tcp,
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    )
    .is_ok()
}

/// The host has no IPv6 to bind (the protocol is off, or no interface has IPv6).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Bind the host side of every mapping, with Docker's allocation rules (see the module
/// docs). All or nothing: on an error every socket bound so far is closed. `endpoint`
/// names the endpoint for Docker's error text (`NAME (ID)`).
pub fn bind_all(maps: &[PortMapping], endpoint: &str) -> Result<Vec<BoundPort>, Fail> {
    let fail = |m: String| {
        Fail::internal(format!(
            "driver failed programming external connectivity on endpoint {endpoint}: {m}"
        ))
    };
    let mut out = Vec::with_capacity(maps.len());
    let mut has_ipv6 = None;
    for m in maps {
        // No host address: 0.0.0.0 and ::, the latter only where the host has IPv6.
        let (mut ips, v6_optional) = match m.host_ip {
            Some(ip) => (vec![ip], false),
            None if *has_ipv6.get_or_insert_with(ipv6_listenable) => (
                vec![
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ],
                true,
            ),
            None => (vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)], false),
        };
        let (first, last, dynamic) = match m.host_ports {
            Some((a, b)) => (a, b, false),
            None => {
                let (a, b) = ephemeral_range();
                (a, b, true)
            }
        };
        // A dynamic port starts at a random place of the range (so that a port just
        // released is not handed out again at once); a given range is tried in order.
        let len = u32::from(last - first) + 1;
        let start = if dynamic {
            rand::random_range(0..len)
        } else {
            0
        };
        let mut bound = None;
        // The address the port was last refused on (taken), for Docker's text.
        let mut taken_on = ips[0];
        'ports: for i in 0..len {
            let port = (u32::from(first) + (start + i) % len) as u16;
            // One port on every address: what is bound on one is closed again when
            // another refuses the port.
            let mut here = Vec::with_capacity(ips.len());
            let mut j = 0;
            while j < ips.len() {
                let addr = SocketAddr::new(ips[j], port);
                match bind_one(m.proto, addr) {
                    Ok(l) => here.push((addr, l)),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        taken_on = ips[j];
                        continue 'ports;
                    }
                    Err(e) if v6_optional && ips[j].is_ipv6() && no_ipv6(&e) => {
                        // No IPv6 on this host: IPv4 only, as Docker.
                        ips.truncate(j);
                        break;
                    }
                    Err(e) => {
                        let net = match (m.proto, addr) {
                            (Proto::Tcp, SocketAddr::V4(_)) => "tcp4",
                            (Proto::Tcp, SocketAddr::V6(_)) => "tcp6",
                            (Proto::Udp, SocketAddr::V4(_)) => "udp4",
                            (Proto::Udp, SocketAddr::V6(_)) => "udp6",
                        };
                        return Err(fail(format!(
                            "Error starting userland proxy: listen {net} {addr}: bind: {}",
                            os_text(&e)
                        )));
                    }
                }
                j += 1;
            }
            bound = Some(here);
            break;
        }
        let Some(here) = bound else {
            // The address as Go's `netip.Addr.String()` gives it, then `:port`: `::`
            // shows as `:::8080`, as in Docker's text.
            return Err(fail(match m.host_ports {
                Some((a, b)) if a == b => {
                    format!("Bind for {taken_on}:{a} failed: port is already allocated")
                }
                _ => format!(
                    "Bind for {}:{first}-{last} failed: all ports are allocated ({}/{})",
                    ips[0], m.container_port, m.proto
                ),
            }));
        };
        out.extend(here.into_iter().map(|(addr, listener)| BoundPort {
            record: record(m.proto, m.container_port, addr),
            listener,
        }));
    }
    Ok(out)
}

/// Go's wording of an OS error (`address already in use`), as Docker prints it.
fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// Bind exactly the recorded ports again (after a restart). Returns what was bound and
/// what could not be, with the reason.
pub fn rebind(ports: &[PortRecord]) -> (Vec<BoundPort>, Vec<(PortRecord, io::Error)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for p in ports {
        let proto = match p.proto.parse::<Proto>() {
            Ok(proto) => proto,
            Err(e) => {
                failed.push((p.clone(), io::Error::new(io::ErrorKind::InvalidData, e)));
                continue;
            }
        };
        match bind_one(proto, SocketAddr::new(p.host_ip, p.host_port)) {
            Ok(listener) => ok.push(BoundPort {
                record: p.clone(),
                listener,
            }),
            Err(e) => failed.push((p.clone(), e)),
        }
    }
    (ok, failed)
}

/// The published ports host networking carries, by sandbox id.
#[derive(Default)]
pub struct PublishTable {
    live: Mutex<HashMap<String, Published>>,
}

/// The live ports of one sandbox and where they lead.
struct Published {
    /// Network the ports lead into.
    net: String,
    /// The sandbox's address on it.
    ctr_ip: Ipv4Addr,
    ids: Vec<PublishId>,
}

impl PublishTable {
    /// Hand `ports` of sandbox `sandbox` to host networking, towards `ctr_ip` on network
    /// `net`. With the sandbox's `netns`, loopback clients of TCP ports are spliced into
    /// it (see `tapnet_engine::hostnet`); others go through the network's relay. All or
    /// nothing: on an error the ports already published are closed.
    pub fn publish(
        &self,
        hostnet: &HostNet,
        sandbox: &str,
        net: &str,
        ctr_ip: Ipv4Addr,
        netns: Option<std::os::fd::BorrowedFd<'_>>,
        ports: Vec<BoundPort>,
    ) -> Result<(), HostNetError> {
        let mut ids = Vec::with_capacity(ports.len());
        for p in ports {
            let ctr = SocketAddrV4::new(ctr_ip, p.record.container_port);
            let published = match netns {
                Some(ns) => hostnet.publish_spliced(net, p.listener, ctr, ns),
                None => hostnet.publish(net, p.listener, ctr),
            };
            match published {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        hostnet.unpublish(id);
                    }
                    return Err(e);
                }
            }
        }
        let mut live = self.lock();
        let entry = live
            .entry(sandbox.to_string())
            .or_insert_with(|| Published {
                net: net.to_string(),
                ctr_ip,
                ids: Vec::new(),
            });
        // All ports of a sandbox lead to one address; should it have moved, the ports
        // published before lead to the old one: close them rather than keep them.
        if (entry.net.as_str(), entry.ctr_ip) != (net, ctr_ip) {
            for id in std::mem::take(&mut entry.ids) {
                hostnet.unpublish(id);
            }
            entry.net = net.to_string();
            entry.ctr_ip = ctr_ip;
        }
        entry.ids.extend(ids);
        Ok(())
    }

    /// Where the live ports of `sandbox` lead: (network id, address on it).
    pub fn target(&self, sandbox: &str) -> Option<(String, Ipv4Addr)> {
        self.lock().get(sandbox).map(|p| (p.net.clone(), p.ctr_ip))
    }

    /// Close every published port of `sandbox`.
    pub fn unpublish(&self, hostnet: &HostNet, sandbox: &str) {
        let ids = self
            .lock()
            .remove(sandbox)
            .map(|p| p.ids)
            .unwrap_or_default();
        for id in ids {
            hostnet.unpublish(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Published>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(entries: &[(&str, &[(&str, &str)])]) -> PortMap {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.iter()
                        .map(|(ip, port)| PortBinding {
                            host_ip: ip.to_string(),
                            host_port: port.to_string(),
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn port_bindings_parse_with_docker_texts() {
        let m = mappings(&bindings(&[
            ("80/tcp", &[("", "8080"), ("127.0.0.1", "")]),
            ("53/udp", &[]),
            ("81", &[("", "9000-9010")]),
        ]))
        .unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].host_ports, None); // 53/udp sorts first
        assert_eq!(m[0].proto, Proto::Udp);
        assert_eq!(m[1].host_ports, Some((8080, 8080)));
        assert_eq!(m[2].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(m[3].host_ports, Some((9000, 9010)));
        let err = |e: &[(&str, &[(&str, &str)])]| mappings(&bindings(e)).unwrap_err();
        let e = err(&[("x/tcp", &[])]);
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "invalid containerPort: x")
        );
        assert_eq!(err(&[("80/icmp", &[])]).message, "invalid proto: icmp");
        assert_eq!(
            err(&[("80/tcp", &[("", "99999")])]).message,
            "invalid hostPort: 99999"
        );
        assert_eq!(
            err(&[("80/tcp", &[("a.b", "1")])]).message,
            "invalid IP address: a.b"
        );
        // The API's HostIp holds an IPv6 address bare, as Docker's.
        let m = mappings(&bindings(&[("80/tcp", &[("::1", "8080")])])).unwrap();
        assert_eq!(m[0].host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            err(&[("80/tcp", &[("[::1]", "1")])]).message,
            "invalid IP address: [::1]"
        );
    }

    #[test]
    fn port_range_file() {
        assert_eq!(
            parse_port_range_file("32768\t60999\n"),
            Some((32768, 60999))
        );
        assert_eq!(parse_port_range_file("9 1"), None);
        assert_eq!(parse_port_range_file(""), None);
        let (a, b) = ephemeral_range();
        assert!(a <= b);
    }

    #[test]
    fn allocation_on_loopback() {
        // A dynamic port is in the ephemeral range and really bound.
        let m = |ports, proto| PortMapping {
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host_ports: ports,
            container_port: 80,
            proto,
        };
        let b = bind_all(&[m(None, Proto::Tcp)], "web (e1)").unwrap();
        let (lo, hi) = ephemeral_range();
        assert!((lo..=hi).contains(&b[0].record.host_port));
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, b[0].record.host_port)).is_err());
        drop(b);
        // The rest on a port no other test's connection can take while it is free.
        let port = quiet_port();
        let b = eventually(|| bind_all(&[m(Some((port, port)), Proto::Tcp)], "web (e1)")).unwrap();
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert!(TcpListener::bind(addr).is_err());
        // The same port again: Docker's error, and nothing of the request stays bound.
        let other = bind_all(
            &[m(None, Proto::Udp), m(Some((port, port)), Proto::Tcp)],
            "db (e2)",
        );
        let e = other.unwrap_err();
        assert_eq!(e.status, 500);
        assert_eq!(
            e.message,
            format!(
                "driver failed programming external connectivity on endpoint db (e2): Bind for 127.0.0.1:{port} failed: port is already allocated"
            )
        );
        // A range whose first port is taken gives the next free one.
        let range = (port, port.saturating_add(20));
        let r = bind_all(&[m(Some(range), Proto::Tcp)], "x").unwrap();
        assert!(r[0].record.host_port > port && r[0].record.host_port <= range.1);
        drop(b);
        assert!(eventually(|| TcpListener::bind(addr)).is_ok());
    }

    #[test]
    fn inspect_ports_group_by_key() {
        let rec = |c, p| PortRecord {
            proto: "tcp".into(),
            container_port: c,
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: p,
        };
        let m = port_map(&[rec(80, 8080), rec(80, 8081), rec(22, 2222)]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["80/tcp"].len(), 2);
        assert_eq!(m["22/tcp"][0].host_port, "2222");
        assert_eq!(m["22/tcp"][0].host_ip, "0.0.0.0");
        let v6 = PortRecord {
            host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ..rec(80, 8080)
        };
        let m = port_map(&[rec(80, 8080), v6]);
        assert_eq!(
            m["80/tcp"]
                .iter()
                .map(|b| b.host_ip.as_str())
                .collect::<Vec<_>>(),
            ["0.0.0.0", "::"]
        );
    }

    #[test]
    fn port_records_round_trip_and_old_records_read() {
        // Records stored before IPv6 held an Ipv4Addr: the same JSON text.
        let old = r#"{"proto":"tcp","container_port":80,"host_ip":"0.0.0.0","host_port":8080}"#;
        let r: PortRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        for ip in ["::", "::1", "2001:db8::5"] {
            let r = PortRecord {
                host_ip: ip.parse().unwrap(),
                ..r.clone()
            };
            let back: PortRecord =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    /// A port outside the ephemeral range (the kernel never gives it to a connecting
    /// socket), free now on both families for TCP and UDP, and a different one for each
    /// call in this process: a test may bind it, drop it and bind it again without
    /// another test's connection taking it in between. Each call owns the 32 ports from
    /// the one returned (a test may publish a range from it).
    fn quiet_port() -> u16 {
        use std::sync::atomic::{AtomicU16, Ordering};
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let (lo, hi) = ephemeral_range();
        let (first, last) = if hi <= 64535 {
            (hi + 1, 65535)
        } else {
            (1024, lo - 1)
        };
        const BLOCK: u16 = 32;
        let blocks = (last - first + 1) / BLOCK;
        for _ in 0..blocks {
            let p = first + (NEXT.fetch_add(1, Ordering::Relaxed) % blocks) * BLOCK;
            let free = [Proto::Tcp, Proto::Udp].iter().all(|&proto| {
                [
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ]
                .iter()
                .all(|&ip| bind_one(proto, SocketAddr::new(ip, p)).is_ok())
            });
            if free {
                return p;
            }
        }
        panic!("no free port in {first}-{last}");
    }

    /// `f` until it succeeds, for up to a second. Another test of this process that
    /// starts a program (the docker CLI) copies every socket open at that moment into
    /// the child until it execs: a port just closed can look taken for a moment. A
    /// socket really left open stays taken, and fails the test.
    fn eventually<T, E>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match f() {
                Err(_) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    /// Whether this host can bind IPv6 loopback; says SKIP otherwise.
    fn ipv6_or_skip(test: &str) -> bool {
        match TcpListener::bind("[::1]:0") {
            Ok(_) => true,
            Err(e) => {
                eprintln!("SKIP {test}: no IPv6 on this host ([::1]: {e})");
                false
            }
        }
    }

    fn mapping(host_ip: Option<IpAddr>, ports: Option<(u16, u16)>, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip,
            host_ports: ports,
            container_port: 80,
            proto,
        }
    }

    #[test]
    fn no_host_address_binds_both_families_on_one_port() {
        if !ipv6_or_skip("no_host_address_binds_both_families_on_one_port") {
            return;
        }
        for proto in [Proto::Tcp, Proto::Udp] {
            let b = bind_all(&[mapping(None, None, proto)], "web (e1)").unwrap();
            let recs: Vec<_> = b
                .iter()
                .map(|b| (b.record.host_ip, b.record.host_port))
                .collect();
            assert_eq!(recs.len(), 2, "{recs:?}");
            let port = recs[0].1;
            assert_eq!(
                recs,
                [
                    (IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                    (IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
                ]
            );
            let (lo, hi) = ephemeral_range();
            assert!((lo..=hi).contains(&port));
            // Really bound, each family on its own (IPv6-only) socket.
            for ip in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                let again = bind_one(proto, SocketAddr::new(ip, port));
                assert!(
                    matches!(&again, Err(e) if e.kind() == io::ErrorKind::AddrInUse),
                    "{ip} {proto}: {again:?}"
                );
            }
            drop(b);
            // Dropped, both are free again (on a port no connection can take meanwhile).
            let q = quiet_port();
            let b =
                eventually(|| bind_all(&[mapping(None, Some((q, q)), proto)], "web (e1)")).unwrap();
            assert_eq!(b.len(), 2);
            drop(b);
            for ip in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                let again = eventually(|| bind_one(proto, SocketAddr::new(ip, q)));
                assert!(again.is_ok(), "{ip} {proto}: {again:?}");
            }
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn without_ipv6_no_host_address_is_ipv4_only() {
        // A namespace whose IPv6 is off (`disable_ipv6`): `::` could still be bound
        // there, `[::1]` not, and Docker binds IPv4 only.
        let ns = tapnet_engine::sys::netns::NetNsGuard::create(&format!(
            "tapnet-test-{}-noip6",
            std::process::id()
        ))
        .expect("create a scratch namespace");
        let (bound, explicit) = ns
            .run(|| {
                for conf in ["all", "default", "lo"] {
                    std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")
                        .unwrap();
                }
                let mut nl = tapnet_engine::sys::netlink::Netlink::open().unwrap();
                let lo = nl.link_index("lo").unwrap();
                nl.set_up(lo).unwrap();
                assert!(!ipv6_listenable());
                let b = bind_all(&[mapping(None, None, Proto::Tcp)], "web (e1)").unwrap();
                let recs: Vec<_> = b.iter().map(|b| b.record.clone()).collect();
                let e = bind_all(
                    &[mapping(
                        Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                        Some((8080, 8080)),
                        Proto::Tcp,
                    )],
                    "web (e1)",
                )
                .unwrap_err();
                (recs, e.message)
            })
            .unwrap();
        assert_eq!(bound.len(), 1, "{bound:?}");
        assert_eq!(bound[0].host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // An IPv6 address asked for is an error, not dropped.
        assert_eq!(
            explicit,
            "driver failed programming external connectivity on endpoint web (e1): Error starting userland proxy: listen tcp6 [::1]:8080: bind: cannot assign requested address"
        );
    }

    #[test]
    fn ipv6_ports_taken_per_address_with_dockers_text() {
        if !ipv6_or_skip("ipv6_ports_taken_per_address_with_dockers_text") {
            return;
        }
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // A port taken on [::1] only: [::1] refuses it, 127.0.0.1 takes it. (A port no
        // connection of another test can take while it is free between the steps.)
        let port = quiet_port();
        let held =
            eventually(|| bind_all(&[mapping(Some(lo6), Some((port, port)), Proto::Tcp)], "x"))
                .unwrap();
        assert_eq!(held.len(), 1, "a given address binds that address only");
        let e = bind_all(
            &[mapping(Some(lo6), Some((port, port)), Proto::Tcp)],
            "db (e2)",
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "driver failed programming external connectivity on endpoint db (e2): Bind for ::1:{port} failed: port is already allocated"
            )
        );
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v4 =
            eventually(|| bind_all(&[mapping(Some(lo4), Some((port, port)), Proto::Tcp)], "x"))
                .unwrap();
        assert_eq!(v4[0].record.host_ip, lo4);
        drop((held, v4));
        // [::] taken: a default binding of that port fails with Docker's text for ::
        // and leaves 0.0.0.0 unbound.
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let squatter = eventually(|| bind_one(Proto::Tcp, any6)).unwrap();
        let e = bind_all(&[mapping(None, Some((port, port)), Proto::Tcp)], "db (e2)").unwrap_err();
        assert!(
            e.message.ends_with(&format!(
                "Bind for :::{port} failed: port is already allocated"
            )),
            "{}",
            e.message
        );
        assert!(eventually(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))).is_ok());
        // A range skips a port taken on either family.
        let r = bind_all(
            &[mapping(
                None,
                Some((port, port.saturating_add(20))),
                Proto::Tcp,
            )],
            "x",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0].record.host_port > port);
        assert_eq!(r[0].record.host_port, r[1].record.host_port);
        drop(squatter);
    }
}
