//! Host sockets of published ports, as the kernel gives them.
//!
//! TCP listeners get `SO_REUSEADDR` (as Docker's proxy sockets do), so a port whose last
//! connections linger in TIME_WAIT (after a daemon restart) can be bound again; a port
//! another socket listens on cannot. IPv6 sockets are IPv6-only (`IPV6_V6ONLY`, as
//! Docker's), so that `::` and `0.0.0.0` are two bindings of one port whatever
//! `net.ipv6.bindv6only` says. Which ports to bind is the core's decision (Docker's
//! allocation rules, in `core::ports`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use tapnet_engine::hostnet::{HostListener, PublishId};
use tapnet_nat::portspec::Proto;

/// Docker's ephemeral range when `ip_local_port_range` cannot be read.
pub(super) const FALLBACK_PORT_RANGE: (u16, u16) = (49153, 65535);

const PORT_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The host's ephemeral port range, where ports without a host port come from.
pub(super) fn ephemeral_range() -> (u16, u16) {
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

/// Bind one host socket: a TCP listener (`SO_REUSEADDR`) or a UDP socket; on an IPv6
/// address an IPv6-only one.
pub(super) fn bind_one(proto: Proto, addr: SocketAddr) -> io::Result<HostListener> {
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

/// Whether IPv6 can be listened on here: `[::1]` can be bound (libnetwork's
/// `IsV6Listenable`). False where IPv6 is off (`ipv6.disable=1`, or `disable_ipv6` on
/// the loopback).
pub(super) fn ipv6_listenable() -> bool {
    bind_one(
        Proto::Tcp,
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    )
    .is_ok()
}

/// The published ports host networking carries, by sandbox id.
#[derive(Debug, Default)]
pub(super) struct PublishTable(Mutex<HashMap<String, Vec<PublishId>>>);

impl PublishTable {
    /// Sandbox `sandbox` has these ports live now too.
    pub(super) fn add(&self, sandbox: &str, ids: Vec<PublishId>) {
        self.lock()
            .entry(sandbox.to_string())
            .or_default()
            .extend(ids);
    }

    /// Forget the live ports of `sandbox`, returning them for closing.
    pub(super) fn take(&self, sandbox: &str) -> Vec<PublishId> {
        self.lock().remove(sandbox).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<PublishId>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_file_parses_or_falls_back() {
        assert_eq!(
            parse_port_range_file("32768\t60999\n"),
            Some((32768, 60999))
        );
        assert_eq!(parse_port_range_file("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range_file("60999 32768"), None);
        assert_eq!(parse_port_range_file("0 10"), None);
        assert_eq!(parse_port_range_file("x y"), None);
        assert_eq!(parse_port_range_file(""), None);
        let (a, b) = ephemeral_range();
        assert!(a > 0 && a <= b);
    }
}
