//! A virtual host: a smoltcp interface and its sockets on the host end of a memory port.

use std::collections::{BTreeSet, VecDeque};

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use tapnet_switch::{DomainId, MacAddr, PortId};

use super::link::{LinkFaults, Wire};
use crate::port::MemPeer;

/// What the rig knows about a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Name given to [`Rig::add_host`](super::Rig::add_host).
    pub name: String,
    /// Its address and prefix.
    pub cidr: Ipv4Cidr,
    /// Its default gateway, if it has one.
    pub gateway: Option<Ipv4Address>,
    /// Its MAC: `02:42` followed by the IPv4 address.
    pub mac: MacAddr,
    /// The network it is attached to (a bridge domain of its site's engine).
    pub net: DomainId,
    /// Its engine port.
    pub port: PortId,
    /// The site (engine) it is attached to.
    pub site: super::site_id::SiteId,
}

/// Most emptied buffers a host keeps for reuse.
const SPARE_MAX: usize = 256;

/// The smoltcp side of a host's wire: frames the link delivered, frames the stack sent.
pub(super) struct HostDevice {
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
    /// Emptied frame buffers, reused so a busy host does not allocate per frame.
    spare: Vec<Vec<u8>>,
    /// Buffers of frames the stack has consumed, moved to `spare` by [`HostDevice::reclaim`]
    /// (a receive token and its reply token cannot both borrow `spare`).
    used: Vec<Vec<u8>>,
    mtu: usize,
}

impl HostDevice {
    pub(super) fn new(ip_mtu: usize) -> HostDevice {
        HostDevice {
            rx: VecDeque::new(),
            tx: Vec::new(),
            spare: Vec::new(),
            used: Vec::new(),
            mtu: ip_mtu,
        }
    }

    /// An empty buffer for a frame.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Give back a frame buffer that is no longer needed.
    pub(super) fn recycle(&mut self, b: Vec<u8>) {
        if self.spare.len() < SPARE_MAX {
            self.spare.push(b);
        }
    }

    /// Move the buffers of consumed frames back to the spare list.
    pub(super) fn reclaim(&mut self) {
        while let Some(b) = self.used.pop() {
            self.recycle(b);
        }
    }
}

/// Receive token: one delivered frame.
pub(super) struct RxToken<'a> {
    frame: Vec<u8>,
    used: &'a mut Vec<Vec<u8>>,
}

/// Transmit token: appends a frame to the host's outgoing list.
pub(super) struct TxToken<'a> {
    tx: &'a mut Vec<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.frame);
        if self.used.len() < SPARE_MAX {
            self.used.push(self.frame);
        }
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        let r = f(&mut b);
        self.tx.push(b);
        r
    }
}

impl Device for HostDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        let HostDevice {
            tx, spare, used, ..
        } = self;
        Some((RxToken { frame, used }, TxToken { tx, spare }))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            spare: &mut self.spare,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// A host as the rig drives it.
pub(super) struct Host {
    pub(super) info: HostInfo,
    pub(super) iface: Interface,
    pub(super) sockets: SocketSet<'static>,
    pub(super) dev: HostDevice,
    pub(super) peer: MemPeer,
    pub(super) faults: LinkFaults,
    pub(super) cut: bool,
    pub(super) up: Wire,
    pub(super) down: Wire,
    /// Senders of ARP packets this host received (its neighbours, seen on the wire).
    pub(super) arp_from: BTreeSet<Ipv4Address>,
}

impl Host {
    pub(super) fn ip(&self) -> Ipv4Address {
        self.info.cidr.address()
    }

    /// Note the sender of an ARP packet aimed at this host, about to be handed to the
    /// stack (smoltcp fills its neighbour cache from exactly these).
    pub(super) fn snoop(&mut self, frame: &[u8]) {
        // Ethernet (14 bytes), then ARP for IPv4 over Ethernet (28): sender IP at ARP
        // offset 14, target IP at offset 24 (RFC 826).
        if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[38..42] == self.ip().octets()
        {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&frame[28..32]);
            self.arp_from.insert(Ipv4Address::from(ip));
        }
    }
}
