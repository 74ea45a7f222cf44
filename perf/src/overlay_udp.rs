//! `overlay-udp64`: packet rate of 64-byte UDP payloads from sandbox A to sandbox B across
//! the underlay (see `overlay_topo`), with tap-udp64's sender and sink. First the
//! kernel's VXLAN unpaced: what it delivers is the offered rate for tapnet's two
//! engines (is tapnet lossless where the kernel is?); then tapnet unpaced.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::overlay_topo::{
    KernelVxlan, Placement, TapnetOverlay, engine_drops, overlay_delta, overlay_drops,
    overlay_drops_note,
};
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent};
use crate::tap_udp::measure;

const SCENARIO: &str = "overlay-udp64";

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let dur = Duration::from_secs_f64(opts.seconds.unwrap_or(5.0));
    let place = Placement::new(opts)?;
    let cpus = place.app_cpus(opts);
    eprintln!(
        "{SCENARIO}: setting up namespaces (kernel VXLAN and two tapnet engines, mapping {})",
        opts.mapping
    );
    let kernel = KernelVxlan::create("oudp-")?;
    let tapnet = TapnetOverlay::create("oudp-", &place)?;

    eprintln!(
        "{SCENARIO}: kernel VXLAN, unpaced, {:.1} s",
        dur.as_secs_f64()
    );
    let k = measure(&kernel, 1, dur, None, &cpus)?;
    let rate = k.rx_pps();
    let kdesc = format!(
        "kernel-vxlan sent {:.0} kpps, rx {:.0} kpps, loss {:.2}%",
        k.sent_pps() / 1e3,
        k.rx_pps() / 1e3,
        k.loss_pct()
    );
    let cases = [
        (
            "64B payload, offered at the kernel VXLAN's rx rate",
            Some(rate),
            2u32,
        ),
        ("64B payload, unpaced", None, 3),
    ];
    for (case, offered, run) in cases {
        sys::check_interrupt()?;
        match offered {
            Some(r) => eprintln!("{SCENARIO}: tapnet, {case} ({:.0} kpps)", r / 1e3),
            None => eprintln!("{SCENARIO}: tapnet, {case}"),
        }
        sys::reset_peak_rss();
        let (e1, e2) = (&tapnet.h1, &tapnet.h2);
        let before = (Snapshot::take(&e1.engine), Snapshot::take(&e2.engine));
        let ob = (e1.overlay.stats(), e2.overlay.stats());
        let ticks = tapnet.worker_ticks();
        let t0 = Instant::now();
        let t = measure(&tapnet, run, dur, offered, &cpus)?;
        let cpu = cpu_percent(&ticks, &tapnet.worker_ticks(), t0.elapsed());
        let d1 = Snapshot::take(&e1.engine).since(&before.0);
        let d2 = Snapshot::take(&e2.engine).since(&before.1);
        let o1 = overlay_delta(&e1.overlay.stats(), &ob.0);
        let o2 = overlay_delta(&e2.overlay.stats(), &ob.1);
        let mut m = Measurement::new(
            SCENARIO,
            case,
            "kpps rx",
            Better::Higher,
            t.rx_pps() / 1e3,
            "kernel-vxlan",
            k.rx_pps() / 1e3,
            rep.machine(),
        )
        .rss(sys::peak_rss_mib())
        .note(format!(
            "tapnet sent {:.0} kpps, loss {:.2}%",
            t.sent_pps() / 1e3,
            t.loss_pct()
        ))
        .note(kdesc.clone())
        .note(engine_drops(&d1.drops_note(), &d2.drops_note()))
        .note(overlay_drops_note(&o1, &o2));
        if t.kernel.a_tx_dropped + t.kernel.b_rx_dropped + t.kernel.b_udp_rcvbuf_errors > 0 {
            m = m.note(format!(
                "kernel drops: TAP A tx {}, TAP B rx {}, B socket {}",
                t.kernel.a_tx_dropped, t.kernel.b_rx_dropped, t.kernel.b_udp_rcvbuf_errors
            ));
        }
        if offered.is_some() {
            m = m.target("loss < 1%", t.loss_pct() < 1.0);
        }
        m = m
            .detail("tapnet_sent_kpps", sys::round(t.sent_pps() / 1e3, 1))
            .detail("tapnet_loss_pct", sys::round(t.loss_pct(), 3))
            .detail("baseline_sent_kpps", sys::round(k.sent_pps() / 1e3, 1))
            .detail("baseline_loss_pct", sys::round(k.loss_pct(), 3))
            .detail("offered_kpps", offered.map(|r| sys::round(r / 1e3, 1)))
            .detail(
                "tapnet_kernel_drops",
                serde_json::json!({"tap_a_tx_dropped": t.kernel.a_tx_dropped,
                    "tap_b_rx_dropped": t.kernel.b_rx_dropped,
                    "b_udp_rcvbuf_errors": t.kernel.b_udp_rcvbuf_errors}),
            )
            .detail(
                "baseline_kernel_drops",
                serde_json::json!({"veth_a_tx_dropped": k.kernel.a_tx_dropped,
                    "veth_b_rx_dropped": k.kernel.b_rx_dropped,
                    "b_udp_rcvbuf_errors": k.kernel.b_udp_rcvbuf_errors}),
            )
            .detail("worker_cpu_pct", &cpu)
            .detail("overlay_e1", &o1)
            .detail("overlay_e2", &o2)
            .detail("overlay_drops", [overlay_drops(&o1), overlay_drops(&o2)])
            .detail("stages_e1", d1.stages())
            .detail("stages_e2", d2.stages())
            .detail("drops_e1", d1.drops())
            .detail("drops_e2", d2.drops())
            .detail("udp_offloads", tapnet.udp_offloads())
            .detail("mapping", opts.mapping.clone())
            .detail("engine_cpus", [&place.engine1.cpus, &place.engine2.cpus])
            .detail("app_cpus", &cpus)
            .detail("seconds", sys::round(t.elapsed.as_secs_f64(), 3));
        rep.push(m);
    }
    Ok(())
}
