//! A DNS query flood from inside a sandbox: one UDP socket sends A queries as fast as
//! the kernel takes them (64 per `sendmmsg(2)`, never waiting for answers), a second
//! thread counts the answers. dnsperf is no flooder against a rate limit: each query
//! the limit drops holds one of its outstanding slots until its timeout, so it slows
//! down to the rate the server answers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tapnet_engine::sys::netns::NetNs;

use crate::dnsload::query_a;

/// Queries per `sendmmsg(2)`.
const BATCH: usize = 64;

/// What a flood did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Flooded {
    /// Queries the kernel took.
    pub(crate) sent: u64,
    /// Sends the kernel refused (its buffer full).
    pub(crate) refused: u64,
    /// Answers received.
    pub(crate) answered: u64,
    pub(crate) seconds: f64,
    /// Queries sent per second.
    pub(crate) sent_per_s: f64,
    /// Answers per second.
    pub(crate) answered_per_s: f64,
    /// CPU seconds the sending thread used.
    pub(crate) sender_cpu_seconds: f64,
}

/// A flood running until [`Flood::finish`] or its time limit.
pub(crate) struct Flood {
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: Option<JoinHandle<(u64, u64, f64)>>,
    receiver: Option<JoinHandle<u64>>,
    t0: Instant,
}

/// Start flooding `to` from a socket made in `ns` with A queries for `names` in turn,
/// for at most `limit`; at most `pace` queries per second if given.
pub(crate) fn start(
    ns: &NetNs,
    to: SocketAddr,
    names: &[&str],
    limit: Duration,
    pace: Option<u32>,
) -> Result<Flood> {
    let sock = ns.run(|| -> io::Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(to)?;
        Ok(s)
    })??;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let rx = sock.try_clone()?;
    let stop_send = Arc::new(AtomicBool::new(false));
    let stop_recv = Arc::new(AtomicBool::new(false));
    let queries: Vec<Vec<u8>> = names.iter().map(|n| query_a(0, n)).collect();
    let t0 = Instant::now();
    let st = Arc::clone(&stop_send);
    let sender = std::thread::Builder::new()
        .name("perf-dns-flood".into())
        .spawn(move || send(&sock, &queries, &st, t0, limit, pace))
        .context("starting the flood's sender")?;
    let st = Arc::clone(&stop_recv);
    let receiver = std::thread::Builder::new()
        .name("perf-dns-sink".into())
        .spawn(move || {
            let mut n = 0u64;
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                if let Ok(len) = rx.recv(&mut buf) {
                    if len >= 12 && buf[2] & 0x80 != 0 {
                        n += 1;
                    }
                }
            }
            n
        })
        .context("starting the flood's receiver")?;
    Ok(Flood {
        stop_send,
        stop_recv,
        sender: Some(sender),
        receiver: Some(receiver),
        t0,
    })
}

impl Flood {
    /// Stop sending, wait a moment for the last answers, and count.
    pub(crate) fn finish(mut self) -> Flooded {
        let mut f = Flooded::default();
        self.stop_send.store(true, Ordering::Relaxed);
        if let Some(h) = self.sender.take() {
            let (sent, refused, cpu) = h.join().unwrap_or((0, 0, 0.0));
            f.sent = sent;
            f.refused = refused;
            f.sender_cpu_seconds = crate::sys::round(cpu, 2);
        }
        let secs = self.t0.elapsed().as_secs_f64().max(1e-9);
        std::thread::sleep(Duration::from_millis(200));
        self.stop_recv.store(true, Ordering::Relaxed);
        if let Some(h) = self.receiver.take() {
            f.answered = h.join().unwrap_or(0);
        }
        f.seconds = crate::sys::round(secs, 3);
        f.sent_per_s = crate::sys::round(f.sent as f64 / secs, 0);
        f.answered_per_s = crate::sys::round(f.answered as f64 / secs, 0);
        f
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop_send.store(true, Ordering::Relaxed);
        self.stop_recv.store(true, Ordering::Relaxed);
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

/// The sender: batches of queries with fresh ids until `stop` or `limit`, paced at
/// `pace` per second if given; (sent, refused, CPU seconds).
fn send(
    sock: &UdpSocket,
    queries: &[Vec<u8>],
    stop: &AtomicBool,
    t0: Instant,
    limit: Duration,
    pace: Option<u32>,
) -> (u64, u64, f64) {
    let (mut sent, mut refused) = (0u64, 0u64);
    if queries.is_empty() {
        return (0, 0, 0.0);
    }
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| queries[i % queries.len()].clone())
        .collect();
    let mut id = 0u16;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
        if let Some(pps) = pace.filter(|p| *p > 0) {
            let due = Duration::from_secs_f64((sent + refused) as f64 / f64::from(pps));
            if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        for b in bufs.iter_mut() {
            id = id.wrapping_add(1);
            b[..2].copy_from_slice(&id.to_be_bytes());
        }
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zero is a valid value of each field.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at one iovec of a live
        // buffer; the socket is connected, so no address is needed.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        let done = usize::try_from(r).unwrap_or(0);
        sent += done as u64;
        if done < BATCH {
            refused += (BATCH - done) as u64;
            std::thread::yield_now();
        }
    }
    (sent, refused, thread_cpu_seconds())
}

/// User and system CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(ru.ru_utime) + s(ru.ru_stime)
}
