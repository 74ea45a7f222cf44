//! Sans-IO gateway services of a tapnet network: the gateway's own address
//! (ARP and ICMP echo, [`Gateway`]), egress NAT and published ports
//! ([`relay`]), ICMP echo over host sockets ([`icmp`]), the embedded DNS server
//! ([`dns`]), and the `-p` parser ([`portspec`]); later VIP load balancing.
//!
//! Like `tapnet-switch`, nothing here does I/O, spawns threads, takes locks or
//! reads a clock. The engine hands [`Gateway::handle`] one frame and a buffer, and
//! gets back an [`Outcome`]: a reply frame written into the buffer, nothing to
//! send, or a named drop (each counted in [`GatewayCounters`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use tapnet_nat::{Gateway, GatewayConfig, Outcome};
//! use tapnet_switch::MacAddr;
//!
//! let ip = Ipv4Addr::new(172, 17, 0, 1);
//! let mut gw = Gateway::new(GatewayConfig {
//!     mac: MacAddr::from_ipv4(ip),
//!     ip,
//!     prefix_len: 16,
//!     internal: false,
//! });
//! // 172.17.0.2 asks, by broadcast, who has 172.17.0.1.
//! let mut request = [0u8; 42];
//! request[..6].copy_from_slice(&[0xff; 6]);
//! request[6..12].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
//! request[12..14].copy_from_slice(&[0x08, 0x06]);
//! request[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
//! request[22..28].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
//! request[28..32].copy_from_slice(&[172, 17, 0, 2]);
//! request[38..42].copy_from_slice(&[172, 17, 0, 1]);
//! let mut out = [0u8; 1514];
//! assert_eq!(gw.handle(&request, &mut out), Outcome::Reply(42));
//! assert_eq!(&out[6..12], &[0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
//! assert_eq!(gw.counters().snapshot().arp_replies, 1);
//! ```

mod counters;
pub mod dns;
mod gateway;
pub mod icmp;
pub mod portspec;
pub mod relay;

pub use counters::{GatewayCounters, GatewayCountersSnapshot};
pub use gateway::{Gateway, GatewayConfig, GatewayDrop, Outcome};
