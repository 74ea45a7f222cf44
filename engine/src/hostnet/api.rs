//! The public types of host networking: its configuration, how a network reaches the
//! host, published listeners and their ids, errors and statistics.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use tapnet_nat::GatewayConfig;
use tapnet_nat::dns::{DEFAULT_BURST, DEFAULT_RATE, DnsStats};
use tapnet_nat::relay::{DEFAULT_FLOW_MEMORY, FlowLimits, RelayStats};

use super::clock::Clock;

/// Bounds and buffer sizes of host networking.
#[derive(Clone, Debug)]
pub struct HostNetConfig {
    /// Flow bounds, per network: a SYN beyond them is answered with a reset, a
    /// datagram dropped; each is counted.
    pub limits: FlowLimits,
    /// Buffer per direction of one TCP connection, in bytes.
    pub tcp_buffer: usize,
    /// After an event, keep polling this long before sleeping (zero: sleep at once).
    pub busy_poll: Duration,
    /// The time the host thread runs on: the system's, or a test's manual clock.
    pub clock: Clock,
    /// Bytes all networks' relays may hold in flow buffers (TCP socket buffers):
    /// when it runs low new TCP flows get smaller windows, then are refused (see
    /// `tapnet_nat::relay::Budget`). Default
    /// [`DEFAULT_FLOW_MEMORY`](tapnet_nat::relay::DEFAULT_FLOW_MEMORY), 256 MiB.
    pub flow_memory: usize,
    /// The host's `resolv.conf`: its `nameserver`s are the resolvers every network's
    /// DNS server forwards to. Read when host networking starts, and again when its
    /// metadata (modification time, inode, size) changed, looked at once a second at
    /// most. Default `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// DNS queries per second each sandbox (source address) may make on a network (0:
    /// no limit). Default [`DEFAULT_RATE`](tapnet_nat::dns::DEFAULT_RATE).
    pub dns_rate: u32,
    /// The burst above `dns_rate`. Default
    /// [`DEFAULT_BURST`](tapnet_nat::dns::DEFAULT_BURST).
    pub dns_burst: u32,
    /// **Tests only**: the port of the host's resolvers (`resolv.conf` has none; 53).
    #[doc(hidden)]
    pub dns_port: u16,
}

impl Default for HostNetConfig {
    fn default() -> Self {
        HostNetConfig {
            limits: FlowLimits::default(),
            busy_poll: Duration::from_micros(50),
            tcp_buffer: 1024 * 1024,
            clock: Clock::System,
            flow_memory: DEFAULT_FLOW_MEMORY,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            dns_rate: DEFAULT_RATE,
            dns_burst: DEFAULT_BURST,
            dns_port: 53,
        }
    }
}

/// How one network reaches the host.
#[derive(Clone, Copy, Debug)]
pub struct NetAttach {
    /// The network's gateway (MAC, address, prefix). With `internal` (Docker's
    /// `--internal`) the relay answers DNS at the gateway address and nothing else:
    /// no forwarding to the host's resolvers, no egress, no published ports.
    pub gateway: GatewayConfig,
    /// The network's MTU.
    pub mtu: u32,
    /// `-o tapnet.host_loopback=true`: TCP and UDP to the gateway address go to the
    /// host's 127.0.0.1 (but port 53, the network's DNS server; ignored on an internal
    /// network).
    pub host_loopback: bool,
}

/// A host socket a published port listens on, bound by the caller.
#[derive(Debug)]
pub enum HostListener {
    /// `-p …/tcp`.
    Tcp(TcpListener),
    /// `-p …/udp`.
    Udp(UdpSocket),
}

/// Names one published port, for [`HostNet::unpublish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublishId(pub(super) u64);

/// Why a host networking call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    /// The network was never attached (or was detached).
    #[error("network {0} has no external access")]
    UnknownNetwork(String),
    /// The host thread has stopped.
    #[error("host networking has stopped")]
    Stopped,
    /// A host socket call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Host networking counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNetStats {
    /// Networks attached (internal ones included).
    pub networks: u64,
    /// Published ports.
    pub published: u64,
    /// Host sockets open now (flows and listeners).
    pub sockets: u64,
    /// Pipes open now (two per spliced connection).
    pub pipes: u64,
    /// Loopback connections carried by splice on spliced ports, so far.
    pub spliced: u64,
    /// Loopback connections on spliced ports that took the relay path because no
    /// connection could be made from inside the namespace, so far.
    pub splice_fallback: u64,
    /// The relays' counters, all networks summed.
    pub relay: RelayStats,
    /// Bytes the relays hold in flow buffers now (TCP socket buffers, reserved whole).
    pub flow_memory: u64,
    /// The bound on `flow_memory` ([`HostNetConfig::flow_memory`]).
    pub flow_memory_limit: u64,
    /// The networks' DNS servers' counters, all networks summed.
    pub dns: DnsStats,
}
