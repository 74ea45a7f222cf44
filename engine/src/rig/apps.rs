//! Traffic between rig hosts: ICMP echo, a verified TCP stream, UDP echo. Each helper
//! adds its sockets, drives the rig until done or out of simulated time, and removes
//! them again.

use std::time::Duration;

use rand::Rng;
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, IpEndpoint, Ipv4Address};

use super::{HostId, Rig, RigError};

/// Bytes of payload in each echo request.
const PING_PAYLOAD: usize = 56;
/// Datagrams a UDP sender queues per step at most.
const UDP_BURST: usize = 16;
/// Datagrams a UDP socket buffers each way.
const UDP_SLOTS: usize = 256;
/// IPv4 and UDP headers.
const UDP_OVERHEAD: usize = 28;

/// Outcome of [`Rig::ping`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PingReport {
    /// Echo requests sent.
    pub sent: u16,
    /// Replies that arrived within the timeout.
    pub received: u16,
    /// Round-trip time of each request by sequence number; `None` when no reply came in
    /// time.
    pub rtts: Vec<Option<Duration>>,
}

impl PingReport {
    /// Requests without a timely reply.
    pub fn lost(&self) -> u16 {
        self.sent - self.received
    }

    /// Round-trip times of the replies that came.
    pub fn replies(&self) -> impl Iterator<Item = Duration> + '_ {
        self.rtts.iter().flatten().copied()
    }
}

/// Outcome of a completed [`Rig::tcp_transfer`]: every byte arrived intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    /// Bytes delivered (all of them).
    pub bytes: u64,
    /// Simulated time from the first SYN until the receiver saw the FIN.
    pub elapsed: Duration,
    /// Simulated time until the connection was established (ARP included).
    pub connect: Duration,
}

impl TransferReport {
    /// Goodput in bits per second of simulated time.
    pub fn goodput_bps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Outcome of [`Rig::udp_exchange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams that reached the receiver.
    pub received: u64,
    /// Echoes that made it back to the sender.
    pub echoed: u64,
    /// Every datagram that arrived, either way, had the right length and content and
    /// arrived once.
    pub intact: bool,
    /// Simulated time until the last echo (or the timeout).
    pub elapsed: Duration,
}

/// SplitMix64: the data pattern is a pure function of (key, offset), so sender and
/// receiver agree however TCP cuts the stream.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fill `out` with the pattern bytes of stream `key` starting at `offset`.
fn fill_pattern(key: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let word = mix(key ^ (pos / 8).wrapping_mul(0xd6e8_feb8_6659_fd93)).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[from..from + n]);
        i += n;
        pos += n as u64;
    }
}

/// Offset (within `data`) of the first byte that differs from the pattern.
fn check_pattern(key: u64, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> Option<usize> {
    scratch.clear();
    scratch.resize(data.len(), 0);
    fill_pattern(key, offset, scratch);
    if scratch.as_slice() == data {
        None
    } else {
        data.iter().zip(scratch.iter()).position(|(a, b)| a != b)
    }
}

impl Rig {
    fn ephemeral_port(&mut self) -> u16 {
        49152 + (self.rng.next_u32() % 16384) as u16
    }

    /// Send `count` ICMP echo requests from `from` to `to`, one after another: each waits
    /// up to `timeout` (of simulated time) for its reply before the next is sent.
    pub fn ping(
        &mut self,
        from: HostId,
        to: Ipv4Address,
        count: u16,
        timeout: Duration,
    ) -> PingReport {
        let ident = self.rng.next_u32() as u16;
        let mut payload = [0u8; PING_PAYLOAD];
        fill_pattern(u64::from(ident), 0, &mut payload);
        let caps = ChecksumCapabilities::default();
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        );
        let mut report = PingReport::default();
        if sock.bind(icmp::Endpoint::Ident(ident)).is_err() {
            return report;
        }
        let handle = self.hosts[from.0].sockets.add(sock);
        for seq in 0..count {
            let repr = Icmpv4Repr::EchoRequest {
                ident,
                seq_no: seq,
                data: &payload,
            };
            let s = self.hosts[from.0].sockets.get_mut::<icmp::Socket>(handle);
            // Drop replies to earlier requests that came too late.
            while s.recv().is_ok() {}
            match s.send(repr.buffer_len(), IpAddress::Ipv4(to)) {
                Ok(buf) => repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps),
                Err(_) => break,
            }
            report.sent += 1;
            let sent_at = self.now;
            let mut rtt = None;
            self.drive(sent_at + timeout, |rig| {
                let s = rig.hosts[from.0].sockets.get_mut::<icmp::Socket>(handle);
                while let Ok((data, _)) = s.recv() {
                    let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                        continue;
                    };
                    if let Ok(Icmpv4Repr::EchoReply {
                        ident: i,
                        seq_no,
                        data,
                    }) = Icmpv4Repr::parse(&pkt, &caps)
                    {
                        if i == ident && seq_no == seq && data == payload {
                            rtt = Some(rig.now - sent_at);
                        }
                    }
                }
                Ok(rtt.is_some())
            })
            .ok();
            if rtt.is_some() {
                report.received += 1;
            }
            report.rtts.push(rtt);
        }
        self.hosts[from.0].sockets.remove(handle);
        report
    }

    /// Send `bytes` of pseudo-random data (a pure function of the seed and the stream
    /// offset) from `from` to a listener on `to`:`port`, then close. The receiver checks
    /// every byte. Ok means every byte arrived intact and the FIN after them.
    pub fn tcp_transfer(
        &mut self,
        from: HostId,
        to: HostId,
        port: u16,
        bytes: u64,
        timeout: Duration,
    ) -> Result<TransferReport, RigError> {
        if from == to {
            return Err(RigError::Invalid(
                "a transfer needs two different hosts".into(),
            ));
        }
        if port == 0 {
            return Err(RigError::Invalid("port 0 cannot be listened on".into()));
        }
        let key = self.rng.next_u64();
        let local = self.ephemeral_port();
        let buf = self.cfg.tcp_buffer;
        let new_socket = || {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; buf]),
                tcp::SocketBuffer::new(vec![0; buf]),
            );
            // smoltcp 0.12 panics when a peer fills a window advertised earlier while
            // a newer, rounded-down advertisement is smaller and an ACK is delayed
            // (smoltcp issue 1048): with link delays, that is a matter of the seed.
            s.set_ack_delay(None);
            s
        };
        let mut server = new_socket();
        server
            .listen(port)
            .map_err(|e| RigError::Socket(format!("listen on {port}: {e}")))?;
        let srv = self.hosts[to.0].sockets.add(server);
        let remote = IpEndpoint::new(IpAddress::Ipv4(self.ip(to)), port);
        let mut client = new_socket();
        let connected = client.connect(self.hosts[from.0].iface.context(), remote, local);
        if let Err(e) = connected {
            self.hosts[to.0].sockets.remove(srv);
            return Err(RigError::Socket(format!("connect to {remote}: {e}")));
        }
        let cli = self.hosts[from.0].sockets.add(client);
        let start = self.now;
        let deadline = start + timeout;
        let mut sent = 0u64;
        let mut received = 0u64;
        let mut connect = None;
        let mut scratch = Vec::new();
        let outcome = self.drive(deadline, |rig| {
            let c = rig.hosts[from.0].sockets.get_mut::<tcp::Socket>(cli);
            if connect.is_none() && c.may_send() {
                connect = Some(rig.now - start);
            }
            while sent < bytes && c.can_send() {
                let n = c
                    .send(|b| {
                        let n = b.len().min((bytes - sent) as usize);
                        fill_pattern(key, sent, &mut b[..n]);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                sent += n as u64;
            }
            if sent == bytes && c.may_send() {
                c.close();
            }
            let client_gone = !c.is_open();
            let s = rig.hosts[to.0].sockets.get_mut::<tcp::Socket>(srv);
            while s.can_recv() {
                let bad = s
                    .recv(|d| {
                        let bad = check_pattern(key, received, d, &mut scratch);
                        let r = match bad {
                            None => Ok(d.len()),
                            Some(i) => Err(received + i as u64),
                        };
                        (d.len(), r)
                    })
                    .unwrap_or(Ok(0));
                match bad {
                    Ok(n) if n > 0 => received += n as u64,
                    Ok(_) => break,
                    Err(offset) => return Err(RigError::Corrupted { offset }),
                }
            }
            if received == bytes && s.state() == tcp::State::CloseWait {
                s.close();
                return Ok(true);
            }
            if client_gone || (connect.is_some() && !s.is_open()) {
                return Err(RigError::Reset { received });
            }
            Ok(false)
        });
        let elapsed = self.now - start;
        // Let the FIN handshake finish so no half-open socket is left sending.
        if outcome.as_ref().is_ok_and(|&done| done) {
            let grace = (self.now + Duration::from_secs(1)).min(deadline.max(self.now));
            let _ = self.drive(grace, |rig| {
                let c = rig.hosts[from.0].sockets.get::<tcp::Socket>(cli);
                Ok(matches!(
                    c.state(),
                    tcp::State::TimeWait | tcp::State::Closed
                ))
            });
        }
        self.remove_socket(from, cli);
        self.remove_socket(to, srv);
        match outcome? {
            true => Ok(TransferReport {
                bytes,
                elapsed,
                connect: connect.unwrap_or(elapsed),
            }),
            false => Err(RigError::Timeout {
                what: "TCP transfer",
                after: elapsed,
                done: received,
                expected: bytes,
            }),
        }
    }

    fn remove_socket(&mut self, h: HostId, handle: SocketHandle) {
        self.hosts[h.0].sockets.remove(handle);
    }

    /// Send `datagrams` UDP datagrams of `size` payload bytes from `from` to `to`:`port`
    /// (at most 16 per step); `to` echoes each one back. Runs until every echo is back or
    /// `timeout` of simulated time has passed; losses are counted, not errors.
    pub fn udp_exchange(
        &mut self,
        from: HostId,
        to: HostId,
        port: u16,
        datagrams: u64,
        size: usize,
        timeout: Duration,
    ) -> Result<UdpReport, RigError> {
        let max = self.cfg.mtu as usize - UDP_OVERHEAD;
        if !(4..=max).contains(&size) {
            return Err(RigError::Invalid(format!(
                "datagram size {size} is outside 4..={max} (a sequence number, and no IP fragmentation)"
            )));
        }
        if from == to || port == 0 {
            return Err(RigError::Invalid(
                "an exchange needs two different hosts and a port".into(),
            ));
        }
        let key = self.rng.next_u64();
        let local = self.ephemeral_port();
        let new_socket = || {
            udp::Socket::new(
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; UDP_SLOTS],
                    vec![0; UDP_SLOTS * size],
                ),
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; UDP_SLOTS],
                    vec![0; UDP_SLOTS * size],
                ),
            )
        };
        let mut server = new_socket();
        let mut client = new_socket();
        server
            .bind(port)
            .map_err(|e| RigError::Socket(format!("bind {port}: {e}")))?;
        client
            .bind(local)
            .map_err(|e| RigError::Socket(format!("bind {local}: {e}")))?;
        let srv = self.hosts[to.0].sockets.add(server);
        let cli = self.hosts[from.0].sockets.add(client);
        let remote = IpEndpoint::new(IpAddress::Ipv4(self.ip(to)), port);
        let start = self.now;
        let n = datagrams as usize;
        let (mut got, mut back) = (vec![false; n], vec![false; n]);
        let mut report = UdpReport {
            intact: true,
            ..UdpReport::default()
        };
        let mut datagram = vec![0u8; size];
        let mut scratch = Vec::new();
        // A datagram is its sequence number, then the pattern of (key, seq) after it.
        let verify = |d: &[u8], seen: &mut [bool], scratch: &mut Vec<u8>| -> bool {
            if d.len() != size {
                return false;
            }
            let seq = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
            if seq >= seen.len() || seen[seq] {
                return false;
            }
            seen[seq] = true;
            check_pattern(key ^ seq as u64, 0, &d[4..], scratch).is_none()
        };
        let _ = self.drive(start + timeout, |rig| {
            let c = rig.hosts[from.0].sockets.get_mut::<udp::Socket>(cli);
            let mut burst = 0;
            while report.sent < datagrams && burst < UDP_BURST && c.can_send() {
                let seq = report.sent;
                datagram[..4].copy_from_slice(&(seq as u32).to_be_bytes());
                fill_pattern(key ^ seq, 0, &mut datagram[4..]);
                if c.send_slice(&datagram, remote).is_err() {
                    break;
                }
                report.sent += 1;
                burst += 1;
            }
            while let Ok((d, _)) = c.recv() {
                report.intact &= verify(d, &mut back, &mut scratch);
                report.echoed += 1;
            }
            let s = rig.hosts[to.0].sockets.get_mut::<udp::Socket>(srv);
            while s.can_send() {
                let Ok((d, meta)) = s.recv() else { break };
                report.received += 1;
                if verify(d, &mut got, &mut scratch) {
                    datagram.copy_from_slice(d);
                    let _ = s.send_slice(&datagram, meta.endpoint);
                } else {
                    report.intact = false;
                }
            }
            Ok(report.echoed == datagrams)
        });
        report.elapsed = self.now - start;
        self.remove_socket(from, cli);
        self.remove_socket(to, srv);
        Ok(report)
    }
}
