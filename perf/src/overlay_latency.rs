//! `overlay-latency`: UDP request/response round trips, one outstanding, from sandbox A
//! to an echo in sandbox B across the underlay (see `overlay_topo`): through two tapnet
//! engines (default busy-poll) and through the kernel's VXLAN; tap-latency's ping and
//! echo threads and HdrHistogram.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::counters::Snapshot;
use crate::latency::measure;
use crate::opts::Opts;
use crate::overlay_topo::{
    KernelVxlan, Placement, TapnetOverlay, engine_drops, overlay_delta, overlay_drops_note,
};
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent};

const SCENARIO: &str = "overlay-latency";
const PAYLOAD: usize = 64;

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let count = opts.round_trips;
    let budget = Duration::from_secs(15);
    let place = Placement::new(opts)?;
    // As in tap-latency, ping and echo run on the CPUs the engines' workers leave free
    // (on both datapaths); if there are none, the scheduler places them.
    let cpus = place.free.clone();
    eprintln!("{SCENARIO}: kernel VXLAN, {count} round trips");
    let k = {
        let kernel = KernelVxlan::create("olat-")?;
        measure(&kernel, count, budget, &cpus)?
    };
    sys::check_interrupt()?;
    eprintln!(
        "{SCENARIO}: tapnet (busy_poll {}µs), {count} round trips",
        place.engine1.busy_poll.as_micros()
    );
    sys::reset_peak_rss();
    let tapnet = TapnetOverlay::create("olat-", &place)?;
    let (e1, e2) = (&tapnet.h1, &tapnet.h2);
    let before = (Snapshot::take(&e1.engine), Snapshot::take(&e2.engine));
    let ob = (e1.overlay.stats(), e2.overlay.stats());
    let ticks = tapnet.worker_ticks();
    let t0 = Instant::now();
    let t = measure(&tapnet, count, budget, &cpus)?;
    let cpu = cpu_percent(&ticks, &tapnet.worker_ticks(), t0.elapsed());
    let d1 = Snapshot::take(&e1.engine).since(&before.0);
    let d2 = Snapshot::take(&e2.engine).since(&before.1);
    let o1 = overlay_delta(&e1.overlay.stats(), &ob.0);
    let o2 = overlay_delta(&e2.overlay.stats(), &ob.1);
    let peak = sys::peak_rss_mib();
    drop(tapnet);
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9"), (1.0, "max")] {
        let (tv, kv) = if q < 1.0 {
            (t.us(q), k.us(q))
        } else {
            (t.hist.max() as f64 / 1e3, k.hist.max() as f64 / 1e3)
        };
        let mut m = Measurement::new(
            SCENARIO,
            format!("UDP {PAYLOAD}B RTT {name} over VXLAN"),
            "µs",
            Better::Lower,
            tv,
            "kernel-vxlan",
            kv,
            rep.machine(),
        )
        .rss(peak);
        if name == "p50" {
            m = m
                .note(format!(
                    "{} round trips ({} lost), kernel-vxlan {} ({} lost)",
                    t.hist.len(),
                    t.lost,
                    k.hist.len(),
                    k.lost
                ))
                .note(engine_drops(&d1.drops_note(), &d2.drops_note()))
                .note(overlay_drops_note(&o1, &o2))
                .detail("tapnet_round_trips", t.hist.len())
                .detail("tapnet_lost", t.lost)
                .detail("tapnet_mean_us", sys::round(t.hist.mean() / 1e3, 2))
                .detail("tapnet_seconds", sys::round(t.elapsed.as_secs_f64(), 3))
                .detail("baseline_round_trips", k.hist.len())
                .detail("baseline_lost", k.lost)
                .detail("baseline_mean_us", sys::round(k.hist.mean() / 1e3, 2))
                .detail("worker_cpu_pct", &cpu)
                .detail("overlay_e1", &o1)
                .detail("overlay_e2", &o2)
                .detail("stages_e1", d1.stages())
                .detail("stages_e2", d2.stages())
                .detail("busy_poll_us", place.engine1.busy_poll.as_micros() as u64)
                .detail("mapping", opts.mapping.clone())
                .detail("engine_cpus", [&place.engine1.cpus, &place.engine2.cpus])
                .detail("app_cpus", &cpus);
        }
        rep.push(m);
    }
    Ok(())
}
