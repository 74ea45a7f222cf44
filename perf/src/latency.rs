//! `tap-latency`: UDP request/response round trips, one outstanding, between a client
//! thread with a socket in A and an echo thread with a socket in B; an HdrHistogram of
//! the round-trip times through tapnet and through the kernel bridge.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use tapnet_engine::EngineConfig;

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent, interrupted, thread_cpu_ticks};
use crate::tap_udp::socket_pair;
use crate::topo::{Datapath, KernelBridge, TapnetPair};

const SCENARIO: &str = "tap-latency";
const PORT: u16 = 9100;
const PAYLOAD: usize = 64;
const WARMUP: u64 = 500;
/// Give up on a reply after this long (counted as lost).
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// Round-trip times of one measurement.
pub(crate) struct Rtt {
    pub(crate) hist: Histogram<u64>,
    pub(crate) lost: u64,
    pub(crate) elapsed: Duration,
}

impl Rtt {
    /// The round-trip time at quantile `q`, in µs.
    pub(crate) fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e3
    }
}

/// Echo every datagram back until `stop`.
pub(crate) fn echo(sock: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// `count` round trips after a warm-up, within `budget`.
pub(crate) fn ping(sock: &UdpSocket, count: u64, budget: Duration) -> Result<Rtt> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut req = [0u8; PAYLOAD];
    let mut buf = [0u8; 2048];
    let mut lost = 0u64;
    let start = Instant::now();
    let mut measured_from = None;
    for seq in 0..WARMUP + count {
        if interrupted() {
            return Err(anyhow!("interrupted"));
        }
        if start.elapsed() > budget {
            break;
        }
        if seq == WARMUP {
            measured_from = Some(Instant::now());
        }
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let t0 = Instant::now();
        sock.send(&req)?;
        let ok = loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == req[..8] => break true,
                Ok(_) => {} // a late reply to an earlier request
                Err(_) => break false,
            }
            if t0.elapsed() > REPLY_TIMEOUT {
                break false;
            }
        };
        let rtt = t0.elapsed();
        if seq < WARMUP {
            continue;
        }
        if ok {
            hist.saturating_record(rtt.as_nanos() as u64);
        } else {
            lost += 1;
        }
    }
    let elapsed = measured_from.map(|t| t.elapsed()).unwrap_or_default();
    Ok(Rtt {
        hist,
        lost,
        elapsed,
    })
}

/// `count` round trips from A to B's echo (at most `budget`), on CPUs `cpus`.
pub(crate) fn measure(
    dp: &dyn Datapath,
    count: u64,
    budget: Duration,
    cpus: &[usize],
) -> Result<Rtt> {
    let (server, client) = socket_pair(dp, PORT)?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    client.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let echoer = std::thread::Builder::new()
            .name("tnp-echo".into())
            .spawn_scoped(s, || {
                crate::sys::pin_current_thread_to(cpus);
                echo(&server, &stop)
            })
            .context("cannot start the echo thread")?;
        let r = std::thread::Builder::new()
            .name("tnp-ping".into())
            .spawn_scoped(s, || {
                crate::sys::pin_current_thread_to(cpus);
                ping(&client, count, budget)
            })
            .context("cannot start the ping thread")?
            .join()
            .map_err(|_| anyhow!("ping thread panicked"));
        stop.store(true, Ordering::Relaxed);
        let _ = echoer.join();
        r?
    })
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let count = opts.round_trips;
    let budget = Duration::from_secs(15);
    // With one request outstanding, whether a wake-up crosses CPUs decides the result
    // (on a 2-vCPU VM a cross-CPU wake-up of an idle thread costs tens of µs), and the
    // scheduler's choice differs from run to run: so ping and echo always run on the CPUs
    // the engine's workers leave free, on both datapaths.
    let cpus = opts.free_cpus()?;
    eprintln!("tap-latency: kernel bridge, {count} round trips");
    let k = {
        let kernel = KernelBridge::create("lat-")?;
        measure(&kernel, count, budget, &cpus)?
    };
    let default_poll = EngineConfig::default().busy_poll;
    // The worker on its own CPU with three busy-poll settings, then on the applications'
    // CPU (sleeping when idle, since spinning there would starve them): that placement
    // trades the cross-CPU wake-ups of the receiving application for context switches.
    let variants = [
        (Duration::ZERO, false),
        (default_poll, false),
        (Duration::from_millis(1), false),
        (Duration::ZERO, true),
    ];
    for (busy_poll, shared_cpu) in variants {
        sys::check_interrupt()?;
        let label = if shared_cpu {
            format!(
                "worker on the apps' CPU, busy_poll {}µs",
                busy_poll.as_micros()
            )
        } else {
            format!("busy_poll {}µs", busy_poll.as_micros())
        };
        eprintln!("tap-latency: tapnet ({label}), {count} round trips");
        sys::reset_peak_rss();
        let mut cfg = EngineConfig {
            busy_poll,
            ..opts.engine_config()?
        };
        if shared_cpu {
            if cpus.is_empty() {
                rep.skip(
                    SCENARIO,
                    format!("UDP {PAYLOAD}B RTT, {label}"),
                    "the applications have no CPU of their own to share".into(),
                );
                continue;
            }
            cfg.cpus = cpus.clone();
        }
        let tapnet = TapnetPair::create("lat-", cfg)?;
        let engine = tapnet.engine().context("tapnet datapath without engine")?;
        let before = Snapshot::take(engine);
        let ticks = thread_cpu_ticks("tapnet-w");
        let t0 = Instant::now();
        let t = measure(&tapnet, count, budget, &cpus)?;
        let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
        let d = Snapshot::take(engine).since(&before);
        let peak = sys::peak_rss_mib();
        drop(tapnet);
        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9"), (1.0, "max")] {
            let tv = if q < 1.0 {
                t.us(q)
            } else {
                t.hist.max() as f64 / 1e3
            };
            let kv = if q < 1.0 {
                k.us(q)
            } else {
                k.hist.max() as f64 / 1e3
            };
            let mut m = Measurement::new(
                SCENARIO,
                format!(
                    "UDP {PAYLOAD}B RTT {name}, {label}{}",
                    if busy_poll == default_poll && !shared_cpu {
                        " (default)"
                    } else {
                        ""
                    }
                ),
                "µs",
                Better::Lower,
                tv,
                "kernel-bridge",
                kv,
                rep.machine(),
            )
            .rss(peak);
            if name == "p99" {
                m = m.target("<= 2x bridge", tv <= 2.0 * kv);
            }
            if name == "p50" {
                m = m
                    .note(format!(
                        "{} round trips ({} lost), bridge {} ({} lost)",
                        t.hist.len(),
                        t.lost,
                        k.hist.len(),
                        k.lost
                    ))
                    .note(d.drops_note())
                    .detail("tapnet_round_trips", t.hist.len())
                    .detail("tapnet_lost", t.lost)
                    .detail("tapnet_mean_us", sys::round(t.hist.mean() / 1e3, 2))
                    .detail("tapnet_seconds", sys::round(t.elapsed.as_secs_f64(), 3))
                    .detail("baseline_round_trips", k.hist.len())
                    .detail("baseline_lost", k.lost)
                    .detail("baseline_mean_us", sys::round(k.hist.mean() / 1e3, 2))
                    .detail("worker_cpu_pct", &cpu)
                    .detail("stages", d.stages())
                    .detail("drops", d.drops())
                    .detail("busy_poll_us", busy_poll.as_micros() as u64)
                    .detail("mapping", opts.mapping.clone())
                    .detail("app_cpus", &cpus);
            }
            rep.push(m);
        }
    }
    Ok(())
}
