//! `overlay-rss`: memory of an idle engine (pipeline, two workers, as idle-rss) serving
//! 64 overlay networks of 16 remote endpoints each, against the same engine with the
//! same 64 bridge domains before its VTEP started. The endpoints sit on 16 peer VTEPs
//! (endpoint *j* of every network on peer *j*: a cluster of 17 hosts); the underlay
//! socket is bound to 127.0.0.1 in a namespace of its own, and nothing is sent. Also the
//! CPU the idle engine burns.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tapnet_engine::overlay::{Entry, Overlay, OverlayConfig, Vni};
use tapnet_engine::{DomainConfig, Engine, EngineConfig, MacAddr, WorkerMapping};

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent, thread_cpu_ticks};
use crate::topo::create_ns;

const SCENARIO: &str = "overlay-rss";
const NETWORKS: u32 = 64;
const ENDPOINTS: u32 = 16;
const SETTLE: Duration = Duration::from_secs(1);
/// Send sockets of the VTEP, as `OverlayConfig::new` has it.
const SOURCE_SOCKETS: usize = 4;

/// The peer VTEP of endpoint `j`.
fn peer(j: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 201, 10 + j as u8)
}

/// Endpoint `j` of network `i`: a MAC and an address unique in the run.
fn endpoint(i: u32, j: u32) -> Entry {
    Entry {
        mac: MacAddr([2, 0x42, 10, i as u8, 1, j as u8 + 2]),
        ip: Some(Ipv4Addr::new(10, i as u8, 1, j as u8 + 2)),
        vtep: peer(j),
    }
}

/// Current RSS after a settling second, and the workers' CPU over it.
fn settle(engine: &Engine) -> Result<(f64, String, serde_json::Value)> {
    let s0 = Snapshot::take(engine);
    let ticks = thread_cpu_ticks("tapnet-w");
    let t0 = Instant::now();
    sys::sleep(SETTLE)?;
    let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
    let d = Snapshot::take(engine).since(&s0);
    let rss = sys::rss_mib().context("cannot read VmRSS")?;
    let text = cpu
        .iter()
        .map(|(k, v)| format!("{k} {}%", v.total))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        rss,
        text,
        serde_json::json!({"worker_cpu_pct": cpu, "frames": d.stages()}),
    ))
}

pub(crate) fn run(_opts: &Opts, rep: &mut Reporter) -> Result<()> {
    eprintln!(
        "{SCENARIO}: engine (pipeline, 2 workers) with {NETWORKS} overlay networks of {ENDPOINTS} remote endpoints"
    );
    sys::reset_peak_rss();
    let process = sys::rss_mib().context("cannot read VmRSS")?;
    let ns = create_ns("orss")?;
    let engine = Engine::start(EngineConfig {
        mapping: WorkerMapping::pipeline(),
        pin: true,
        ..Default::default()
    })?;
    let domains = (0..NETWORKS)
        .map(|_| engine.add_domain(DomainConfig::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let (base, base_cpu, base_idle) = settle(&engine)?;

    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, tapnet_engine::overlay::VXLAN_PORT);
    let (rx, tx) = ns.run(|| -> std::io::Result<_> {
        let rx = UdpSocket::bind(local)?;
        let tx = (0..SOURCE_SOCKETS)
            .map(|_| UdpSocket::bind(SocketAddrV4::new(*local.ip(), 0)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((rx, tx))
    })??;
    let mut cfg = OverlayConfig::new(local);
    cfg.source_sockets = SOURCE_SOCKETS;
    cfg.mtu = Some(1450);
    let overlay = Overlay::with_sockets(&engine, cfg, rx, tx)?;
    for (i, &dom) in (1..=NETWORKS).zip(&domains) {
        let vni = Vni::new(1000 + i).context("VNI out of range")?;
        overlay.add_network(&engine, vni, dom)?;
        for j in 0..ENDPOINTS {
            overlay.add_peer(vni, peer(j))?;
            overlay.add_entry(&engine, vni, endpoint(i, j))?;
        }
    }
    let (rss, cpu, idle) = settle(&engine)?;
    let peak = sys::peak_rss_mib();
    let stats = overlay.stats();
    let free = engine.stats().pool_free;
    engine.shutdown();
    drop(overlay);
    drop(engine);
    drop(ns);
    let m = Measurement::new(
        SCENARIO,
        format!("{NETWORKS} overlay networks × {ENDPOINTS} remote endpoints, idle, pipeline 2w"),
        "MiB RSS",
        Better::Lower,
        rss,
        format!("same engine, {NETWORKS} domains, no overlay"),
        base,
        rep.machine(),
    )
    .rss(peak)
    .note(format!(
        "the overlay adds {:.1} MiB (the engine {:.1} over the process's {process:.1}); idle worker CPU {cpu} (without overlay {base_cpu})",
        rss - base,
        base - process,
    ))
    .detail("overlay_added_mib", sys::round(rss - base, 1))
    .detail("engine_added_mib", sys::round(base - process, 1))
    .detail("process_mib", sys::round(process, 1))
    .detail("idle", idle)
    .detail("idle_without_overlay", base_idle)
    .detail("overlay_rx_datagrams", stats.rx_datagrams)
    .detail("overlay_tx_datagrams", stats.tx_datagrams)
    .detail("pool_free", [free.small, free.large]);
    rep.push(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_distinct() {
        let mut macs = std::collections::HashSet::new();
        for i in 1..=NETWORKS {
            for j in 0..ENDPOINTS {
                assert!(macs.insert(endpoint(i, j).mac.0));
            }
        }
        assert_eq!(peer(ENDPOINTS - 1), Ipv4Addr::new(192, 168, 201, 25));
    }
}
