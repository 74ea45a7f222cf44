//! `tap-udp64`: packet rate of 64-byte UDP payloads from A to B.
//!
//! A sender thread with a socket opened in A blasts with `sendmmsg`, a receiver thread
//! with a socket opened in B counts with `recvmmsg`. First the kernel bridge at full
//! speed: what it carries sets the offered rate for tapnet. Then tapnet at that rate
//! (is it lossless where the kernel is?), and tapnet at full speed.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent, interrupted, thread_cpu_ticks};
use crate::topo::{ADDR_A, ADDR_B, Datapath, KernelBridge, KernelDrops, TapnetPair};

const SCENARIO: &str = "tap-udp64";
const PORT: u16 = 9000;
const PAYLOAD: usize = 64;
const MAGIC: u32 = 0x746e_7075;
const BATCH: usize = 64;
/// Receive buffer of the sink socket (SO_RCVBUFFORCE), the same on both datapaths.
const RCVBUF: libc::c_int = 8 << 20;

/// Open the sink in B and the connected source in A.
pub(crate) fn socket_pair(dp: &dyn Datapath, port: u16) -> Result<(UdpSocket, UdpSocket)> {
    let rx = dp.b().run(|| UdpSocket::bind((ADDR_B, port)))??;
    let tx = dp.a().run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((ADDR_A, 0))?;
        s.connect((ADDR_B, port))?;
        Ok(s)
    })??;
    Ok((rx, tx))
}

fn set_rcvbuf(s: &UdpSocket, bytes: libc::c_int) -> Result<()> {
    // SAFETY: the option value is a c_int that outlives the call, its size is passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUFFORCE");
    }
    Ok(())
}

/// Send `PAYLOAD`-byte datagrams tagged `run` for `dur`, at `rate` packets/s or as fast
/// as the socket takes them. Returns (packets sent, time taken).
fn blast(sock: &UdpSocket, run: u32, dur: Duration, rate: Option<f64>) -> (u64, Duration) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer; it only changes this thread's timer slack
    // so that the pacing sleeps end on time.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    // Every access to the datagrams goes through `base`, the pointer the iovecs hold.
    let mut store = vec![0u8; BATCH * PAYLOAD];
    let base = store.as_mut_ptr();
    let buf = |i: usize| -> &mut [u8] {
        // SAFETY: slot `i < BATCH` lies inside `store`, which outlives every use; the
        // kernel reads the slots only during sendmmsg, when no such slice is alive.
        unsafe { std::slice::from_raw_parts_mut(base.add(i * PAYLOAD), PAYLOAD) }
    };
    for i in 0..BATCH {
        let b = buf(i);
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&run.to_be_bytes());
    }
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: base.wrapping_add(i * PAYLOAD).cast(),
            iov_len: PAYLOAD,
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no name, no control).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut seq = 0u64;
    loop {
        let el = start.elapsed();
        if el >= dur || interrupted() {
            break;
        }
        let mut n = BATCH;
        if let Some(r) = rate {
            let due = (r * el.as_secs_f64()) as u64;
            if due <= sent {
                let wait = ((sent + 1 - due) as f64 / r).min(0.001);
                std::thread::sleep(Duration::from_secs_f64(wait));
                continue;
            }
            n = n.min((due - sent) as usize);
        }
        for i in 0..n {
            buf(i)[8..16].copy_from_slice(&seq.to_be_bytes());
            seq += 1;
        }
        // SAFETY: `msgs[..n]` point at `iov`, which point into `store`; all three live
        // until the end of this function and are not moved.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r > 0 {
            sent += r as u64;
        } else {
            // ENOBUFS, ECONNREFUSED (an ICMP error from an earlier datagram): go on.
            std::thread::yield_now();
        }
    }
    drop(store);
    (sent, start.elapsed())
}

/// Count datagrams tagged `run` until `stop` is set.
fn sink(sock: &UdpSocket, run: u32, stop: &AtomicBool) -> u64 {
    const SZ: usize = 2048;
    // Every access to the buffers goes through `base`, the pointer the iovecs hold.
    let mut store = vec![0u8; BATCH * SZ];
    let base = store.as_mut_ptr();
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: base.wrapping_add(i * SZ).cast(),
            iov_len: SZ,
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    let mut got = 0u64;
    let mut tag = [0u8; 8];
    tag[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    tag[4..8].copy_from_slice(&run.to_be_bytes());
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` point at `iov`, which point into `store`; all live until the end
        // of this function. The socket has a receive timeout, so this returns.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            continue;
        }
        for (i, m) in msgs.iter().take(r as usize).enumerate() {
            // SAFETY: slot `i` is inside `store`; the kernel is done writing it.
            let head = unsafe { std::slice::from_raw_parts(base.add(i * SZ), 8) };
            if m.msg_len as usize == PAYLOAD && head == tag {
                got += 1;
            }
        }
    }
    drop(store);
    got
}

/// What one UDP measurement counted.
pub(crate) struct Udp {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) elapsed: Duration,
    pub(crate) kernel: KernelDrops,
}

impl Udp {
    pub(crate) fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn rx_pps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            100.0
        } else {
            100.0 * (1.0 - self.received as f64 / self.sent as f64)
        }
    }
}

/// `PAYLOAD`-byte datagrams tagged `run` from A to B for `dur`, at `rate` packets/s or
/// unpaced, on CPUs `cpus` (none: the scheduler's choice).
pub(crate) fn measure(
    dp: &dyn Datapath,
    run: u32,
    dur: Duration,
    rate: Option<f64>,
    cpus: &[usize],
) -> Result<Udp> {
    let (rx, tx) = socket_pair(dp, PORT)?;
    set_rcvbuf(&rx, RCVBUF)?;
    rx.set_read_timeout(Some(Duration::from_millis(20)))?;
    // Resolve ARP first: a few tagged-0 datagrams, then quiet.
    for _ in 0..5 {
        let _ = tx.send(&[0u8; PAYLOAD]);
        sys::sleep(Duration::from_millis(10))?;
    }
    sys::sleep(Duration::from_millis(100))?;
    let before = KernelDrops::read(dp)?;
    let stop = AtomicBool::new(false);
    let (sent, elapsed, received) = std::thread::scope(|s| -> Result<_> {
        let sinker = std::thread::Builder::new()
            .name("tnp-udp-sink".into())
            .spawn_scoped(s, || {
                sys::pin_current_thread_to(cpus);
                sink(&rx, run, &stop)
            })?;
        let sender = std::thread::Builder::new()
            .name("tnp-udp-blast".into())
            .spawn_scoped(s, || {
                sys::pin_current_thread_to(cpus);
                blast(&tx, run, dur, rate)
            })?;
        let sent = sender.join().map_err(|_| anyhow!("sender panicked"));
        // Let queues drain, then stop counting.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let received = sinker.join().map_err(|_| anyhow!("sink panicked"))?;
        let (sent, elapsed) = sent?;
        Ok((sent, elapsed, received))
    })?;
    sys::check_interrupt()?;
    let kernel = KernelDrops::read(dp)?.since(&before);
    Ok(Udp {
        sent,
        received,
        elapsed,
        kernel,
    })
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let dur = Duration::from_secs_f64(opts.seconds.unwrap_or(5.0));
    eprintln!(
        "tap-udp64: setting up namespaces (kernel bridge and tapnet, mapping {})",
        opts.mapping
    );
    let kernel = KernelBridge::create("udp-")?;
    let tapnet = TapnetPair::create("udp-", opts.engine_config()?)?;
    let engine = tapnet.engine().context("tapnet datapath without engine")?;

    eprintln!(
        "tap-udp64: kernel bridge, unpaced, {:.1} s",
        dur.as_secs_f64()
    );
    let cpus = opts.app_cpus()?;
    let k = measure(&kernel, 1, dur, None, &cpus)?;
    let rate = k.rx_pps();
    let kdesc = format!(
        "bridge sent {:.0} kpps, rx {:.0} kpps, loss {:.2}%",
        k.sent_pps() / 1e3,
        k.rx_pps() / 1e3,
        k.loss_pct()
    );

    let cases = [
        (
            "64B payload, offered at the bridge's rx rate".to_string(),
            Some(rate),
            2u32,
        ),
        ("64B payload, unpaced".to_string(), None, 3),
    ];
    for (case, offered, run) in cases {
        sys::check_interrupt()?;
        match offered {
            Some(r) => eprintln!("tap-udp64: tapnet, {case} ({:.0} kpps)", r / 1e3),
            None => eprintln!("tap-udp64: tapnet, {case}"),
        }
        sys::reset_peak_rss();
        let before = Snapshot::take(engine);
        let ticks = thread_cpu_ticks("tapnet-w");
        let t0 = Instant::now();
        let t = measure(&tapnet, run, dur, offered, &cpus)?;
        let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
        let d = Snapshot::take(engine).since(&before);
        let mut m = Measurement::new(
            SCENARIO,
            case,
            "kpps rx",
            Better::Higher,
            t.rx_pps() / 1e3,
            "kernel-bridge",
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
        .note(d.drops_note());
        m = with_loss(m, &t, &k, offered)
            .detail("worker_cpu_pct", &cpu)
            .detail("stages", d.stages())
            .detail("drops", d.drops())
            .detail("mapping", opts.mapping.clone())
            .detail("app_cpus", &cpus)
            .detail("seconds", sys::round(t.elapsed.as_secs_f64(), 3));
        rep.push(m);
    }
    Ok(())
}

/// `m` with what tapnet lost and the kernel baseline lost: rates, loss, the kernel's
/// drop counters on both paths, and the < 1 % target when the rate was offered.
pub(crate) fn with_loss(mut m: Measurement, t: &Udp, k: &Udp, offered: Option<f64>) -> Measurement {
    if t.kernel.a_tx_dropped + t.kernel.b_rx_dropped + t.kernel.b_udp_rcvbuf_errors > 0 {
        m = m.note(format!(
            "kernel drops: TAP A tx {}, TAP B rx {}, B socket {}",
            t.kernel.a_tx_dropped, t.kernel.b_rx_dropped, t.kernel.b_udp_rcvbuf_errors
        ));
    }
    if offered.is_some() {
        m = m.target("loss < 1%", t.loss_pct() < 1.0);
    }
    m.detail("tapnet_sent_kpps", sys::round(t.sent_pps() / 1e3, 1))
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
}
