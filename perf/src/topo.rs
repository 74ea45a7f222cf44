//! The two same-host datapaths every TAP scenario compares, each between two network
//! namespaces A and B that this process creates (and removes, also on failure):
//!
//! - **tapnet**: a TAP (virtio-net header, checksum and TSO offloads) in A and in B,
//!   both ports of one bridge domain of an engine running in this process;
//! - **kernel-bridge**: a veth pair from A and from B into a Linux bridge that lives in a
//!   third namespace, so nothing touches the root namespace.
//!
//! Both give A 10.200.1.1/24 and B 10.200.1.2/24, MTU 1500, MACs 02:42 + address.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};
use tapnet_engine::sys::tap::{Offloads, Tap, TapConfig};
use tapnet_engine::{DomainConfig, DomainId, Engine, EngineConfig, MacAddr, TapPort};

/// Address of side A.
pub(crate) const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
/// Address of side B.
pub(crate) const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
const PREFIX: u8 = 24;
pub(crate) const MTU: u32 = 1500;
/// Queue length of the tapnet TAPs: TCP's window at 1500 bytes per packet must fit, or
/// the TAP queue drops (pasta's 0.24 Gbit/s came from a 1,000-packet queue).
pub(crate) const TAP_TXQUEUELEN: u32 = 10_000;

/// `tnp-<pid>-<tag>`: names that cannot clash with another run or anything else.
pub(crate) fn ns_name(tag: &str) -> String {
    format!("tnp-{}-{tag}", std::process::id())
}

/// Namespace `tnp-<pid>-<tag>` with loopback up.
pub(crate) fn create_ns(tag: &str) -> Result<NetNsGuard> {
    let name = ns_name(tag);
    let ns =
        NetNsGuard::create(&name).with_context(|| format!("creating network namespace {name}"))?;
    // Loopback up, like any container.
    Netlink::open_in(&ns)?.set_up(1)?;
    Ok(ns)
}

/// Address, MTU, MAC, queue length, up: one end inside its namespace (a /24 of MTU
/// 1500, as every same-host scenario uses).
pub(crate) fn configure(
    ns: &NetNs,
    ifname: &str,
    addr: Ipv4Addr,
    txqueuelen: Option<u32>,
) -> Result<()> {
    configure_with(ns, ifname, (addr, PREFIX), MTU, txqueuelen)
}

/// MAC (from the address), MTU, optional queue length and address, then up: one
/// interface in `ns`.
pub(crate) fn configure_with(
    ns: &NetNs,
    ifname: &str,
    (addr, prefix): (Ipv4Addr, u8),
    mtu: u32,
    txqueuelen: Option<u32>,
) -> Result<()> {
    let mut nl = Netlink::open_in(ns)?;
    let i = nl.link_index(ifname)?;
    nl.set_mac(i, MacAddr::from_ipv4(addr).0)?;
    nl.set_mtu(i, mtu)?;
    if let Some(q) = txqueuelen {
        nl.set_txqueuelen(i, q)?;
    }
    nl.add_address(i, IpAddr::V4(addr), prefix)?;
    nl.set_up(i)?;
    Ok(())
}

/// A sandbox's TAP `eth0` in `ns` (address `addr`, `mtu`, the scenarios' queue length)
/// as a port of `engine`'s domain `dom`, its MAC pinned there; returns the offloads the
/// kernel accepted.
pub(crate) fn sandbox_tap(
    engine: &Engine,
    dom: DomainId,
    ns: &NetNs,
    (addr, prefix): (Ipv4Addr, u8),
    mtu: u32,
) -> Result<Offloads> {
    let cfg = TapConfig {
        name: "eth0".into(),
        ..TapConfig::default()
    };
    let tap = ns.run(|| Tap::create(&cfg))??;
    let offloads = tap.offloads();
    configure_with(ns, "eth0", (addr, prefix), mtu, Some(TAP_TXQUEUELEN))?;
    let port = engine.add_port(Box::new(TapPort::new(tap, mtu)), dom)?;
    engine.add_static_mac(dom, MacAddr::from_ipv4(addr), port)?;
    Ok(offloads)
}

/// Offloads as `csum,tso4,tso6` (those the kernel accepted), or `none`.
pub(crate) fn offloads_text(o: Offloads) -> String {
    let names: Vec<&str> = [(o.csum, "csum"), (o.tso4, "tso4"), (o.tso6, "tso6")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Two namespaces and whatever connects them.
pub(crate) trait Datapath {
    /// `tapnet` or `kernel-bridge`.
    fn label(&self) -> &'static str;
    fn a(&self) -> &NetNs;
    fn b(&self) -> &NetNs;
    /// The interface of A (and of B) towards the other side.
    fn ifnames(&self) -> (&'static str, &'static str);
    /// B's address (servers listen there).
    fn addr_b(&self) -> Ipv4Addr {
        ADDR_B
    }
    /// The engine, if this datapath has one.
    fn engine(&self) -> Option<&Engine> {
        None
    }
}

/// veth + Linux bridge (in its own namespace).
pub(crate) struct KernelBridge {
    a: NetNsGuard,
    b: NetNsGuard,
    _br: NetNsGuard,
}

impl KernelBridge {
    pub(crate) fn create(tag: &str) -> Result<KernelBridge> {
        let br = create_ns(&format!("{tag}kbr"))?;
        let a = create_ns(&format!("{tag}ka"))?;
        let b = create_ns(&format!("{tag}kb"))?;
        let mut nl = Netlink::open_in(&br)?;
        nl.add_bridge("br0")?;
        let bri = nl.link_index("br0")?;
        nl.set_up(bri)?;
        for (ns, port, end, addr) in [
            (&a, "br-a", "veth-a", ADDR_A),
            (&b, "br-b", "veth-b", ADDR_B),
        ] {
            nl.add_veth(port, end)?;
            let pi = nl.link_index(port)?;
            let ei = nl.link_index(end)?;
            nl.set_master(pi, bri)?;
            nl.set_up(pi)?;
            nl.move_to_netns(ei, ns.fd())?;
            configure(ns, end, addr, None)?;
        }
        Ok(KernelBridge { a, b, _br: br })
    }
}

impl Datapath for KernelBridge {
    fn label(&self) -> &'static str {
        "kernel-bridge"
    }
    fn a(&self) -> &NetNs {
        &self.a
    }
    fn b(&self) -> &NetNs {
        &self.b
    }
    fn ifnames(&self) -> (&'static str, &'static str) {
        ("veth-a", "veth-b")
    }
}

/// Two TAPs switched by an engine in this process.
pub(crate) struct TapnetPair {
    // Dropped first: the workers stop and the TAP fds close before the namespaces go.
    engine: Engine,
    a: NetNsGuard,
    b: NetNsGuard,
    offloads: Offloads,
}

impl TapnetPair {
    pub(crate) fn create(tag: &str, cfg: EngineConfig) -> Result<TapnetPair> {
        let a = create_ns(&format!("{tag}ta"))?;
        let b = create_ns(&format!("{tag}tb"))?;
        let engine = Engine::start(cfg)?;
        let dom = engine.add_domain(DomainConfig::default())?;
        let mut offloads = Offloads::NONE;
        for (ns, addr) in [(&a, ADDR_A), (&b, ADDR_B)] {
            offloads = sandbox_tap(&engine, dom, ns, (addr, PREFIX), MTU)?;
        }
        Ok(TapnetPair {
            engine,
            a,
            b,
            offloads,
        })
    }

    /// The offloads the kernel accepted on the TAPs, as `csum,tso4,tso6`.
    pub(crate) fn offloads(&self) -> String {
        offloads_text(self.offloads)
    }
}

impl Datapath for TapnetPair {
    fn label(&self) -> &'static str {
        "tapnet"
    }
    fn a(&self) -> &NetNs {
        &self.a
    }
    fn b(&self) -> &NetNs {
        &self.b
    }
    fn ifnames(&self) -> (&'static str, &'static str) {
        ("eth0", "eth0")
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
}

/// Kernel-side loss counters of a datapath's two ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KernelDrops {
    /// Packets A's interface dropped on transmit (for a TAP: the engine did not read
    /// them in time).
    pub(crate) a_tx_dropped: u64,
    /// Packets B's interface dropped on receive.
    pub(crate) b_rx_dropped: u64,
    /// UDP datagrams B's stack dropped because a socket buffer was full.
    pub(crate) b_udp_rcvbuf_errors: u64,
}

impl KernelDrops {
    pub(crate) fn read(dp: &dyn Datapath) -> Result<KernelDrops> {
        let (ia, ib) = dp.ifnames();
        let read = |ns: &NetNs, f: &'static str| -> Result<String> {
            Ok(ns.run(|| std::fs::read_to_string(f))??)
        };
        let dev_a = read(dp.a(), "/proc/thread-self/net/dev")?;
        let dev_b = read(dp.b(), "/proc/thread-self/net/dev")?;
        let snmp_b = read(dp.b(), "/proc/thread-self/net/snmp")?;
        Ok(KernelDrops {
            a_tx_dropped: dev_counter(&dev_a, ia, DEV_TX_DROP),
            b_rx_dropped: dev_counter(&dev_b, ib, DEV_RX_DROP),
            b_udp_rcvbuf_errors: snmp_counter(&snmp_b, "Udp", "RcvbufErrors"),
        })
    }

    pub(crate) fn since(&self, before: &KernelDrops) -> KernelDrops {
        KernelDrops {
            a_tx_dropped: self.a_tx_dropped.saturating_sub(before.a_tx_dropped),
            b_rx_dropped: self.b_rx_dropped.saturating_sub(before.b_rx_dropped),
            b_udp_rcvbuf_errors: self
                .b_udp_rcvbuf_errors
                .saturating_sub(before.b_udp_rcvbuf_errors),
        }
    }
}

/// Columns of /proc/net/dev after "name:": rx bytes, packets, errs, drop, fifo, frame,
/// compressed, multicast, then tx bytes, packets, errs, drop, ...
const DEV_RX_DROP: usize = 3;
const DEV_TX_DROP: usize = 11;

/// Column `col` of interface `name` in /proc/net/dev text (0 if absent).
fn dev_counter(text: &str, name: &str, col: usize) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim() == name)
        .and_then(|(_, rest)| {
            rest.split_whitespace()
                .nth(col)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Field `field` of protocol `proto` in /proc/net/snmp text (a header line and a value
/// line per protocol; 0 if absent).
fn snmp_counter(text: &str, proto: &str, field: &str) -> u64 {
    let tag = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&tag));
    match (lines.next(), lines.next()) {
        (Some(h), Some(v)) => h
            .split_whitespace()
            .zip(v.split_whitespace())
            .find(|(k, _)| *k == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_columns() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
             eth0: 1000      10    1    2    0     0          0         0     2000      20    3    4    0     0       0          0\n";
        assert_eq!(dev_counter(text, "eth0", DEV_RX_DROP), 2);
        assert_eq!(dev_counter(text, "eth0", DEV_TX_DROP), 4);
        assert_eq!(dev_counter(text, "eth1", DEV_TX_DROP), 0);
    }

    #[test]
    fn proc_net_snmp_fields() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 5 0 7 9 7 0\n";
        assert_eq!(snmp_counter(text, "Udp", "RcvbufErrors"), 7);
        assert_eq!(snmp_counter(text, "Udp", "InDatagrams"), 5);
        assert_eq!(snmp_counter(text, "Tcp", "RetransSegs"), 0);
    }
}
