//! Process plumbing: Ctrl-C, memory and CPU accounting, thread pinning, machine facts.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde::Serialize;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // A second Ctrl-C while cleanup hangs: leave at once (only async-signal-safe calls).
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Turn SIGINT and SIGTERM into a flag that every loop checks, so that the scenario
/// returns and its guards remove namespaces, interfaces and child processes.
pub(crate) fn install_signal_handlers() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit, both signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fail with "interrupted" once Ctrl-C arrived.
pub(crate) fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep `d` in short steps, returning early (with an error) on Ctrl-C.
pub(crate) fn sleep(d: Duration) -> Result<()> {
    let end = std::time::Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = std::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Keep glibc's mmap threshold at its default of 128 KiB.
///
/// glibc raises the threshold to the size of any mmapped block that is freed (up to
/// 32 MiB). After the first engine of a run is dropped, the next engine's buffer pool
/// (a zeroed allocation of ~16 MiB per class, meant to cost RSS only where it is
/// touched) would then come from the heap, where calloc must memset it: every later
/// engine would pay the whole pool in RSS. Setting the threshold explicitly turns the
/// dynamic adjustment off, so every engine in this process is measured as in a fresh
/// daemon.
pub(crate) fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Reset the process's peak RSS (VmHWM) to its current RSS.
pub(crate) fn reset_peak_rss() {
    // "5" resets the peak RSS (Documentation/filesystems/proc.rst, clear_refs).
    if let Err(e) = fs::write("/proc/self/clear_refs", "5") {
        eprintln!("warning: cannot reset the peak RSS (/proc/self/clear_refs): {e}");
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Peak RSS since the last [`reset_peak_rss`], in MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    status_kib("VmHWM").map(|k| k as f64 / 1024.0)
}

/// Current RSS, in MiB.
pub(crate) fn rss_mib() -> Option<f64> {
    status_kib("VmRSS").map(|k| k as f64 / 1024.0)
}

/// Clock ticks per second, the unit of `/proc`'s CPU times.
pub(crate) fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time per thread name: (user, system) clock ticks.
pub(crate) type Ticks = BTreeMap<String, (u64, u64)>;

/// CPU time (user, system; in clock ticks) of every thread of this process whose name
/// starts with `prefix`, keyed by thread name.
pub(crate) fn thread_cpu_ticks(prefix: &str) -> Ticks {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let Ok(comm) = fs::read_to_string(p.join("comm")) else {
            continue;
        };
        let name = comm.trim().to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(p.join("stat")) else {
            continue;
        };
        // Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let e = out.entry(name).or_insert((0, 0));
        e.0 += ticks(11);
        e.1 += ticks(12);
    }
    out
}

/// CPU use of one thread, in % of one CPU: in user space (the engine's code) and in the
/// kernel (system calls: TAP reads and writes, epoll, wake-ups).
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct CpuUse {
    pub(crate) total: f64,
    pub(crate) user: f64,
    pub(crate) sys: f64,
}

/// Per-thread CPU use between two [`thread_cpu_ticks`] readings `elapsed` apart.
pub(crate) fn cpu_percent(
    before: &Ticks,
    after: &Ticks,
    elapsed: Duration,
) -> BTreeMap<String, CpuUse> {
    let hz = clock_ticks_per_sec();
    let secs = elapsed.as_secs_f64().max(1e-9);
    after
        .iter()
        .map(|(k, &(u, s))| {
            let (u0, s0) = before.get(k).copied().unwrap_or((0, 0));
            let pct = |d: u64| round(d as f64 / hz / secs * 100.0, 1);
            let (user, sys) = (pct(u.saturating_sub(u0)), pct(s.saturating_sub(s0)));
            (
                k.clone(),
                CpuUse {
                    total: round(user + sys, 1),
                    user,
                    sys,
                },
            )
        })
        .collect()
}

/// The machine's CPU time from `/proc/stat`, in clock ticks: busy (user, nice, system,
/// irq, softirq) and steal (what the hypervisor gave to other guests).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MachineTicks {
    busy: u64,
    steal: u64,
}

impl MachineTicks {
    /// A reading now (zeros if `/proc/stat` cannot be read).
    pub(crate) fn now() -> MachineTicks {
        let Ok(stat) = fs::read_to_string("/proc/stat") else {
            return MachineTicks::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineTicks::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        MachineTicks {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
        }
    }

    /// CPU-seconds the whole machine was busy since `before`, and stolen from it.
    pub(crate) fn since(&self, before: &MachineTicks) -> (f64, f64) {
        let hz = clock_ticks_per_sec();
        (
            self.busy.saturating_sub(before.busy) as f64 / hz,
            self.steal.saturating_sub(before.steal) as f64 / hz,
        )
    }
}

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => vec![0],
    }
}

/// Pin the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) {
    pin_current_thread_to(&[cpu]);
}

/// Restrict the calling thread to `cpus` (nothing happens for an empty list).
pub(crate) fn pin_current_thread_to(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        let _ = set.set(c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// Round to `digits` decimals (for output only).
pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// The machine a figure was measured on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    /// Online CPUs.
    pub(crate) nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub(crate) cpu: String,
    /// Kernel release.
    pub(crate) kernel: String,
}

impl Machine {
    pub(crate) fn detect() -> Machine {
        // SAFETY: sysconf has no memory-safety preconditions.
        let nproc = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine { nproc, cpu, kernel }
    }
}
