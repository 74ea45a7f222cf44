//! `flood`: a sandbox on a real TAP floods its network (1,000,000 random source MACs,
//! broadcast, multicast and ARP storms) while iperf3 TCP runs between two other
//! sandboxes of the same network; a sandbox on a second network counts what reaches it.
//!
//! One engine, two bridge domains: network A has namespaces `a` (iperf3 client,
//! 10.200.1.1), `b` (server, 10.200.1.2) and `f` (the flooder, 10.200.1.3); network B
//! has `c` (10.200.2.1), which counts every frame its interface receives. The iperf3
//! measurement runs three times: on A alone; while the same flooder writes into a TAP of
//! its own that no engine reads (its CPU cost without tapnet's); and while `f` floods A:
//! a packet-socket writer in `f`'s namespace, paced at [`FLOOD_PPS`] and bounded by
//! [`FLOOD_BUDGET`] frames and the measurement's time. Reported: the throughput ratio
//! with both absolute numbers, the frames of the flood that reached network B (must be
//! 0), the RSS of this process (engine included) before and after the flood, the frames
//! the flooder wrote and the engine read, and every switch and domain counter that
//! moved (drop, learning and flood counters included, whatever the engine exposes).

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};
use tapnet_engine::sys::tap::{Tap, TapConfig};
use tapnet_engine::{DomainConfig, Engine, MacAddr, PortId, TapPort};

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::proc::ensure_iperf3;
use crate::report::{Better, Measurement, Reporter};
use crate::sys;
use crate::tap_tcp::{client, server};
use crate::topo::{ADDR_A, ADDR_B, Datapath, MTU, TAP_TXQUEUELEN, configure, create_ns};

const SCENARIO: &str = "flood";
/// The flooder's address on network A.
const ADDR_F: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 3);
/// The address of the flooder's second TAP, which no engine reads (the baseline).
const ADDR_DETACHED: Ipv4Addr = Ipv4Addr::new(10, 200, 3, 3);
/// The counting sandbox's address on network B.
const ADDR_C: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 1);
/// Distinct random source MACs the flood uses.
const RANDOM_MACS: u32 = 1_000_000;
/// Frames per second the flooder writes at most.
const FLOOD_PPS: u64 = 300_000;
/// Frames the flooder writes at most.
const FLOOD_BUDGET: u64 = 3_000_000;
/// The ethertype of the flood's non-ARP frames (IEEE local experimental).
const FLOOD_ETHERTYPE: u16 = 0x88b5;
/// The flood's frame size (the Ethernet minimum without FCS).
const FRAME_LEN: usize = 60;

/// Network A (a, b, f) and network B (c) on one engine.
struct Topo {
    // Dropped first: the workers stop and the TAP fds close before the namespaces go.
    engine: Engine,
    a: NetNsGuard,
    b: NetNsGuard,
    f: NetNsGuard,
    c: NetNsGuard,
    flood_port: PortId,
}

impl Topo {
    fn create(opts: &Opts) -> Result<Topo> {
        let a = create_ns("fl-a")?;
        let b = create_ns("fl-b")?;
        let f = create_ns("fl-f")?;
        let c = create_ns("fl-c")?;
        let engine = Engine::start(opts.engine_config()?)?;
        let net_a = engine.add_domain(DomainConfig::default())?;
        let net_b = engine.add_domain(DomainConfig::default())?;
        let mut flood_port = PortId(0);
        for (ns, addr, dom) in [
            (&a, ADDR_A, net_a),
            (&b, ADDR_B, net_a),
            (&f, ADDR_F, net_a),
            (&c, ADDR_C, net_b),
        ] {
            let cfg = TapConfig {
                name: "eth0".into(),
                ..TapConfig::default()
            };
            let tap = ns.run(|| Tap::create(&cfg))??;
            configure(ns, "eth0", addr, Some(TAP_TXQUEUELEN))?;
            let port = engine.add_port(Box::new(TapPort::new(tap, MTU)), dom)?;
            engine.add_static_mac(dom, MacAddr::from_ipv4(addr), port)?;
            if addr == ADDR_F {
                flood_port = port;
            }
        }
        Ok(Topo {
            engine,
            a,
            b,
            f,
            c,
            flood_port,
        })
    }
}

impl Datapath for Topo {
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

/// A packet socket bound to `eth0` of `ns`, receiving `protocol` (0: nothing, for a
/// writer; `ETH_P_ALL`: every frame).
fn packet_socket(ns: &NetNs, protocol: u16) -> Result<OwnedFd> {
    packet_socket_on(ns, c"eth0", protocol)
}

/// A packet socket bound to interface `ifname` of `ns` (see [`packet_socket`]).
fn packet_socket_on(ns: &NetNs, ifname: &std::ffi::CStr, protocol: u16) -> Result<OwnedFd> {
    let fd = ns.run(|| -> io::Result<OwnedFd> {
        let proto_be = i32::from(protocol.to_be());
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                proto_be,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid value of each field.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    })??;
    Ok(fd)
}

/// Attaches a classic BPF filter to packet socket `fd` that accepts only frames
/// [`is_flood`] recognises: a random source (first byte 0x06), the flood's ethertype, or
/// an ARP frame whose sender is the flooder.
fn only_flood_frames(fd: &OwnedFd) -> io::Result<()> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld_b, ld_h, ld_w, jeq, ret) = (
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let mut prog = [
        op(ld_b, 0, 0, 6),                         // 0: source MAC's first byte
        op(jeq, 6, 0, 0x06),                       // 1: random source: accept
        op(ld_h, 0, 0, 12),                        // 2: ethertype
        op(jeq, 4, 0, u32::from(FLOOD_ETHERTYPE)), // 3: the flood's: accept
        op(jeq, 0, 4, 0x0806),                     // 4: not ARP: reject
        op(ld_w, 0, 0, 28),                        // 5: ARP sender address
        op(jeq, 1, 0, u32::from(ADDR_F)),          // 6: the flooder: accept
        op(ret, 0, 0, 0),                          // 7: reject
        op(ret, 0, 0, 0xffff),                     // 8: accept
        op(ret, 0, 0, 0),                          // 9: reject
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `i`-th of [`RANDOM_MACS`] distinct locally administered unicast MACs (an odd
/// multiplier is a bijection of u32, so distinct `i` give distinct MACs).
fn random_mac(i: u32, salt: u8) -> [u8; 6] {
    let x = (i % RANDOM_MACS).wrapping_mul(0x9e37_79b1).to_be_bytes();
    [0x06, salt, x[0], x[1], x[2], x[3]]
}

/// What the flooder wrote, by kind.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct FloodSent {
    random_src_unicast: u64,
    random_src_broadcast: u64,
    multicast: u64,
    arp: u64,
    /// Writes the kernel refused (the TAP's queue full).
    refused: u64,
    /// Distinct random source MACs among the frames written.
    random_sources: u64,
    /// CPU seconds the writer thread used (it shares the machine with the measurement).
    cpu_seconds: f64,
}

impl FloodSent {
    fn total(&self) -> u64 {
        self.random_src_unicast + self.random_src_broadcast + self.multicast + self.arp
    }
}

/// Frame `n` of the flood into `buf`; which kind it is.
fn flood_frame(n: u64, buf: &mut [u8; FRAME_LEN]) -> usize {
    let own = MacAddr::from_ipv4(ADDR_F).0;
    buf.fill(0);
    let kind = (n % 6) as usize;
    // Random sources advance on the frames that carry them: 1,000,000 distinct ones
    // after 1.5 million frames.
    let r = ((n / 6) * 4 + (n % 6).min(3)) as u32;
    match kind {
        0..=2 => {
            buf[..6].copy_from_slice(&random_mac(r.wrapping_add(7_777), 0xdd));
            buf[6..12].copy_from_slice(&random_mac(r, 0x5e));
        }
        3 => {
            buf[..6].fill(0xff);
            buf[6..12].copy_from_slice(&random_mac(r, 0x5e));
        }
        4 => {
            buf[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, (n & 0x7f) as u8]);
            buf[6..12].copy_from_slice(&own);
        }
        _ => {
            // ARP who-has 10.200.1.x tell 10.200.1.3, broadcast.
            buf[..6].fill(0xff);
            buf[6..12].copy_from_slice(&own);
            buf[12..14].copy_from_slice(&[0x08, 0x06]);
            buf[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            buf[22..28].copy_from_slice(&own);
            buf[28..32].copy_from_slice(&ADDR_F.octets());
            buf[38..42].copy_from_slice(&[10, 200, 1, 10 + (n % 240) as u8]);
            return kind;
        }
    }
    buf[12..14].copy_from_slice(&FLOOD_ETHERTYPE.to_be_bytes());
    buf[14..26].copy_from_slice(b"tapnet-flood");
    kind
}

/// Writes the flood into `fd` until `stop`, [`FLOOD_BUDGET`] frames or `limit`, paced at
/// [`FLOOD_PPS`], 64 frames per `sendmmsg(2)`: the writer's own CPU cost is what it
/// takes from the measurement on a machine with few CPUs, so it is kept low.
fn flood(fd: &OwnedFd, stop: &AtomicBool, limit: Duration) -> FloodSent {
    const BATCH: usize = 64;
    let mut sent = FloodSent::default();
    let mut bufs = [[0u8; FRAME_LEN]; BATCH];
    let mut kinds = [0usize; BATCH];
    let t0 = Instant::now();
    let mut n = 0u64;
    while n < FLOOD_BUDGET && !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
        // Pace per batch.
        let due = Duration::from_secs_f64(n as f64 / FLOOD_PPS as f64);
        if let Some(ahead) = due.checked_sub(t0.elapsed()) {
            thread::sleep(ahead);
        }
        for (i, b) in bufs.iter_mut().enumerate() {
            kinds[i] = flood_frame(n + i as u64, b);
        }
        n += BATCH as u64;
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: FRAME_LEN,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zero is a valid value of each field.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at one iovec of a live buffer
        // of FRAME_LEN bytes; `fd` is an open socket.
        let r = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        let done = usize::try_from(r).unwrap_or(0);
        sent.refused += (BATCH - done) as u64;
        for &kind in &kinds[..done] {
            if kind <= 3 {
                sent.random_sources = (sent.random_sources + 1).min(u64::from(RANDOM_MACS));
            }
            match kind {
                0..=2 => sent.random_src_unicast += 1,
                3 => sent.random_src_broadcast += 1,
                4 => sent.multicast += 1,
                _ => sent.arp += 1,
            }
        }
    }
    sent.cpu_seconds = thread_cpu_seconds();
    sent
}

/// User and system CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    sys::round(s(ru.ru_utime) + s(ru.ru_stime), 2)
}

/// What network B's sandbox received.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Received {
    /// Every frame its interface received.
    frames: u64,
    /// Those that are the flood's (its source MACs, ethertype or ARP sender).
    flood: u64,
}

fn is_flood(f: &[u8]) -> bool {
    if f.len() < 14 {
        return false;
    }
    let own = MacAddr::from_ipv4(ADDR_F).0;
    f[6] == 0x06
        || f[6..12] == own
        || f[12..14] == FLOOD_ETHERTYPE.to_be_bytes()
        || (f[12..14] == [0x08, 0x06] && f.get(28..32) == Some(&ADDR_F.octets()[..]))
}

/// Counts the frames `fd` receives (not its own) until `stop`.
fn count(fd: &OwnedFd, stop: &AtomicBool) -> Received {
    let mut got = Received::default();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; 50 ms bounds the wait.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `sll` are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                break;
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            got.frames += 1;
            if is_flood(&buf[..n as usize]) {
                got.flood += 1;
            }
        }
    }
    got
}

/// Every switch and domain counter of the engine, and every counter of the flooder's
/// port, by name (`switch.x`, `domainN.x`, `flood_port.x`), whatever counters the
/// engine has.
fn switch_counters(engine: &Engine, flood_port: PortId) -> BTreeMap<String, u64> {
    let s = engine.stats();
    let mut m: BTreeMap<String, u64> = s
        .switch
        .pairs()
        .into_iter()
        .map(|(k, v)| (format!("switch.{k}"), v))
        .collect();
    for (d, c) in &s.domains {
        m.extend(
            c.pairs()
                .into_iter()
                .map(|(k, v)| (format!("domain{}.{k}", d.0), v)),
        );
    }
    for p in s.ports.iter().filter(|p| p.id == flood_port) {
        m.extend(
            p.stats
                .pairs()
                .into_iter()
                .map(|(k, v)| (format!("flood_port.{k}"), v)),
        );
    }
    m
}

/// Frames the engine read from `port`.
fn port_rx(engine: &Engine, port: PortId) -> u64 {
    engine
        .stats()
        .ports
        .iter()
        .find(|p| p.id == port)
        .map_or(0, |p| p.stats.rx_packets)
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    let secs = opts.seconds.unwrap_or(5.0).round().clamp(1.0, 10.0) as u64;
    eprintln!(
        "flood: setting up networks A (3 sandboxes) and B (1), mapping {}",
        opts.mapping
    );
    let topo = Topo::create(opts)?;
    let cpus = opts.app_cpus()?;
    let _server = server(&iperf, &topo, &cpus)?;
    eprintln!("flood: iperf3 TCP on network A alone, {secs} s");
    let alone = client(&iperf, &topo, 1, secs, &cpus)?;
    // The same flooder writing into a TAP of its own namespace that no engine reads: the
    // writer's kernel path is the one of the flood into tapnet (packet socket, the TAP's
    // transmit, a full queue that drops), so the machine carries the same CPU cost, but
    // no frame reaches tapnet. On a machine with few cores the writer competes with
    // iperf3 and the engine for them; this baseline separates that cost from what
    // handling the flood costs the datapath.
    let detached = topo
        .f
        .run(|| {
            Tap::create(&TapConfig {
                name: "eth1".into(),
                ..TapConfig::default()
            })
        })
        .context("the flooder's detached TAP")??;
    configure(&topo.f, "eth1", ADDR_DETACHED, Some(TAP_TXQUEUELEN))?;
    let off_writer = packet_socket_on(&topo.f, c"eth1", 0)
        .context("the flooder's packet socket on its detached TAP")?;
    eprintln!(
        "flood: iperf3 TCP on network A while 10.200.1.3 floods a TAP no engine reads, {secs} s"
    );
    let off_stop = AtomicBool::new(false);
    let (cpu_matched, off_sent) = thread::scope(|s| {
        let flooder = s.spawn(|| flood(&off_writer, &off_stop, Duration::from_secs(secs + 2)));
        let r = client(&iperf, &topo, 1, secs, &cpus);
        off_stop.store(true, Ordering::Relaxed);
        (r, flooder.join().unwrap_or_default())
    });
    let cpu_matched = cpu_matched?;
    drop(off_writer);
    drop(detached);

    let writer = packet_socket(&topo.f, 0).context("the flooder's packet socket")?;
    let listener =
        packet_socket(&topo.c, libc::ETH_P_ALL as u16).context("network B's packet socket")?;
    // The same count on network A's iperf3 server: shows that the counting sees a flood
    // where there is one.
    // Filtered in the kernel to the flood's frames, so that it does not copy iperf3's
    // segments, a cost the runs without it do not have.
    let control =
        packet_socket(&topo.b, libc::ETH_P_ALL as u16).context("network A's packet socket")?;
    only_flood_frames(&control).context("the filter of network A's packet socket")?;
    let rss_before = sys::rss_mib();
    sys::reset_peak_rss();
    let counters_before = switch_counters(&topo.engine, topo.flood_port);
    let drops_before = Snapshot::take(&topo.engine);
    let rx_before = port_rx(&topo.engine, topo.flood_port);
    let stop = Arc::new(AtomicBool::new(false));
    eprintln!(
        "flood: iperf3 TCP on network A while 10.200.1.3 floods (at most {FLOOD_PPS} frames/s), {secs} s"
    );
    let (under, sent, received, on_a) = thread::scope(|s| {
        let counter = s.spawn(|| count(&listener, &stop));
        let control = s.spawn(|| count(&control, &stop));
        let flooder = s.spawn(|| flood(&writer, &stop, Duration::from_secs(secs + 2)));
        let under = client(&iperf, &topo, 1, secs, &cpus);
        stop.store(true, Ordering::Relaxed);
        let sent = flooder.join().unwrap_or_default();
        let received = counter.join().unwrap_or_default();
        let on_a = control.join().unwrap_or_default();
        (under, sent, received, on_a)
    });
    let under = under?;
    // Let the engine drain what the TAP still holds before reading its counters.
    thread::sleep(Duration::from_millis(200));
    let rss_after = sys::rss_mib();
    let peak = sys::peak_rss_mib();
    let read = port_rx(&topo.engine, topo.flood_port).saturating_sub(rx_before);
    let moved: BTreeMap<String, u64> = switch_counters(&topo.engine, topo.flood_port)
        .into_iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(counters_before.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let drops = Snapshot::take(&topo.engine).since(&drops_before);
    let rss = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1} MiB"));
    eprintln!(
        "flood: {} frames written ({} random source MACs, {} refused by the TAP, {} CPU s), {} read by the engine; network A's server received {} of the flood; network B received {} frames, {} of the flood; RSS {} before, {} after; switch counters {:?}",
        sent.total(),
        sent.random_sources,
        sent.refused,
        sent.cpu_seconds,
        read,
        on_a.flood,
        received.frames,
        received.flood,
        rss(rss_before),
        rss(rss_after),
        moved
    );
    let m = Measurement::new(
        SCENARIO,
        "TCP 1 stream, same network flooded",
        "Gbit/s",
        Better::Higher,
        under.gbit,
        "same network, no flood",
        alone.gbit,
        rep.machine(),
    )
    .rss(peak)
    .target(
        ">= 0.9x without flood, 0 flood frames on network B",
        under.gbit >= 0.9 * alone.gbit && received.flood == 0,
    )
    .note(format!(
        "flood {} frames ({} read by the engine), {} reached network B; RSS {} -> {}",
        sent.total(),
        read,
        received.flood,
        rss(rss_before),
        rss(rss_after)
    ))
    .note(drops.drops_note())
    .detail("flood_sent", sent)
    .detail("flood_frames_read_by_engine", read)
    .detail("network_b_received", received)
    .detail("network_a_server_received", on_a)
    .detail("rss_before_mib", rss_before.map(|v| sys::round(v, 1)))
    .detail("rss_after_mib", rss_after.map(|v| sys::round(v, 1)))
    .detail("switch_counters", &moved)
    .detail("drops", drops.drops())
    .detail("flood_pps_max", FLOOD_PPS)
    .detail("random_source_macs", RANDOM_MACS)
    .detail("retransmits", [alone.retransmits, under.retransmits])
    .detail("mapping", opts.mapping.clone())
    .detail("seconds", secs);
    rep.push(m);
    let m = Measurement::new(
        SCENARIO,
        "TCP 1 stream, same network flooded, vs the flooder's CPU load alone",
        "Gbit/s",
        Better::Higher,
        under.gbit,
        "flood into a TAP no engine reads",
        cpu_matched.gbit,
        rep.machine(),
    )
    .target(
        ">= 0.9x with the same flooder writing elsewhere",
        under.gbit >= 0.9 * cpu_matched.gbit,
    )
    .note(format!(
        "detached-TAP flood {} frames, {:.2} CPU s; into tapnet {} frames, {:.2} CPU s",
        off_sent.total(),
        off_sent.cpu_seconds,
        sent.total(),
        sent.cpu_seconds
    ))
    .detail("detached_tap_flood_sent", off_sent)
    .detail("retransmits", [cpu_matched.retransmits, under.retransmits])
    .detail("seconds", secs);
    rep.push(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_frames_are_recognised_and_sources_distinct() {
        let mut buf = [0u8; FRAME_LEN];
        for n in 0..600 {
            flood_frame(n, &mut buf);
            assert!(is_flood(&buf), "frame {n}");
            assert_eq!(buf[6] & 1, 0, "unicast source");
        }
        let legit = [0u8; 60];
        assert!(!is_flood(&legit));
        let macs: std::collections::HashSet<[u8; 6]> =
            (0..RANDOM_MACS).map(|i| random_mac(i, 0x5e)).collect();
        assert_eq!(macs.len(), RANDOM_MACS as usize);
    }
}
