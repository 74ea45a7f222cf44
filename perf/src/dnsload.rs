//! The DNS load and the baseline server of the `dns` scenario: `dnsperf` runs (their
//! summary and, with `-v`, every query's latency), a `dnsmasq` serving the same names
//! in a sandbox, and a one-query probe that checks a server answers a name with the
//! expected address before anything is measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tapnet_engine::sys::netns::NetNs;

use crate::proc::{Proc, spawn_in};
use crate::sys;

/// How long a server may take to answer the probe before it is called broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past its time limit a dnsperf run may take (its per-query timeout and
/// start-up) before it is killed.
const DNSPERF_GRACE: Duration = Duration::from_secs(15);

/// A directory removed (with its content) on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(crate::topo::ns_name(tag));
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("removing the stale {}", p.display()))?;
        }
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    /// Write `text` to file `name` in the directory; its path.
    pub(crate) fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        let mut f =
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One dnsperf run: its summary, and every answered query's latency with `-v`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct PerfRun {
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) lost: u64,
    /// "Queries per second": completed queries over the run time.
    pub(crate) qps: f64,
    pub(crate) run_seconds: f64,
    /// dnsperf's mean latency, in µs.
    pub(crate) avg_latency_us: f64,
    /// Answers by response code ("Response codes").
    pub(crate) rcodes: BTreeMap<String, u64>,
    /// "Average packet size" (request, response) in bytes, of each run merged.
    pub(crate) sizes: Vec<String>,
    /// Per-query latencies in ns (only with `-v`).
    #[serde(skip)]
    pub(crate) hist: Option<Histogram<u64>>,
}

impl PerfRun {
    /// Quantile `q` of the per-query latencies, in µs.
    pub(crate) fn us(&self, q: f64) -> Option<f64> {
        self.hist
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1e3)
    }

    /// Whether every answer was NOERROR.
    pub(crate) fn all_noerror(&self) -> bool {
        self.rcodes.keys().all(|k| k == "NOERROR")
    }

    /// Add run `o` to this one (rounds of one measurement).
    pub(crate) fn merge(&mut self, o: &PerfRun) {
        let total = self.run_seconds + o.run_seconds;
        let done = self.completed + o.completed;
        if done > 0 {
            self.avg_latency_us = (self.avg_latency_us * self.completed as f64
                + o.avg_latency_us * o.completed as f64)
                / done as f64;
        }
        self.sent += o.sent;
        self.completed = done;
        self.lost += o.lost;
        self.run_seconds = total;
        self.qps = if total > 0.0 {
            done as f64 / total
        } else {
            0.0
        };
        for (k, v) in &o.rcodes {
            *self.rcodes.entry(k.clone()).or_insert(0) += v;
        }
        self.sizes.extend(o.sizes.iter().cloned());
        self.sizes.dedup();
        match (&mut self.hist, &o.hist) {
            (Some(a), Some(b)) => {
                let _ = a.add(b);
            }
            (None, Some(b)) => self.hist = Some(b.clone()),
            _ => {}
        }
    }
}

/// How one dnsperf run loads its server.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Load {
    /// As fast as the answers come back, with this many queries outstanding at most,
    /// each waiting this long before it counts as lost.
    Max { outstanding: u32, timeout: Duration },
    /// At this many queries per second, each latency recorded (`-v`).
    Rate(u32),
}

/// dnsperf in `ns` against `server:53` with the queries of `queries` for `secs`, to its
/// end (killed if it overruns by [`DNSPERF_GRACE`]), its output parsed.
pub(crate) fn dnsperf(
    dnsperf: &Path,
    ns: &NetNs,
    server: Ipv4Addr,
    queries: &Path,
    secs: f64,
    load: Load,
) -> Result<PerfRun> {
    let mut args: Vec<String> = vec![
        "-s".into(),
        server.to_string(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        format!("{secs:.3}"),
    ];
    match load {
        Load::Max {
            outstanding,
            timeout,
        } => {
            args.extend([
                "-q".into(),
                outstanding.to_string(),
                "-t".into(),
                format!("{:.3}", timeout.as_secs_f64()),
            ]);
        }
        Load::Rate(qps) => {
            args.extend(["-Q".into(), qps.to_string(), "-v".into()]);
        }
    }
    let p = spawn_in(ns, dnsperf, &args, true, &[])?;
    let (status, out, err) = p.wait_output(Duration::from_secs_f64(secs) + DNSPERF_GRACE)?;
    parse_dnsperf(&out).with_context(|| format!("dnsperf ({status}): {}", err.trim()))
}

/// The number after `label` on the line that starts with it (leading blanks aside).
fn field(out: &str, label: &str) -> Option<String> {
    out.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
}

/// The first number of `s`.
fn first_num(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

/// dnsperf's summary (and its `-v` lines: `> NOERROR name A 0.000123`).
pub(crate) fn parse_dnsperf(out: &str) -> Result<PerfRun> {
    let num = |label: &str| -> Result<f64> {
        field(out, label)
            .as_deref()
            .and_then(first_num)
            .with_context(|| format!("no {label:?} in dnsperf's output"))
    };
    let mut r = PerfRun {
        sent: num("Queries sent:")? as u64,
        completed: num("Queries completed:")? as u64,
        lost: num("Queries lost:")? as u64,
        qps: num("Queries per second:")?,
        run_seconds: num("Run time (s):")?,
        avg_latency_us: num("Average Latency (s):").map(|s| s * 1e6).unwrap_or(0.0),
        rcodes: field(out, "Response codes:")
            .map(|l| parse_rcodes(&l))
            .unwrap_or_default(),
        sizes: field(out, "Average packet size:").into_iter().collect(),
        hist: None,
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("> ") else {
            continue;
        };
        if let Some(secs) = rest
            .split_whitespace()
            .last()
            .and_then(|v| v.parse::<f64>().ok())
        {
            hist.saturating_record((secs * 1e9).round().max(1.0) as u64);
        }
    }
    if !hist.is_empty() {
        r.hist = Some(hist);
    }
    Ok(r)
}

/// "NOERROR 97738 (66.67%), REFUSED 48868 (33.33%)" as a map.
fn parse_rcodes(l: &str) -> BTreeMap<String, u64> {
    l.split(',')
        .filter_map(|p| {
            let mut w = p.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// dnsmasq in `ns`, answering the names of `hosts` on `addr:53` only, from memory
/// (no resolv.conf, no /etc/hosts, no upstream), with Docker's TTL.
pub(crate) fn start_dnsmasq(
    dnsmasq: &Path,
    ns: &NetNs,
    addr: Ipv4Addr,
    hosts: &Path,
    log: &Path,
    ttl: u32,
) -> Result<Proc> {
    let args: Vec<String> = [
        "--keep-in-foreground".to_string(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        format!("--addn-hosts={}", hosts.display()),
        format!("--listen-address={addr}"),
        "--bind-interfaces".into(),
        "--port=53".into(),
        "--cache-size=10000".into(),
        format!("--local-ttl={ttl}"),
        "--user=root".into(),
        "--group=root".into(),
        "--pid-file=".into(),
        format!("--log-facility={}", log.display()),
    ]
    .to_vec();
    spawn_in(ns, dnsmasq, &args, false, &[])
}

/// A DNS query for `name` type A, id `id`, RD set, no EDNS (RFC 1035 §4.1).
pub(crate) fn query_a(id: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// Ask `server:53` from `ns` for `name` until an answer comes: it must be NOERROR
/// with exactly `want` as its A records (in any order). `proc` (the server's process,
/// if it has one) must keep running meanwhile.
pub(crate) fn probe(
    ns: &NetNs,
    server: Ipv4Addr,
    name: &str,
    want: &[Ipv4Addr],
    mut proc: Option<&mut Proc>,
) -> Result<()> {
    let to = SocketAddr::from((server, 53));
    let s = ns.run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(to)?;
        Ok(s)
    })??;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 1500];
    let mut id = 0x7a00u16;
    loop {
        sys::check_interrupt()?;
        if let Some(p) = proc.as_deref_mut() {
            p.check_running()?;
        }
        id = id.wrapping_add(1);
        let q = query_a(id, name);
        // Nothing may listen yet: the send fails or nothing comes back; try again.
        let _ = s.send(&q);
        if let Ok(n) = s.recv(&mut buf) {
            let m = &buf[..n];
            if n >= 12 && m[..2] == id.to_be_bytes() {
                let got = a_records(m, q.len());
                let rcode = m[3] & 0x0f;
                let mut sorted_got = got.clone();
                sorted_got.sort();
                let mut sorted_want = want.to_vec();
                sorted_want.sort();
                if rcode != 0 || sorted_got != sorted_want {
                    bail!(
                        "{to} answered {name} with rcode {rcode} and A records {got:?}, not {want:?}"
                    );
                }
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("no answer from {to} for {name} within {PROBE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The A records of answer `m` to a query of `qlen` bytes (its question is echoed
/// at the same place); records whose owner is compressed (a pointer) or not are both
/// read.
fn a_records(m: &[u8], qlen: usize) -> Vec<Ipv4Addr> {
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut at = qlen;
    let mut out = Vec::new();
    for _ in 0..an {
        // Owner name: labels up to a zero, or a pointer.
        loop {
            let Some(&b) = m.get(at) else { return out };
            if b & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(b);
            if b == 0 {
                break;
            }
        }
        let Some(h) = m.get(at..at + 10) else {
            return out;
        };
        let (ty, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        at += 10;
        if let (1, 4, Some(r)) = (ty, len, m.get(at..at + 4)) {
            out.push(Ipv4Addr::new(r[0], r[1], r[2], r[3]));
        }
        at += len;
    }
    out
}

/// CPU seconds (user + system) process `pid` has used.
pub(crate) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let hz = crate::sys::clock_ticks_per_sec();
    Some((ticks(11)? + ticks(12)?) as f64 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "DNS Performance Testing Tool\nVersion 2.10.0\n\n\
[Status] Command line: dnsperf -s 10.9.9.9 -d q -l 2 -Q 50 -v\n\
> NOERROR db A 0.000223\n\
> NOERROR Web A 0.000121\n\
> REFUSED DB.pets A 0.000163\n\
[Status] Testing complete (time limit)\n\nStatistics:\n\n\
  Queries sent:         146606\n\
  Queries completed:    146600 (99.99%)\n\
  Queries lost:         6 (0.01%)\n\n\
  Response codes:       NOERROR 97738 (66.67%), REFUSED 48862 (33.33%)\n\
  Average packet size:  request 21, response 32\n\
  Run time (s):         2.000699\n\
  Queries per second:   73277.389552\n\n\
  Average Latency (s):  0.001098 (min 0.000014, max 0.032757)\n\
  Latency StdDev (s):   0.001768\n";

    #[test]
    fn dnsperf_summary_and_latencies() {
        let r = parse_dnsperf(SUMMARY).unwrap();
        assert_eq!((r.sent, r.completed, r.lost), (146_606, 146_600, 6));
        assert!((r.qps - 73_277.39).abs() < 0.01);
        assert!((r.avg_latency_us - 1098.0).abs() < 0.01);
        assert!(!r.all_noerror());
        assert_eq!(r.sizes, vec!["request 21, response 32".to_string()]);
        assert_eq!(r.rcodes.get("REFUSED"), Some(&48_862));
        let mut m = r.clone();
        m.merge(&r);
        assert_eq!(
            (m.sent, m.completed, m.hist.as_ref().unwrap().len()),
            (293_212, 293_200, 6)
        );
        assert!((m.qps - 293_200.0 / 4.001_398).abs() < 0.01);
        let h = r.hist.as_ref().unwrap();
        assert_eq!(h.len(), 3);
        let p50 = r.us(0.5).unwrap();
        assert!((p50 - 163.0).abs() < 1.0, "{p50}");
        assert!(parse_dnsperf("nothing").is_err());
    }

    #[test]
    fn a_records_of_an_answer() {
        let q = query_a(7, "db");
        let mut m = q.clone();
        m[2] = 0x85;
        m[3] = 0x80;
        m[7] = 2;
        for last in [20u8, 21] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 10, 200, 53, last]);
        }
        assert_eq!(
            a_records(&m, q.len()),
            vec![
                Ipv4Addr::new(10, 200, 53, 20),
                Ipv4Addr::new(10, 200, 53, 21)
            ]
        );
    }
}
