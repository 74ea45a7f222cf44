//! Helpers of the end-to-end tests (root, namespaces): reachability with `ping`, and a
//! checked bulk TCP transfer between two namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapnet_engine::sys::netns::NetNs;

/// One `ping` run of `count` echoes from namespace `ns` to `to` (with `extra`
/// arguments); true if any answer came back.
pub fn ping(ns: &NetNs, to: Ipv4Addr, count: u32, extra: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "ping", "-n", "-q", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.2", "-W", "1"])
        .args(extra)
        .arg(to.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run ping (iputils-ping and iproute2 must be installed)")
        .status
        .success()
}

/// [`ping`] until it succeeds, for up to 20 s: a reachability check that a loaded
/// machine does not fail by answering late.
pub fn reach(ns: &NetNs, to: Ipv4Addr, count: u32, extra: &[&str]) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if ping(ns, to, count, extra) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
    }
}

/// Deterministic stream of bytes (xorshift64).
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for w in buf.chunks_exact_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            w.copy_from_slice(&self.0.to_le_bytes());
        }
    }
}

/// A word-wise FNV-style hash of `buf`, folded into `h`.
fn hash(h: &mut u64, buf: &[u8]) {
    for w in buf.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap_or_default());
        *h = (*h ^ v).wrapping_mul(0x100_0000_01b3);
    }
}

/// The unit of [`tcp`]: `bytes` must be a multiple of it.
pub const CHUNK: usize = 64 * 1024;

/// Send `bytes` from namespace `a` to a listener in namespace `b` (at `to`, port 5201)
/// over kernel TCP; returns the hashes of what was sent and of what was received.
pub fn tcp(a: &NetNs, b: &NetNs, to: Ipv4Addr, bytes: usize) -> (u64, u64) {
    assert_eq!(bytes % CHUNK, 0);
    let dst = SocketAddr::new(IpAddr::V4(to), 5201);
    let listener = b
        .run(|| TcpListener::bind(dst))
        .expect("netns")
        .expect("listen");
    let client = a.run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(20)));
    let mut client = client.expect("netns").expect("connect through tapnet");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    client
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    std::thread::scope(|s| {
        let rx = s.spawn(move || {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..bytes / CHUNK {
                server.read_exact(&mut buf).expect("receive");
                hash(&mut h, &buf);
            }
            h
        });
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut src = Stream(0x9e37_79b9_7f4a_7c15 ^ bytes as u64);
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..bytes / CHUNK {
            src.fill(&mut buf);
            hash(&mut h, &buf);
            client.write_all(&buf).expect("send");
        }
        client.shutdown(std::net::Shutdown::Write).ok();
        (h, rx.join().expect("receiver thread"))
    })
}
