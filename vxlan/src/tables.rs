//! The per-VNI tables the control plane fills, and the two decisions the
//! datapath asks of them: where a local frame goes ([`Tables::egress`]) and
//! whether a datagram from the underlay is let in ([`Tables::ingress`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;

use tapnet_wire::arp::PACKET_LEN as ARP_LEN;
use tapnet_wire::ethernet::{self, EthernetFrame};
use tapnet_wire::ipv4::Ipv4Packet;
use tapnet_wire::vxlan::{Packet, VXLAN_HEADER_LEN, Vni};
use tapnet_wire::{MacAddr, ethertype};

use crate::arp;
use crate::drops::{RxDrop, TxDrop};

/// At most this many entries per VNI: the table is bounded whatever the
/// control plane sends.
pub const MAX_ENTRIES: usize = 65_536;

/// The 802.1Q TPID some equipment uses for an outer (service) tag, besides
/// 0x88a8.
const TPID_9100: u16 = 0x9100;

/// One remote endpoint on an overlay network: its MAC, its IPv4 address (for
/// proxy ARP; optional), and the VTEP (underlay IPv4 address) that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The endpoint's MAC: unicast and not all-zero.
    pub mac: MacAddr,
    /// The endpoint's IPv4 address on the overlay, answered by proxy ARP.
    pub ip: Option<Ipv4Addr>,
    /// The VTEP behind which the endpoint lives: a peer of the VNI.
    pub vtep: Ipv4Addr,
}

/// The tables of one VNI: entries by MAC, proxy-ARP addresses by IP, peer
/// VTEPs (sorted, deduplicated).
///
/// An IPv4 address belongs to at most one entry: an entry that claims an
/// address another entry holds takes it over (the other keeps its MAC and
/// VTEP, without an address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    vni: Vni,
    port: u32,
    peers: Vec<Ipv4Addr>,
    entries: HashMap<MacAddr, Entry>,
    neighbors: HashMap<Ipv4Addr, MacAddr>,
}

impl Network {
    fn new(vni: Vni, port: u32) -> Network {
        Network {
            vni,
            port,
            peers: Vec::new(),
            entries: HashMap::new(),
            neighbors: HashMap::new(),
        }
    }

    /// The network's VNI.
    pub fn vni(&self) -> Vni {
        self.vni
    }

    /// The engine's local port id of this network's overlay port.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The peer VTEPs, sorted, without duplicates.
    pub fn peers(&self) -> &[Ipv4Addr] {
        &self.peers
    }

    /// Whether `vtep` is a peer.
    pub fn is_peer(&self, vtep: Ipv4Addr) -> bool {
        self.peers.binary_search(&vtep).is_ok()
    }

    /// The entry of `mac`.
    pub fn entry(&self, mac: &MacAddr) -> Option<&Entry> {
        self.entries.get(mac)
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The MAC of the entry that holds `ip` (what proxy ARP answers).
    pub fn neighbor(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.neighbors.get(&ip).copied()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops `mac`'s address from the neighbor map, if `mac` holds it.
    fn forget_ip(&mut self, ip: Option<Ipv4Addr>, mac: MacAddr) {
        if let Some(ip) = ip {
            if self.neighbors.get(&ip) == Some(&mac) {
                self.neighbors.remove(&ip);
            }
        }
    }
}

/// Why the control plane's change to the [`Tables`] was refused. The tables
/// are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `add_vni` for a VNI already served.
    #[error("VNI {0} already exists on this engine")]
    VniExists(Vni),
    /// The VNI is not served by this engine.
    #[error("VNI {0} is not served by this engine")]
    UnknownVni(Vni),
    /// The VTEP is not a peer of the VNI.
    #[error("VTEP {vtep} is not a peer of VNI {vni}")]
    UnknownPeer {
        /// The network.
        vni: Vni,
        /// The VTEP.
        vtep: Ipv4Addr,
    },
    /// An entry's MAC must be a unicast address other than all-zero.
    #[error(
        "MAC {mac} cannot be an entry of VNI {vni}: multicast, broadcast and all-zero addresses are refused"
    )]
    NotUnicast {
        /// The network.
        vni: Vni,
        /// The refused address.
        mac: MacAddr,
    },
    /// The VNI already has [`MAX_ENTRIES`] entries.
    #[error(
        "VNI {vni} is full: it has {MAX_ENTRIES} entries, the most it may hold (MAC {mac} not added)"
    )]
    Full {
        /// The network.
        vni: Vni,
        /// The MAC that was not added.
        mac: MacAddr,
    },
    /// No entry of the VNI has the MAC.
    #[error("MAC {mac} is not an entry of VNI {vni}")]
    UnknownEntry {
        /// The network.
        vni: Vni,
        /// The MAC.
        mac: MacAddr,
    },
}

/// Where a frame from one of this engine's networks goes
/// ([`Tables::egress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress<'a> {
    /// Unicast to a known remote MAC: encapsulate to this VTEP.
    Encap(Ipv4Addr),
    /// An ARP request for an address a remote entry holds: answer it locally
    /// with this MAC ([`arp_reply`](crate::arp_reply); nothing crosses the
    /// underlay).
    ProxyArp(MacAddr),
    /// Broadcast or multicast (ARP for an unknown address included): one copy
    /// to each peer VTEP (head-end replication), never empty.
    Flood(&'a [Ipv4Addr]),
    /// Not sent.
    Drop(TxDrop),
}

/// What to do with a datagram from the underlay ([`Tables::ingress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// The inner frame is `datagram[inner]` (Ethernet onwards) for the network
    /// whose local overlay port is `port`.
    Local {
        /// The network.
        vni: Vni,
        /// Its local overlay port.
        port: u32,
        /// Where the inner frame is in the datagram.
        inner: Range<usize>,
    },
    /// Dropped, and why.
    Drop(RxDrop),
}

/// Every VNI this engine serves: an immutable snapshot value.
///
/// The engine keeps it behind an atomic pointer swap: the control path clones,
/// changes and publishes; the datapath only reads. Cloning is cheap (each
/// [`Network`] is behind an `Arc`; a change copies only the network it
/// touches).
#[derive(Clone, Debug, Default)]
pub struct Tables {
    nets: HashMap<Vni, Arc<Network>>,
}

impl Tables {
    /// An empty set of tables.
    pub fn new() -> Tables {
        Tables::default()
    }

    fn net_mut(&mut self, vni: Vni) -> Result<&mut Network, TableError> {
        self.nets
            .get_mut(&vni)
            .map(Arc::make_mut)
            .ok_or(TableError::UnknownVni(vni))
    }

    /// Serves `vni`, whose frames the engine's local port `port` (the
    /// network's overlay port) sends and receives. `VniExists` if served
    /// already.
    pub fn add_vni(&mut self, vni: Vni, port: u32) -> Result<(), TableError> {
        if self.nets.contains_key(&vni) {
            return Err(TableError::VniExists(vni));
        }
        self.nets.insert(vni, Arc::new(Network::new(vni, port)));
        Ok(())
    }

    /// Stops serving `vni`, with its peers and entries.
    pub fn remove_vni(&mut self, vni: Vni) -> Result<(), TableError> {
        self.nets
            .remove(&vni)
            .map(drop)
            .ok_or(TableError::UnknownVni(vni))
    }

    /// Adds `vtep` to the peers of `vni`; adding a peer twice is no error.
    pub fn add_peer(&mut self, vni: Vni, vtep: Ipv4Addr) -> Result<(), TableError> {
        let net = self.net_mut(vni)?;
        if let Err(at) = net.peers.binary_search(&vtep) {
            net.peers.insert(at, vtep);
        }
        Ok(())
    }

    /// Removes `vtep` from the peers of `vni`, and every entry behind it.
    /// `UnknownPeer` if it is not a peer.
    pub fn remove_peer(&mut self, vni: Vni, vtep: Ipv4Addr) -> Result<(), TableError> {
        let net = self.net_mut(vni)?;
        let at = net
            .peers
            .binary_search(&vtep)
            .map_err(|_| TableError::UnknownPeer { vni, vtep })?;
        net.peers.remove(at);
        net.entries.retain(|_, e| e.vtep != vtep);
        let Network {
            entries, neighbors, ..
        } = net;
        neighbors.retain(|_, mac| entries.contains_key(mac));
        Ok(())
    }

    /// Adds `e` to `vni`, replacing the entry of the same MAC. Refused if
    /// `e.vtep` is not a peer of `vni` (`UnknownPeer`), if `e.mac` is
    /// multicast, broadcast or all-zero (`NotUnicast`), or if it is a new MAC
    /// and the VNI holds [`MAX_ENTRIES`] already (`Full`). If another entry
    /// holds `e.ip`, `e` takes the address over.
    pub fn add_entry(&mut self, vni: Vni, e: Entry) -> Result<(), TableError> {
        let net = self.net_mut(vni)?;
        if !net.is_peer(e.vtep) {
            return Err(TableError::UnknownPeer { vni, vtep: e.vtep });
        }
        if e.mac.is_multicast() || e.mac.is_zero() {
            return Err(TableError::NotUnicast { vni, mac: e.mac });
        }
        match net.entries.get(&e.mac).copied() {
            Some(old) => net.forget_ip(old.ip, old.mac),
            None if net.entries.len() >= MAX_ENTRIES => {
                return Err(TableError::Full { vni, mac: e.mac });
            }
            None => {}
        }
        if let Some(ip) = e.ip {
            if let Some(holder) = net.neighbors.insert(ip, e.mac) {
                if holder != e.mac {
                    if let Some(other) = net.entries.get_mut(&holder) {
                        other.ip = None;
                    }
                }
            }
        }
        net.entries.insert(e.mac, e);
        Ok(())
    }

    /// Removes the entry of `mac` from `vni`. `UnknownEntry` if there is none.
    pub fn remove_entry(&mut self, vni: Vni, mac: MacAddr) -> Result<(), TableError> {
        let net = self.net_mut(vni)?;
        let old = net
            .entries
            .remove(&mac)
            .ok_or(TableError::UnknownEntry { vni, mac })?;
        net.forget_ip(old.ip, old.mac);
        Ok(())
    }

    /// The tables of `vni`.
    pub fn network(&self, vni: Vni) -> Option<&Arc<Network>> {
        self.nets.get(&vni)
    }

    /// Every VNI served, in no particular order.
    pub fn vnis(&self) -> impl Iterator<Item = Vni> {
        self.nets.keys().copied()
    }

    /// Where a frame from this engine's network `vni` goes (ownership of the
    /// bytes stays with the caller).
    ///
    /// In order: shorter than an Ethernet header → `Drop(Malformed)`; `vni`
    /// not served → `Drop(UnknownVni)`; an ARP request (untagged, IPv4 over
    /// Ethernet, broadcast or unicast) for an address an entry holds →
    /// `ProxyArp`; broadcast or multicast → `Flood(peers)`, or
    /// `Drop(NoPeers)` without peers; unicast to an entry → `Encap(its
    /// VTEP)`, else `Drop(UnknownUnicast)` (no flood-and-learn, RFC 7348 §4).
    /// The flood rate ([`FloodLimit`](crate::FloodLimit)) is the caller's.
    pub fn egress(&self, vni: Vni, frame: &[u8]) -> Egress<'_> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Egress::Drop(TxDrop::Malformed);
        };
        let Some(net) = self.nets.get(&vni) else {
            return Egress::Drop(TxDrop::UnknownVni);
        };
        if let Some(mac) = arp::request_target(frame).and_then(|ip| net.neighbor(ip)) {
            return Egress::ProxyArp(mac);
        }
        let dst = eth.dst_addr();
        if dst.is_multicast() {
            if net.peers.is_empty() {
                Egress::Drop(TxDrop::NoPeers)
            } else {
                Egress::Flood(&net.peers)
            }
        } else {
            match net.entries.get(&dst) {
                Some(e) => Egress::Encap(e.vtep),
                None => Egress::Drop(TxDrop::UnknownUnicast),
            }
        }
    }

    /// What to do with a datagram (UDP payload) that `from` sent to this
    /// engine's underlay socket.
    ///
    /// Checks, in order: the VXLAN header is there (`Short`) with its I flag
    /// (`NoVniFlag`; reserved bits are ignored, RFC 7348 §5); the VNI is served
    /// (`UnknownVni`) and `from` is one of its peers (`UnknownVtep`); the inner
    /// frame holds an Ethernet header, and an ARP packet for IPv4 over
    /// Ethernet or an IPv4 header, header length and total length as it says
    /// (`InnerTruncated`); it has no VLAN tag (`InnerVlan`, RFC 7348 §6.1);
    /// its source MAC is an entry of the VNI behind `from`, and when that entry
    /// has an address, the IPv4 source or ARP sender address is it
    /// (`SpoofedSource`).
    pub fn ingress(&self, from: Ipv4Addr, datagram: &[u8]) -> Ingress {
        match self.check_ingress(from, datagram) {
            Ok((vni, port)) => Ingress::Local {
                vni,
                port,
                inner: VXLAN_HEADER_LEN..datagram.len(),
            },
            Err(why) => Ingress::Drop(why),
        }
    }

    fn check_ingress(&self, from: Ipv4Addr, datagram: &[u8]) -> Result<(Vni, u32), RxDrop> {
        let vx = Packet::new_checked(datagram).map_err(|_| RxDrop::Short)?;
        if !vx.has_vni_flag() {
            return Err(RxDrop::NoVniFlag);
        }
        let vni = vx.vni();
        let net = self.nets.get(&vni).ok_or(RxDrop::UnknownVni)?;
        if !net.is_peer(from) {
            return Err(RxDrop::UnknownVtep);
        }
        let eth = EthernetFrame::new_checked(vx.payload()).map_err(|_| RxDrop::InnerTruncated)?;
        let l3 = &vx.payload()[ethernet::HEADER_LEN..];
        match u16::from(eth.ethertype()) {
            ethertype::ARP if l3.len() < ARP_LEN => return Err(RxDrop::InnerTruncated),
            ethertype::IPV4 if Ipv4Packet::new_checked(l3).is_err() => {
                return Err(RxDrop::InnerTruncated);
            }
            ethertype::VLAN | ethertype::QINQ | TPID_9100 => return Err(RxDrop::InnerVlan),
            _ => {}
        }
        let e = match net.entries.get(&eth.src_addr()) {
            Some(e) if e.vtep == from => e,
            _ => return Err(RxDrop::SpoofedSource),
        };
        // An entry with an address sends from it, as a local endpoint's port binding
        // requires: IPv4 source, or ARP sender (0.0.0.0 for a probe, RFC 5227).
        if let Some(ip) = e.ip {
            let src = match u16::from(eth.ethertype()) {
                ethertype::IPV4 => Some(Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15])),
                ethertype::ARP => Some(Ipv4Addr::new(l3[14], l3[15], l3[16], l3[17]))
                    .filter(|a| !a.is_unspecified()),
                _ => None,
            };
            if src.is_some_and(|s| s != ip) {
                return Err(RxDrop::SpoofedSource);
            }
        }
        Ok((vni, net.port))
    }
}
