//! `switch-mem`: frames between two memory ports through a real engine.
//!
//! One generator thread feeds port A and drains port B, sending the handles it gets back
//! as the next frames (every frame is the same A→B unicast, so a received frame is a
//! valid next frame): what is measured is the engine, not a frame builder. Baseline: a
//! plain copy of the same frame into a buffer, per frame, on one thread; the ratio is
//! what switching costs over touching the bytes once.
//!
//! Workers are pinned and poll when the generator has a CPU of its own; a mapping with
//! as many workers as the machine has CPUs runs without busy-polling (workers sleep when
//! idle and are woken by the memory peers), the generator time-sharing a CPU with them,
//! and its label says so.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use tapnet_engine::{DomainConfig, Engine, EngineConfig, MacAddr, MemPeer, MemPort, WorkerMapping};
use tapnet_wire::checksum;

use crate::counters::{Delta, Snapshot};
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{
    self, allowed_cpus, cpu_percent, interrupted, pin_current_thread, thread_cpu_ticks,
};

const SCENARIO: &str = "switch-mem";
/// Frames circulating between the generator and the engine.
const INFLIGHT: usize = 1024;
/// Capacity of each memory port ring.
const PORT_RING: usize = 4096;
/// Most handles moved per generator call.
const GEN_BATCH: usize = 256;
const GEN_THREAD: &str = "tnp-gen";
const WARMUP: Duration = Duration::from_millis(300);
/// Workers poll this long before sleeping: longer than any pause of the generator.
const BUSY_POLL: Duration = Duration::from_secs(1);

const MAC_A: MacAddr = MacAddr([0x02, 0x42, 10, 200, 0, 1]);
const MAC_B: MacAddr = MacAddr([0x02, 0x42, 10, 200, 0, 2]);

/// An Ethernet + IPv4 + UDP frame of exactly `size` bytes, A → B.
fn build_frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size.max(42)];
    f[0..6].copy_from_slice(&MAC_B.0);
    f[6..12].copy_from_slice(&MAC_A.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (size - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 200, 0, 1]);
    f[30..34].copy_from_slice(&[10, 200, 0, 2]);
    let csum = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&csum.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Frames per second a single thread copies `frame` into a ring of slots.
fn memcpy_rate(frame: &[u8], dur: Duration, cpu: usize) -> Result<f64> {
    const SLOT: usize = 2048;
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_current_thread(cpu);
            let mut buf = vec![1u8; INFLIGHT * SLOT];
            let len = frame.len();
            let run = |buf: &mut Vec<u8>, d: Duration| -> (u64, Duration) {
                let start = Instant::now();
                let mut n = 0u64;
                loop {
                    for i in 0..INFLIGHT {
                        let src = black_box(frame);
                        buf[i * SLOT..i * SLOT + len].copy_from_slice(src);
                    }
                    black_box(&mut *buf);
                    n += INFLIGHT as u64;
                    let e = start.elapsed();
                    if e >= d || interrupted() {
                        return (n, e);
                    }
                }
            };
            run(&mut buf, WARMUP);
            let (n, e) = run(&mut buf, dur);
            sys::check_interrupt()?;
            Ok(n as f64 / e.as_secs_f64())
        })
        .join()
        .map_err(|_| anyhow!("memcpy thread panicked"))?
    })
}

struct EngineRun {
    frames: u64,
    elapsed: Duration,
    delta: Delta,
    cpu: BTreeMap<String, sys::CpuUse>,
    peak_rss: Option<f64>,
}

/// Threads whose CPU use is reported: the workers and the generator.
fn ours(ticks: sys::Ticks) -> sys::Ticks {
    ticks
        .into_iter()
        .filter(|(k, _)| k.starts_with("tapnet-w") || k == GEN_THREAD)
        .collect()
}

/// Circulate frames A → engine → B for `dur` after a warm-up; count what comes out.
fn generate(
    engine: &Engine,
    mut a: MemPeer,
    mut b: MemPeer,
    frame: &[u8],
    dur: Duration,
    cpu: Option<usize>,
) -> Result<EngineRun> {
    if let Some(c) = cpu {
        pin_current_thread(c);
    }
    let pool = a.pool().clone();
    let mut spare = Vec::with_capacity(INFLIGHT + GEN_BATCH);
    for _ in 0..INFLIGHT {
        spare.push(
            pool.alloc_copy(frame)
                .context("the engine's pool has no free slot")?,
        );
    }
    let start = Instant::now();
    let mut received = 0u64;
    let mut mark: Option<(Instant, u64, Snapshot, sys::Ticks)> = None;
    let mut iter = 0u64;
    let result = loop {
        let sent = a.send_batch(&mut spare);
        let got = b.recv_batch(&mut spare, GEN_BATCH);
        received += got as u64;
        if sent == 0 && got == 0 {
            // Nothing to do: let a worker that shares this CPU run.
            std::thread::yield_now();
        }
        iter += 1;
        if iter % 32 != 0 {
            continue;
        }
        let now = Instant::now();
        match &mark {
            None if now - start >= WARMUP => {
                let (s0, t0) = (Snapshot::take(engine), ours(thread_cpu_ticks("t")));
                mark = Some((Instant::now(), received, s0, t0));
            }
            Some((t0, r0, s0, c0)) if now - *t0 >= dur => {
                let elapsed = now - *t0;
                break Ok(EngineRun {
                    frames: received - r0,
                    elapsed,
                    delta: Snapshot::take(engine).since(s0),
                    cpu: cpu_percent(c0, &ours(thread_cpu_ticks("t")), elapsed),
                    peak_rss: None,
                });
            }
            _ => {}
        }
        if interrupted() {
            break Err(anyhow!("interrupted"));
        }
        if now - start > WARMUP + dur + Duration::from_secs(10) {
            break Err(anyhow!("the generator overran its time budget"));
        }
    };
    // Collect what is still in flight (bounded), then give every slot back.
    let mut quiet = Instant::now();
    while spare.len() < INFLIGHT && quiet.elapsed() < Duration::from_millis(200) {
        if b.recv_batch(&mut spare, GEN_BATCH) > 0 {
            quiet = Instant::now();
        } else {
            std::thread::yield_now();
        }
    }
    for h in spare.drain(..) {
        pool.free(h);
    }
    result
}

fn through_engine(
    frame: &[u8],
    mapping: WorkerMapping,
    dur: Duration,
    gen_cpu: Option<usize>,
    busy_poll: Duration,
) -> Result<EngineRun> {
    sys::reset_peak_rss();
    // With a CPU to itself, the generator never pauses long and the workers poll
    // through the whole run; sharing one, they sleep when idle and memory peers wake
    // them (`MemPeer` rings the worker's doorbell).
    let engine = Engine::start(EngineConfig {
        mapping,
        pin: true,
        busy_poll,
        ..Default::default()
    })?;
    let dom = engine.add_domain(DomainConfig::default())?;
    let pool = engine.pool().clone();
    let (pa, a) = MemPort::pair("mem-a", pool.clone(), PORT_RING, 1500, false);
    let (pb, b) = MemPort::pair("mem-b", pool, PORT_RING, 1500, false);
    let ia = engine.add_port(Box::new(pa), dom)?;
    let ib = engine.add_port(Box::new(pb), dom)?;
    engine.add_static_mac(dom, MAC_A, ia)?;
    engine.add_static_mac(dom, MAC_B, ib)?;
    let mut run = std::thread::scope(|s| {
        let e = &engine;
        std::thread::Builder::new()
            .name(GEN_THREAD.into())
            .spawn_scoped(s, move || generate(e, a, b, frame, dur, gen_cpu))
            .context("cannot start the generator thread")?
            .join()
            .map_err(|_| anyhow!("generator thread panicked"))?
    })?;
    run.peak_rss = sys::peak_rss_mib();
    engine.shutdown();
    Ok(run)
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let dur = Duration::from_secs_f64(opts.seconds.unwrap_or(3.0));
    let cpus = allowed_cpus();
    for size in [64usize, 512, 1500] {
        let frame = build_frame(size);
        eprintln!(
            "switch-mem: {size}-byte frames: memcpy baseline ({:.1} s)",
            dur.as_secs_f64()
        );
        let base_pps = memcpy_rate(&frame, dur, cpus[0])?;
        let cases = [
            ("rtc 1w", WorkerMapping::run_to_completion(), 1usize),
            (
                "pipeline 2w (rx/switch,tx)",
                WorkerMapping::parse("rx/switch,tx")?,
                2,
            ),
        ];
        for (label, mapping, workers) in cases {
            sys::check_interrupt()?;
            // Workers take the first CPUs (pinned, polling); the generator needs the next.
            // Without one it shares a CPU with a worker that never yields, and the figure
            // is the scheduler's starvation of the generator, not the engine.
            // Without a CPU of its own the generator shares one with a worker: then the
            // workers do not busy-poll (they sleep when their input is empty and memory
            // peers and upstream stages wake them), so the three threads time-share two
            // CPUs and the figure says so in its label.
            let gen_cpu = cpus.get(workers).copied();
            let (label, busy_poll) = match gen_cpu {
                Some(_) => (label.to_string(), BUSY_POLL),
                None => (
                    format!("{label}, generator sharing a CPU, no busy-poll"),
                    Duration::ZERO,
                ),
            };
            eprintln!("switch-mem: {size}-byte frames through the engine, {label}");
            let r = through_engine(&frame, mapping, dur, gen_cpu, busy_poll)?;
            let pps = r.frames as f64 / r.elapsed.as_secs_f64();
            let mpps = pps / 1e6;
            let gbit = pps * size as f64 * 8.0 / 1e9;
            let ns = 1e9 / pps.max(1e-9);
            let base_ns = 1e9 / base_pps;
            let mut m = Measurement::new(
                SCENARIO,
                format!("{size}B {label}"),
                "Mpps",
                Better::Higher,
                mpps,
                "memcpy",
                base_pps / 1e6,
                rep.machine(),
            )
            .rss(r.peak_rss)
            .note(format!(
                "{gbit:.2} Gbit/s, {ns:.1} ns/frame (memcpy {base_ns:.1} ns/frame)"
            ))
            .note(r.delta.drops_note())
            .detail("gbit_s", sys::round(gbit, 3))
            .detail("ns_per_frame", sys::round(ns, 2))
            .detail(
                "baseline_gbit_s",
                sys::round(base_pps * size as f64 * 8.0 / 1e9, 3),
            )
            .detail("baseline_ns_per_frame", sys::round(base_ns, 2))
            .detail("frames", r.frames)
            .detail("seconds", sys::round(r.elapsed.as_secs_f64(), 3))
            .detail("inflight", INFLIGHT)
            .detail("busy_poll_us", busy_poll.as_micros() as u64)
            .detail("generator_cpu", gen_cpu)
            .detail("thread_cpu_pct", &r.cpu)
            .detail("stages", r.delta.stages())
            .detail("drops", r.delta.drops())
            .detail("bytes_counted", json!("frame bytes, no preamble/IFG/FCS"));
            if size == 64 && workers == 1 {
                m = m.target(">= 10 Mpps", mpps >= 10.0);
            }
            rep.push(m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size_and_a_valid_ip_header() {
        for size in [64, 512, 1500] {
            let f = build_frame(size);
            assert_eq!(f.len(), size);
            assert_eq!(&f[0..6], &MAC_B.0);
            assert_eq!(&f[6..12], &MAC_A.0);
            assert_eq!(
                checksum::ones_complement_sum(&f[14..34]),
                0xffff,
                "IPv4 header checksum of a {size}-byte frame"
            );
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, size - 14);
        }
    }
}
