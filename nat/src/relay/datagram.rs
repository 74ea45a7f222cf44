//! UDP and ICMP echo flows, carried datagram by datagram: each outbound flow is one
//! connected host socket; a published UDP port's client is one flow per client.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tapnet_wire::{Icmpv4Message, Icmpv4Packet, Ipv4Packet, UdpPacket};

use super::flows::{Flow, FlowId, FlowKind, Proto};
use super::isolation::Isolation;
use super::nameserver::DNS_PORT;
use super::{ConnectError, Event, Relay};

/// Datagrams queued for one flow whose host socket is still being opened.
const PENDING_DATAGRAMS: usize = 16;
/// Datagrams queued toward host sockets, all flows together.
const HOST_QUEUE: usize = 4096;
/// Bytes of the datagrams queued toward host sockets per network, all flows together
/// (queued ones and those waiting for their socket): 4,096 full-size datagrams would be
/// 256 MiB. The host thread drains the queue every pass, so it fills only when the host
/// sockets refuse for long.
pub const HOST_QUEUE_BYTES: usize = 4 * 1024 * 1024;

impl Relay {
    /// A UDP datagram from the container.
    pub(super) fn input_udp(
        &mut self,
        now: Duration,
        ip: &Ipv4Packet<&[u8]>,
        isolation: &Isolation,
    ) {
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        let key = (
            SocketAddrV4::new(ip.src_addr(), udp.src_port()),
            SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        );
        let id = match self.flows.udp.get(&key) {
            Some(&id) => id,
            // The network's DNS server, never the host's loopback.
            None if key.1 == SocketAddrV4::new(self.cfg.gateway.ip, DNS_PORT) => {
                self.dns_udp(now, key.0, udp.payload());
                return;
            }
            None if *key.1.ip() == self.cfg.gateway.ip && !self.cfg.host_loopback => {
                self.counters.drop_unsupported.inc();
                return;
            }
            None if self.isolated(*key.1.ip(), isolation) => {
                self.counters.drop_isolated.inc();
                return;
            }
            None => {
                if self.flows.outbound(Proto::Udp) >= self.cfg.limits.udp {
                    self.counters.udp_limit.inc();
                    return;
                }
                let id = self.flows.add(Flow::datagram(key, Proto::Udp, 0, now));
                self.counters.udp_opened.inc();
                let dst = self.host_dst(key.1);
                self.events.push_back(Event::Connect {
                    id,
                    proto: Proto::Udp,
                    dst,
                });
                id
            }
        };
        self.datagram_out(now, id, udp.payload().to_vec());
    }

    /// An ICMP message from the container: echo requests leave.
    pub(super) fn input_icmp(
        &mut self,
        now: Duration,
        ip: &Ipv4Packet<&[u8]>,
        isolation: &Isolation,
    ) {
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
            // Only echo requests leave; errors and replies have nowhere to go.
            self.counters.drop_unsupported.inc();
            return;
        }
        let ident = icmp.echo_ident();
        let id = match self.flows.icmp.get(&(ip.src_addr(), ident, ip.dst_addr())) {
            Some(&id) => id,
            None if self.isolated(ip.dst_addr(), isolation) => {
                self.counters.drop_isolated.inc();
                return;
            }
            None => {
                if self.flows.count.icmp >= self.cfg.limits.icmp {
                    self.counters.icmp_limit.inc();
                    return;
                }
                let key = (
                    SocketAddrV4::new(ip.src_addr(), 0),
                    SocketAddrV4::new(ip.dst_addr(), 0),
                );
                let id = self.flows.add(Flow::datagram(key, Proto::Icmp, ident, now));
                self.counters.icmp_opened.inc();
                self.events.push_back(Event::Connect {
                    id,
                    proto: Proto::Icmp,
                    dst: SocketAddrV4::new(ip.dst_addr(), 0),
                });
                id
            }
        };
        self.datagram_out(now, id, icmp.into_inner().to_vec());
    }

    /// Queue a datagram of flow `id` toward its host socket.
    fn datagram_out(&mut self, now: Duration, id: FlowId, data: Vec<u8>) {
        let Some(flow) = self.flows.by_id.get_mut(&id) else {
            return;
        };
        flow.last = now;
        let FlowKind::Datagram { ready, pending, .. } = &mut flow.kind else {
            return;
        };
        if self.queued_bytes + data.len() > HOST_QUEUE_BYTES {
            self.counters.host_queue_full.inc();
        } else if !*ready {
            if pending.len() < PENDING_DATAGRAMS {
                self.queued_bytes += data.len();
                pending.push(data);
            } else {
                self.counters.host_queue_full.inc();
            }
        } else if self.to_host.len() < HOST_QUEUE {
            self.queued_bytes += data.len();
            self.to_host.push_back((id, data));
        } else {
            self.counters.host_queue_full.inc();
        }
    }

    /// The host socket of datagram flow `id` is connected (`Ok`) or could not be.
    pub(super) fn datagram_connected(&mut self, id: FlowId, result: Result<(), ConnectError>) {
        let Some(Flow {
            kind: FlowKind::Datagram { ready, pending, .. },
            ..
        }) = self.flows.by_id.get_mut(&id)
        else {
            return;
        };
        match result {
            Ok(()) => {
                *ready = true;
                for d in pending.drain(..) {
                    if self.to_host.len() < HOST_QUEUE {
                        self.to_host.push_back((id, d));
                    } else {
                        self.queued_bytes -= d.len();
                        self.counters.host_queue_full.inc();
                    }
                }
            }
            Err(_) => self.forget(id, false),
        }
    }

    /// The next datagram for a host socket: a UDP payload, or an ICMP echo request
    /// (header included; the host's ping socket sets its own identifier).
    pub fn next_datagram(&mut self) -> Option<(FlowId, Vec<u8>)> {
        let d = self.to_host.pop_front()?;
        self.queued_bytes -= d.1.len();
        Some(d)
    }

    /// A datagram the host socket of flow `id` received: a UDP payload, or an ICMP
    /// echo reply from a ping socket. Returns false if the flow is gone.
    pub fn datagram_from_host(&mut self, now: Duration, id: FlowId, data: &[u8]) -> bool {
        let Some(flow) = self.flows.by_id.get_mut(&id) else {
            self.counters.drop_stale.inc();
            return false;
        };
        flow.last = now;
        let (ctr, remote) = flow.key;
        let proto = flow.proto;
        let FlowKind::Datagram { replied, ident, .. } = &mut flow.kind else {
            return false;
        };
        *replied = true;
        let ident = *ident;
        match proto {
            Proto::Udp => self.emit_udp(remote, ctr, data),
            Proto::Icmp => {
                let reply = Icmpv4Packet::new_checked(data);
                if reply.map_or(true, |r| r.msg_type() != Icmpv4Message::EchoReply) {
                    self.counters.drop_unsupported.inc();
                    return true;
                }
                self.emit_echo_reply(*remote.ip(), *ctr.ip(), data, ident);
            }
            Proto::Tcp => {}
        }
        true
    }

    /// A datagram reached a published UDP port from `client`, for `ctr`. Returns the
    /// flow carrying it (replies from the container come back on it, through
    /// [`Relay::next_datagram`]), or `None` when a bound is reached (`limits.udp_inbound`,
    /// `limits.inbound_per_client`). The container
    /// sees the client's own address, or the gateway address with the client's port for
    /// a loopback or an IPv6 client (another port when a different client's flow shows
    /// that one already: each flow has one real client).
    pub fn udp_inbound(
        &mut self,
        now: Duration,
        client: SocketAddr,
        ctr: SocketAddrV4,
        data: &[u8],
    ) -> Option<FlowId> {
        if self.cfg.gateway.internal {
            self.counters.drop_internal.inc();
            return None;
        }
        let known = self
            .flows
            .inbound_udp
            .get(&(client, ctr))
            .and_then(|id| Some((*id, self.flows.by_id.get(id)?.key.1)));
        let (id, seen) = match known {
            Some(k) => k,
            None => {
                if self.flows.inbound.udp >= self.cfg.limits.udp_inbound {
                    self.counters.udp_inbound_limit.inc();
                    return None;
                }
                if self
                    .flows
                    .client_capped(client, self.cfg.limits.inbound_per_client)
                {
                    self.counters.inbound_client_limit.inc();
                    return None;
                }
                let gw = self.cfg.gateway.ip;
                let Some(seen) = self.flows.pick_seen(client, ctr, Proto::Udp, gw) else {
                    self.counters.udp_limit.inc();
                    return None;
                };
                let mut flow = Flow::datagram((ctr, seen), Proto::Udp, 0, now);
                flow.client = Some(client);
                if let FlowKind::Datagram { ready, .. } = &mut flow.kind {
                    // The published port's socket is open already.
                    *ready = true;
                }
                let id = self.flows.add(flow);
                self.counters.udp_opened.inc();
                (id, seen)
            }
        };
        if let Some(f) = self.flows.by_id.get_mut(&id) {
            f.last = now;
        }
        self.emit_udp(seen, ctr, data);
        Some(id)
    }
}
