//! The two overlay datapaths the overlay scenarios compare. Each joins sandbox A and
//! sandbox B, two network namespaces, across an underlay: two more namespaces U1 and
//! U2 (the two "hosts") joined by a veth pair, MTU 1500, 192.168.200.1/24 in U1 and
//! .2/24 in U2. VNI 42, inner MTU 1450 on both.
//!
//! - **tapnet**: two engines in this process. Engine 1 has A's TAP (virtio-net header,
//!   checksum and TSO offloads, as in tap-tcp) and a VTEP whose underlay sockets were
//!   bound in U1; engine 2 has B's TAP and a VTEP in U2. Each knows the other as VNI
//!   42's peer and the other sandbox as an entry (MAC and address, for proxy ARP).
//! - **kernel-vxlan**: in U1 (and likewise U2) a Linux VXLAN device (`nolearning`, a
//!   static fdb entry for the other sandbox's MAC and an all-zero one for broadcast,
//!   both to the other VTEP) and a veth from the sandbox are ports of a Linux bridge, as
//!   Docker's overlay driver builds it (which keeps the bridge in a namespace of its
//!   own; here it shares the underlay's).
//!
//! Both give A 10.200.1.1/24 and B 10.200.1.2/24, MTU 1450, MACs 02:42 + address.
//! Everything lives in `tnp-<pid>-…` namespaces, removed (with every interface in them)
//! when the datapath drops.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tapnet_engine::overlay::{Entry, Overlay, OverlayConfig, OverlayStats, VXLAN_PORT, Vni};
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};
use tapnet_engine::sys::tap::Offloads;
use tapnet_engine::{DomainConfig, Engine, EngineConfig, MacAddr};

use crate::counters::Delta;
use crate::opts::Opts;
use crate::proc::{find_program, spawn_in};
use crate::report::Measurement;
use crate::sys::{self, Ticks};
use crate::topo::{
    ADDR_A, ADDR_B, Datapath, configure_with, create_ns, offloads_text, sandbox_tap,
};

/// The overlay network's VNI.
pub(crate) const VNI: u32 = 42;
/// MTU of the sandboxes' interfaces (and of both datapaths' overlays).
pub(crate) const INNER_MTU: u32 = 1450;
/// MTU of the underlay veth pair.
pub(crate) const UNDERLAY_MTU: u32 = 1500;
/// Underlay address of host 1 (engine 1's VTEP, or the kernel's VXLAN device in U1).
pub(crate) const VTEP_1: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
/// Underlay address of host 2.
pub(crate) const VTEP_2: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 2);
const SANDBOX_PREFIX: u8 = 24;
const UNDERLAY_PREFIX: u8 = 24;
/// Send sockets per VTEP (outer source-port entropy), as `OverlayConfig::new` has it.
const SOURCE_SOCKETS: usize = 4;

/// The VNI as the overlay API takes it.
pub(crate) fn vni() -> Result<Vni> {
    Vni::new(VNI).context("VNI out of range")
}

/// U1 and U2 joined by a veth pair (`ul1` in U1, `ul2` in U2), addressed and up.
pub(crate) fn underlay(tag: &str) -> Result<(NetNsGuard, NetNsGuard)> {
    let u1 = create_ns(&format!("{tag}u1"))?;
    let u2 = create_ns(&format!("{tag}u2"))?;
    let mut nl = Netlink::open_in(&u1)?;
    nl.add_veth("ul1", "ul2")?;
    let peer = nl.link_index("ul2")?;
    nl.move_to_netns(peer, u2.fd())?;
    configure_with(&u1, "ul1", (VTEP_1, UNDERLAY_PREFIX), UNDERLAY_MTU, None)?;
    configure_with(&u2, "ul2", (VTEP_2, UNDERLAY_PREFIX), UNDERLAY_MTU, None)?;
    Ok((u1, u2))
}

/// Run `program args…` inside `ns` and fail with its stderr if it fails.
fn run_in(ns: &NetNs, program: &Path, args: &[&str]) -> Result<()> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let p = spawn_in(ns, program, &args, true, &[])?;
    let (st, _, err) = p.wait_output(Duration::from_secs(10))?;
    if !st.success() {
        bail!(
            "`{} {}` in {} failed ({st}): {}",
            program.display(),
            args.join(" "),
            ns.name(),
            err.trim()
        );
    }
    Ok(())
}

/// The kernel's VXLAN between A and B (see the module docs).
pub(crate) struct KernelVxlan {
    a: NetNsGuard,
    b: NetNsGuard,
    _u1: NetNsGuard,
    _u2: NetNsGuard,
}

impl KernelVxlan {
    pub(crate) fn create(tag: &str) -> Result<KernelVxlan> {
        let ip = find_program("ip").context("the kernel VXLAN baseline needs ip (iproute2)")?;
        let bridge =
            find_program("bridge").context("the kernel VXLAN baseline needs bridge (iproute2)")?;
        let (u1, u2) = underlay(&format!("{tag}k"))?;
        let a = create_ns(&format!("{tag}ka"))?;
        let b = create_ns(&format!("{tag}kb"))?;
        let vni = VNI.to_string();
        let port = VXLAN_PORT.to_string();
        for (u, ul, local, remote, sandbox, addr, peer_addr) in [
            (&u1, "ul1", VTEP_1, VTEP_2, &a, ADDR_A, ADDR_B),
            (&u2, "ul2", VTEP_2, VTEP_1, &b, ADDR_B, ADDR_A),
        ] {
            let (local, remote) = (local.to_string(), remote.to_string());
            #[rustfmt::skip]
            run_in(u, &ip, &[
                "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", &local,
                "dstport", &port, "dev", ul, "nolearning",
            ])?;
            let mut nl = Netlink::open_in(u)?;
            let vx = nl.link_index("vx0")?;
            nl.set_mtu(vx, INNER_MTU)?;
            nl.add_bridge("br0")?;
            let br = nl.link_index("br0")?;
            nl.set_master(vx, br)?;
            nl.add_veth("br-s", "eth0")?;
            let port_i = nl.link_index("br-s")?;
            let end = nl.link_index("eth0")?;
            nl.set_mtu(port_i, INNER_MTU)?;
            nl.set_master(port_i, br)?;
            nl.move_to_netns(end, sandbox.fd())?;
            for i in [vx, port_i, br] {
                nl.set_up(i)?;
            }
            configure_with(sandbox, "eth0", (addr, SANDBOX_PREFIX), INNER_MTU, None)?;
            let peer_mac = mac_text(MacAddr::from_ipv4(peer_addr));
            for mac in ["00:00:00:00:00:00", &peer_mac] {
                #[rustfmt::skip]
                run_in(u, &bridge, &[
                    "fdb", "append", mac, "dev", "vx0", "dst", &remote, "self", "permanent",
                ])?;
            }
        }
        Ok(KernelVxlan {
            a,
            b,
            _u1: u1,
            _u2: u2,
        })
    }
}

impl Datapath for KernelVxlan {
    fn label(&self) -> &'static str {
        "kernel-vxlan"
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
}

fn mac_text(m: MacAddr) -> String {
    m.0.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The CPUs of the two engines: engine 1 as the TAP scenarios pin it (its workers on the
/// first allowed CPUs), engine 2 on the CPUs after those (wrapping), so that on a
/// machine with CPUs to spare the two "hosts" do not share one; and the CPUs neither
/// uses (where `--pin-apps` and the latency scenario put the traffic).
pub(crate) struct Placement {
    pub(crate) engine1: EngineConfig,
    pub(crate) engine2: EngineConfig,
    pub(crate) free: Vec<usize>,
}

impl Placement {
    pub(crate) fn new(opts: &Opts) -> Result<Placement> {
        let engine1 = opts.engine_config()?;
        let workers = engine1.mapping.0.len();
        let allowed = sys::allowed_cpus();
        let n = allowed.len().max(1);
        let cpus1: Vec<usize> = allowed.iter().copied().cycle().take(workers).collect();
        let cpus2: Vec<usize> = allowed
            .iter()
            .copied()
            .cycle()
            .skip(workers % n)
            .take(workers)
            .collect();
        let free = allowed
            .iter()
            .copied()
            .filter(|c| !cpus1.contains(c) && !cpus2.contains(c))
            .collect();
        Ok(Placement {
            engine1: EngineConfig {
                cpus: cpus1,
                ..engine1.clone()
            },
            engine2: EngineConfig {
                cpus: cpus2,
                ..engine1
            },
            free,
        })
    }

    /// The traffic's CPUs: the free ones with `--pin-apps`, else none (the scheduler
    /// places them).
    pub(crate) fn app_cpus(&self, opts: &Opts) -> Vec<usize> {
        if opts.pin_apps {
            self.free.clone()
        } else {
            Vec::new()
        }
    }
}

/// One host of the tapnet datapath: an engine with a sandbox's TAP and a VTEP.
pub(crate) struct Host {
    // Dropped first: the workers stop, the TAP and the sockets close.
    pub(crate) engine: Engine,
    pub(crate) overlay: Overlay,
    /// The engine's worker threads (thread id, name).
    workers: Vec<(u32, String)>,
}

impl Host {
    /// Engine `cfg` with sandbox `sandbox`'s TAP (address `addr`) and a VTEP at `local`
    /// (sockets bound in `underlay`) whose peer is `remote`, holding `peer_addr`.
    fn create(
        cfg: EngineConfig,
        sandbox: &NetNs,
        addr: Ipv4Addr,
        underlay: &NetNs,
        local: Ipv4Addr,
        (remote, peer_addr): (Ipv4Addr, Ipv4Addr),
    ) -> Result<(Host, Offloads)> {
        let workers_before = worker_threads();
        let n_workers = cfg.mapping.0.len();
        let engine = Engine::start(cfg)?;
        let workers = wait_new_workers(&workers_before, n_workers);
        let dom = engine.add_domain(DomainConfig::default())?;
        let offloads = sandbox_tap(&engine, dom, sandbox, (addr, SANDBOX_PREFIX), INNER_MTU)?;
        let at = SocketAddrV4::new(local, VXLAN_PORT);
        let (rx, tx) = underlay.run(|| -> std::io::Result<_> {
            let rx = UdpSocket::bind(at)?;
            let tx = (0..SOURCE_SOCKETS)
                .map(|_| UdpSocket::bind(SocketAddrV4::new(local, 0)))
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((rx, tx))
        })??;
        let mut ocfg = OverlayConfig::new(at);
        ocfg.source_sockets = SOURCE_SOCKETS;
        // The underlay's MTU cannot be looked up from this thread's namespace.
        ocfg.mtu = Some(INNER_MTU);
        let overlay = Overlay::with_sockets(&engine, ocfg, rx, tx)?;
        let vni = vni()?;
        overlay.add_network(&engine, vni, dom)?;
        overlay.add_peer(vni, remote)?;
        overlay.add_entry(
            &engine,
            vni,
            Entry {
                mac: MacAddr::from_ipv4(peer_addr),
                ip: Some(peer_addr),
                vtep: remote,
            },
        )?;
        Ok((
            Host {
                engine,
                overlay,
                workers,
            },
            offloads,
        ))
    }
}

/// Two engines switching A and B over an overlay (see the module docs).
pub(crate) struct TapnetOverlay {
    // Dropped first: both engines stop before the namespaces go.
    pub(crate) h1: Host,
    pub(crate) h2: Host,
    a: NetNsGuard,
    b: NetNsGuard,
    _u1: NetNsGuard,
    _u2: NetNsGuard,
    offloads: Offloads,
}

impl TapnetOverlay {
    pub(crate) fn create(tag: &str, place: &Placement) -> Result<TapnetOverlay> {
        let (u1, u2) = underlay(&format!("{tag}t"))?;
        let a = create_ns(&format!("{tag}ta"))?;
        let b = create_ns(&format!("{tag}tb"))?;
        let (h1, offloads) = Host::create(
            place.engine1.clone(),
            &a,
            ADDR_A,
            &u1,
            VTEP_1,
            (VTEP_2, ADDR_B),
        )?;
        let (h2, _) = Host::create(
            place.engine2.clone(),
            &b,
            ADDR_B,
            &u2,
            VTEP_2,
            (VTEP_1, ADDR_A),
        )?;
        Ok(TapnetOverlay {
            h1,
            h2,
            a,
            b,
            _u1: u1,
            _u2: u2,
            offloads,
        })
    }

    /// The offloads the kernel accepted on the TAPs, as `csum,tso4,tso6`.
    pub(crate) fn offloads(&self) -> String {
        offloads_text(self.offloads)
    }

    /// Whether the VTEPs send with UDP GSO and read with UDP GRO (engine 1's).
    pub(crate) fn udp_offloads(&self) -> String {
        let (gso, gro) = self.h1.overlay.offloads();
        format!("gso {}, gro {}", on_off(gso), on_off(gro))
    }

    /// CPU ticks of both engines' workers, keyed `e1.tapnet-w0`, `e2.tapnet-w0`, ….
    pub(crate) fn worker_ticks(&self) -> Ticks {
        let mut out = BTreeMap::new();
        for (tag, h) in [("e1", &self.h1), ("e2", &self.h2)] {
            for (tid, name) in &h.workers {
                if let Some(t) = tid_ticks(*tid) {
                    out.insert(format!("{tag}.{name}"), t);
                }
            }
        }
        out
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl Datapath for TapnetOverlay {
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
        Some(&self.h1.engine)
    }
}

/// The engines' worker threads of this process now: (thread id, name).
fn worker_threads() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let name = name.trim();
            name.starts_with("tapnet-w")
                .then(|| (tid, name.to_string()))
        })
        .collect()
}

/// The worker threads not in `before`, once `n` of them have their names (a thread
/// names itself as it starts), or what there is after a second.
fn wait_new_workers(before: &[(u32, String)], n: usize) -> Vec<(u32, String)> {
    let t0 = Instant::now();
    loop {
        let new: Vec<(u32, String)> = worker_threads()
            .into_iter()
            .filter(|(t, _)| !before.iter().any(|(b, _)| b == t))
            .collect();
        if new.len() >= n || t0.elapsed() > Duration::from_secs(1) {
            return new;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (user, system) clock ticks of thread `tid` of this process.
fn tid_ticks(tid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Growth of a VTEP's counters between two readings, by name (non-zero only).
pub(crate) fn overlay_delta(after: &OverlayStats, before: &OverlayStats) -> BTreeMap<String, u64> {
    after
        .pairs()
        .into_iter()
        .zip(before.pairs())
        .map(|((k, a), (_, b))| (k.to_string(), a.saturating_sub(b)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The counters of an [`overlay_delta`] that count lost datagrams or frames.
pub(crate) fn overlay_drops(d: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    d.iter()
        .filter(|(k, _)| {
            k.starts_with("drop_")
                || k.ends_with("_errors")
                || *k == "rx_no_buffer"
                || *k == "rx_truncated"
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// `name=value …` of two VTEPs' drops, empty if none.
pub(crate) fn overlay_drops_note(e1: &BTreeMap<String, u64>, e2: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = [("e1", e1), ("e2", e2)]
        .iter()
        .flat_map(|(tag, d)| {
            overlay_drops(d)
                .into_iter()
                .map(move |(k, v)| format!("{tag}.{k}={v}"))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("VTEP drops: {}", parts.join(" "))
    }
}

/// Both engines' drop notes (`Delta::drops_note`), each marked with its engine; empty
/// if neither dropped.
pub(crate) fn engine_drops(e1: &str, e2: &str) -> String {
    [("e1", e1), ("e2", e2)]
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(e, s)| format!("{e} {s}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `m` with both engines' VTEP counters, drop counters and stage counters over the run.
pub(crate) fn with_engine_details(
    m: Measurement,
    (o1, o2): (&BTreeMap<String, u64>, &BTreeMap<String, u64>),
    (d1, d2): (&Delta, &Delta),
) -> Measurement {
    m.detail("overlay_e1", o1)
        .detail("overlay_e2", o2)
        .detail("overlay_drops", [overlay_drops(o1), overlay_drops(o2)])
        .detail("stages_e1", d1.stages())
        .detail("stages_e2", d2.stages())
        .detail("drops_e1", d1.drops())
        .detail("drops_e2", d2.drops())
}

/// Syscalls per 64 KiB of bytes (0 when no bytes moved).
pub(crate) fn per_64k(syscalls: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        syscalls as f64 / (bytes as f64 / 65536.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscalls_per_64k() {
        assert_eq!(per_64k(0, 0), 0.0);
        assert_eq!(per_64k(2, 65536), 2.0);
        assert_eq!(per_64k(1, 4 * 65536), 0.25);
    }

    #[test]
    fn drops_are_the_loss_counters() {
        let d: BTreeMap<String, u64> = [
            ("rx_syscalls", 5),
            ("drop_unknown_vni", 1),
            ("tx_errors", 2),
            ("rx_no_buffer", 3),
            ("tx_bytes", 9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let drops = overlay_drops(&d);
        let drops: Vec<&str> = drops.keys().map(|k| k.as_str()).collect();
        assert_eq!(drops, ["drop_unknown_vni", "rx_no_buffer", "tx_errors"]);
        assert_eq!(
            overlay_drops_note(&d, &BTreeMap::new()),
            "VTEP drops: e1.drop_unknown_vni=1 e1.rx_no_buffer=3 e1.tx_errors=2"
        );
        assert_eq!(mac_text(MacAddr::from_ipv4(ADDR_B)), "02:42:0a:c8:01:02");
    }
}
