//! `overlay-tcp`: iperf3 TCP from sandbox A to sandbox B, one and two streams, across an
//! underlay: through two tapnet engines' VTEPs and through the kernel's VXLAN, in the
//! same run (see `overlay_topo`). Also the underlay syscalls per 64 KiB each way, from
//! the VTEPs' counters: engine 1's `sendmmsg` calls per 64 KiB of UDP payload it sent,
//! engine 2's `recvmmsg` calls per 64 KiB it received.

use std::time::Instant;

use anyhow::Result;

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::overlay_topo::{
    INNER_MTU, KernelVxlan, Placement, TapnetOverlay, engine_drops, overlay_delta,
    overlay_drops_note, per_64k, with_engine_details,
};
use crate::proc::ensure_iperf3;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent};
use crate::tap_tcp::{client, server};
use crate::topo::{Datapath, TAP_TXQUEUELEN};

const SCENARIO: &str = "overlay-tcp";
/// Most underlay syscalls per 64 KiB, each way.
const SYSCALL_TARGET: f64 = 2.0;

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    let iperf_version = crate::proc::program_version(&iperf);
    let secs = opts.seconds.unwrap_or(5.0).round().max(1.0) as u64;
    let place = Placement::new(opts)?;
    let cpus = place.app_cpus(opts);
    eprintln!(
        "{SCENARIO}: setting up namespaces (kernel VXLAN and two tapnet engines, mapping {}, engine CPUs {:?} and {:?})",
        opts.mapping, place.engine1.cpus, place.engine2.cpus
    );
    let kernel = KernelVxlan::create("otcp-")?;
    sys::reset_peak_rss();
    let tapnet = TapnetOverlay::create("otcp-", &place)?;
    let _ks = server(&iperf, &kernel, &cpus)?;
    let _ts = server(&iperf, &tapnet, &cpus)?;
    for streams in [1u32, 2] {
        sys::check_interrupt()?;
        eprintln!("{SCENARIO}: {streams} stream(s), kernel VXLAN, {secs} s");
        let k = client(&iperf, &kernel, streams, secs, &cpus)?;
        eprintln!("{SCENARIO}: {streams} stream(s), tapnet, {secs} s");
        sys::reset_peak_rss();
        let (e1, e2) = (&tapnet.h1, &tapnet.h2);
        let before = (Snapshot::take(&e1.engine), Snapshot::take(&e2.engine));
        let ob = (e1.overlay.stats(), e2.overlay.stats());
        let ticks = tapnet.worker_ticks();
        let t0 = Instant::now();
        let t = client(&iperf, &tapnet, streams, secs, &cpus)?;
        let cpu = cpu_percent(&ticks, &tapnet.worker_ticks(), t0.elapsed());
        let d1 = Snapshot::take(&e1.engine).since(&before.0);
        let d2 = Snapshot::take(&e2.engine).since(&before.1);
        let (s1, s2) = (e1.overlay.stats(), e2.overlay.stats());
        let (o1, o2) = (overlay_delta(&s1, &ob.0), overlay_delta(&s2, &ob.1));
        let peak = sys::peak_rss_mib();
        let tx = per_64k(
            s1.tx_syscalls - ob.0.tx_syscalls,
            s1.tx_bytes - ob.0.tx_bytes,
        );
        let rx = per_64k(
            s2.rx_syscalls - ob.1.rx_syscalls,
            s2.rx_bytes - ob.1.rx_bytes,
        );
        // The ACKs' way back, for the record.
        let ack_tx = per_64k(
            s2.tx_syscalls - ob.1.tx_syscalls,
            s2.tx_bytes - ob.1.tx_bytes,
        );
        let ack_rx = per_64k(
            s1.rx_syscalls - ob.0.rx_syscalls,
            s1.rx_bytes - ob.0.rx_bytes,
        );
        let cpu_text = cpu
            .iter()
            .map(|(k, v)| format!("{k} {}%", v.total))
            .collect::<Vec<_>>()
            .join(", ");
        let m = Measurement::new(
            SCENARIO,
            format!(
                "TCP {streams} stream{} A→B, inner MTU {INNER_MTU}",
                if streams > 1 { "s" } else { "" }
            ),
            "Gbit/s",
            Better::Higher,
            t.gbit,
            kernel.label(),
            k.gbit,
            rep.machine(),
        )
        .rss(peak)
        .target(
            "underlay syscalls <= 2/64KiB each way",
            tx <= SYSCALL_TARGET && rx <= SYSCALL_TARGET,
        )
        .note(format!(
            "retransmits {} (kernel-vxlan {}); underlay syscalls per 64 KiB: sendmmsg {tx:.2}, recvmmsg {rx:.2}; worker CPU {cpu_text}",
            t.retransmits, k.retransmits
        ))
        .note(engine_drops(&d1.drops_note(), &d2.drops_note()))
        .note(overlay_drops_note(&o1, &o2))
        .detail("tapnet_retransmits", t.retransmits)
        .detail("baseline_retransmits", k.retransmits)
        .detail(
            "tapnet_iperf_cpu_pct",
            [sys::round(t.sender_cpu, 1), sys::round(t.receiver_cpu, 1)],
        )
        .detail(
            "baseline_iperf_cpu_pct",
            [sys::round(k.sender_cpu, 1), sys::round(k.receiver_cpu, 1)],
        )
        .detail("worker_cpu_pct", &cpu)
        .detail("tx_syscalls_per_64k", sys::round(tx, 3))
        .detail("rx_syscalls_per_64k", sys::round(rx, 3))
        .detail("ack_tx_syscalls_per_64k", sys::round(ack_tx, 3))
        .detail("ack_rx_syscalls_per_64k", sys::round(ack_rx, 3))
        .detail("superframes_segmented_e1", d1.segmented())
        .detail("avg_rx_frame_bytes_e1", sys::round(d1.avg_rx_frame(), 0))
        .detail("tap_offloads", tapnet.offloads())
        .detail("udp_offloads", tapnet.udp_offloads())
        .detail("tap_txqueuelen", TAP_TXQUEUELEN)
        .detail("mapping", opts.mapping.clone())
        .detail("engine_cpus", [&place.engine1.cpus, &place.engine2.cpus])
        .detail("app_cpus", &cpus)
        .detail("kernel_baseline", "vxlan + veth in a Linux bridge per host")
        .detail("iperf3", &iperf_version)
        .detail("seconds", secs);
        rep.push(with_engine_details(m, (&o1, &o2), (&d1, &d2)));
    }
    Ok(())
}
