//! Echo servers on threads of this process, for the host-networking scenarios: their
//! sockets are bound in whichever namespace the caller made them in (the host's, or a
//! sandbox's through `NetNs::run`), and serve until the guard drops.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often a server looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A thread echoing on a socket until dropped.
pub(crate) struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Set SO_RCVTIMEO on a listening socket, so that `accept` returns every `d`.
fn accept_timeout(l: &TcpListener, d: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the option value is a timeval that outlives the call, its size is passed.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO on the listener");
    }
    Ok(())
}

/// Echo one connection until its peer closes it, it fails, or `stop`.
fn serve_conn(mut c: TcpStream, stop: &AtomicBool) {
    let _ = c.set_nodelay(true);
    let _ = c.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Echo TCP connections on `l`, one at a time (the clients of these scenarios hold one
/// connection at a time).
pub(crate) fn tcp(l: TcpListener) -> Result<EchoServer> {
    accept_timeout(&l, POLL)?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tnp-tcp-echo".into())
        .spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    serve_conn(c, &st);
                }
            }
        })
        .context("starting the TCP echo thread")?;
    Ok(EchoServer {
        stop,
        thread: Some(thread),
    })
}

/// Echo every datagram on `s` back to its sender.
pub(crate) fn udp(s: UdpSocket) -> Result<EchoServer> {
    s.set_read_timeout(Some(POLL))?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tnp-udp-echo".into())
        .spawn(move || crate::latency::echo(&s, &st))
        .context("starting the UDP echo thread")?;
    Ok(EchoServer {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn tcp_and_udp_echo_on_loopback() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let srv = tcp(l).unwrap();
        for i in 0..3u8 {
            let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(&[i; 64]).unwrap();
            let mut b = [0u8; 64];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b, [i; 64]);
        }
        drop(srv);

        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = s.local_addr().unwrap();
        let srv = udp(s).unwrap();
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"ping", addr).unwrap();
        let mut b = [0u8; 16];
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping");
        drop(srv);
    }
}
