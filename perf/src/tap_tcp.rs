//! `tap-tcp`: iperf3 TCP from namespace A to B, one and two streams, through tapnet's
//! TAPs and through veth + Linux bridge, in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::proc::{Proc, ensure_iperf3, spawn_in, wait_listening};
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, MachineTicks, cpu_percent, thread_cpu_ticks};
use crate::topo::{Datapath, KernelBridge, TAP_TXQUEUELEN, TapnetPair};

const SCENARIO: &str = "tap-tcp";
const PORT: u16 = 5201;

/// What an iperf3 TCP client reports.
#[derive(Debug)]
pub(crate) struct Tcp {
    pub(crate) gbit: f64,
    pub(crate) retransmits: u64,
    pub(crate) sender_cpu: f64,
    pub(crate) receiver_cpu: f64,
}

impl Tcp {
    /// CPU-seconds the machine spent per GB (10^9 bytes) moved, given `busy` CPU-seconds
    /// over the `secs`-second run: what a datapath costs in CPU, whoever runs the code
    /// (iperf3's copies, the kernel's stack, the engine), and so what two CPUs can carry.
    pub(crate) fn cpu_s_per_gb(&self, busy: f64, secs: u64) -> f64 {
        let gb = self.gbit / 8.0 * secs as f64;
        if gb > 0.0 {
            sys::round(busy / gb, 3)
        } else {
            0.0
        }
    }
}

pub(crate) fn server(iperf: &Path, dp: &dyn Datapath, cpus: &[usize]) -> Result<Proc> {
    let args = [
        "-s",
        "-B",
        &dp.addr_b().to_string(),
        "-p",
        &PORT.to_string(),
    ]
    .map(String::from);
    let mut p = spawn_in(dp.b(), iperf, &args, false, cpus)?;
    wait_listening(&mut p, PORT, Duration::from_secs(5))?;
    Ok(p)
}

pub(crate) fn client(
    iperf: &Path,
    dp: &dyn Datapath,
    streams: u32,
    secs: u64,
    cpus: &[usize],
) -> Result<Tcp> {
    let args: Vec<String> = [
        "-c",
        &dp.addr_b().to_string(),
        "-p",
        &PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-i",
        "0",
        "-J",
        "-P",
        &streams.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let p = spawn_in(dp.a(), iperf, &args, true, cpus)?;
    let (status, out, err) = p.wait_output(Duration::from_secs(secs + 20))?;
    parse_iperf(&out).with_context(|| {
        format!(
            "iperf3 client over {} ({status}): {}",
            dp.label(),
            err.trim()
        )
    })
}

/// Throughput, retransmits and CPU from the JSON of an iperf3 TCP client.
pub(crate) fn parse_iperf(out: &str) -> Result<Tcp> {
    let v: Value = serde_json::from_str(out).context("iperf3 printed no JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"].as_f64();
    let cpu = |k: &str| end["cpu_utilization_percent"][k].as_f64().unwrap_or(0.0);
    Ok(Tcp {
        gbit: bps.context("iperf3 JSON lacks end.sum_received.bits_per_second")? / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        sender_cpu: cpu("host_total"),
        receiver_cpu: cpu("remote_total"),
    })
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    eprintln!(
        "tap-tcp: setting up namespaces (kernel bridge and tapnet, mapping {})",
        opts.mapping
    );
    let kernel = KernelBridge::create("tcp-")?;
    sys::reset_peak_rss();
    let tapnet = TapnetPair::create("tcp-", opts.engine_config()?)?;
    let offloads = tapnet.offloads();
    compare(
        opts,
        rep,
        SCENARIO,
        &iperf,
        &kernel,
        &tapnet,
        &|m: Measurement| {
            m.detail("tap_offloads", &offloads)
                .detail("tap_txqueuelen", TAP_TXQUEUELEN)
        },
    )
}

/// iperf3 TCP from A to B, one stream then two, over `kernel` then `tapnet` (an
/// engine's datapath), one measurement per stream count; `extra` adds details.
pub(crate) fn compare(
    opts: &Opts,
    rep: &mut Reporter,
    scenario: &'static str,
    iperf: &Path,
    kernel: &dyn Datapath,
    tapnet: &dyn Datapath,
    extra: &dyn Fn(Measurement) -> Measurement,
) -> Result<()> {
    let iperf_version = crate::proc::program_version(iperf);
    let secs = opts.seconds.unwrap_or(5.0).round().max(1.0) as u64;
    let cpus = opts.app_cpus()?;
    let _ks = server(iperf, kernel, &cpus)?;
    let _ts = server(iperf, tapnet, &cpus)?;
    let engine = tapnet.engine().context("tapnet datapath without engine")?;
    for streams in [1u32, 2] {
        sys::check_interrupt()?;
        eprintln!("{scenario}: {streams} stream(s), kernel bridge, {secs} s");
        let m0 = MachineTicks::now();
        let k = client(iperf, kernel, streams, secs, &cpus)?;
        let k_cpu = MachineTicks::now().since(&m0);
        eprintln!(
            "{scenario}: {streams} stream(s), {}, {secs} s",
            tapnet.label()
        );
        sys::reset_peak_rss();
        let before = Snapshot::take(engine);
        let ticks = thread_cpu_ticks("tapnet-w");
        let t0 = Instant::now();
        let m0 = MachineTicks::now();
        let t = client(iperf, tapnet, streams, secs, &cpus)?;
        let t_cpu = MachineTicks::now().since(&m0);
        let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
        let d = Snapshot::take(engine).since(&before);
        let peak = sys::peak_rss_mib();
        let m = Measurement::new(
            scenario,
            format!(
                "TCP {streams} stream{} MTU 1500",
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
        .target(">= 0.5x bridge", t.gbit >= 0.5 * k.gbit)
        .note(format!(
            "retransmits {} (bridge {}); avg frame in {:.0} B",
            t.retransmits,
            k.retransmits,
            d.avg_rx_frame()
        ))
        .note(d.drops_note())
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
        .detail("tapnet_cpu_s_per_gb", t.cpu_s_per_gb(t_cpu.0, secs))
        .detail("baseline_cpu_s_per_gb", k.cpu_s_per_gb(k_cpu.0, secs))
        .detail(
            "steal_cpu_s",
            [sys::round(t_cpu.1, 2), sys::round(k_cpu.1, 2)],
        )
        .detail("avg_rx_frame_bytes", sys::round(d.avg_rx_frame(), 0))
        .detail("superframes_segmented", d.segmented())
        .detail("stages", d.stages())
        .detail("drops", d.drops())
        .detail("mapping", opts.mapping.clone())
        .detail("app_cpus", &cpus)
        .detail("iperf3", &iperf_version)
        .detail("seconds", secs);
        rep.push(extra(m));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_json() {
        let ok = r#"{"start":{},"end":{"sum_sent":{"bits_per_second":2.1e10,"retransmits":3},
            "sum_received":{"bits_per_second":2.0e10},
            "cpu_utilization_percent":{"host_total":80.5,"remote_total":40.0}}}"#;
        let t = parse_iperf(ok).unwrap();
        assert_eq!(t.gbit, 20.0);
        assert_eq!(t.retransmits, 3);
        assert_eq!((t.sender_cpu, t.receiver_cpu), (80.5, 40.0));
        let err = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        assert!(
            parse_iperf(err)
                .unwrap_err()
                .to_string()
                .contains("unable to connect")
        );
        assert!(parse_iperf("").is_err());
    }
}
