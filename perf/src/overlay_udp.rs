//! `overlay-udp64`: packet rate of 64-byte UDP payloads from sandbox A to sandbox B across
//! the underlay (see `overlay_topo`), with tap-udp64's sender and sink. First the
//! kernel's VXLAN unpaced: what it delivers is the offered rate for tapnet's two
//! engines (is tapnet lossless where the kernel is?); then tapnet unpaced.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::overlay_topo::{
    KernelVxlan, Placement, TapnetOverlay, engine_drops, overlay_delta, overlay_drops_note,
    with_engine_details,
};
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent};
use crate::tap_udp::{measure, with_loss};

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
        m = with_loss(m, &t, &k, offered)
            .detail("worker_cpu_pct", &cpu)
            .detail("udp_offloads", tapnet.udp_offloads())
            .detail("mapping", opts.mapping.clone())
            .detail("engine_cpus", [&place.engine1.cpus, &place.engine2.cpus])
            .detail("app_cpus", &cpus)
            .detail("seconds", sys::round(t.elapsed.as_secs_f64(), 3));
        rep.push(with_engine_details(m, (&o1, &o2), (&d1, &d2)));
    }
    Ok(())
}
