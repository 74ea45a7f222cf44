//! Synchronous rtnetlink: links, addresses and routes, without tokio and without running
//! `ip`.
//!
//! A [`Netlink`] talks to the kernel of the network namespace its socket was opened in.
//! To configure a sandbox, open it inside the namespace ([`Netlink::open_in`], or
//! [`Netlink::open`] within [`NetNs::run`]); it then keeps acting on that namespace from
//! any thread.
//!
//! Every request carries `NLM_F_ACK`; the reply is read up to the acknowledgement (or the
//! end of a multi-part dump), and an `NLMSG_ERROR` becomes [`NetlinkError::Kernel`].

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;

use crate::sys::netns::{NetNs, NetnsError};

/// Receive buffer size: larger than any single rtnetlink datagram the kernel sends
/// (dumps are cut into datagrams of at most 32 KiB).
const RECV_BUF_LEN: usize = 64 * 1024;

/// How often an interrupted dump (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 5;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute with the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Errors of netlink configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The `NETLINK_ROUTE` socket could not be opened or bound.
    #[error("could not open a NETLINK_ROUTE socket")]
    Socket {
        /// The failing system call's error.
        #[source]
        source: io::Error,
    },
    /// Sending a request or receiving its reply failed.
    #[error("netlink {op}: sending the request or receiving the reply failed")]
    Io {
        /// The operation, e.g. `"set_mtu"`.
        op: &'static str,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (an `NLMSG_ERROR` with a non-zero code).
    #[error("netlink {op} failed: {errno}{}", errno_hint(.errno))]
    Kernel {
        /// The operation, e.g. `"set_mtu"`.
        op: &'static str,
        /// The error the kernel returned.
        errno: Errno,
    },
    /// The kernel's reply could not be parsed.
    #[error("netlink {op}: could not parse the kernel's reply")]
    Decode {
        /// The operation.
        op: &'static str,
        /// The parser's error.
        #[source]
        source: DecodeError,
    },
    /// The reply lacked something the request must produce (e.g. a link without index).
    #[error("netlink {op}: the kernel's reply lacks {what}")]
    MissingReply {
        /// The operation.
        op: &'static str,
        /// What was missing.
        what: &'static str,
    },
    /// An argument was rejected before anything was sent.
    #[error("netlink {op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to pass instead.
        reason: &'static str,
    },
    /// Entering the namespace to open the socket in failed.
    #[error("could not enter the network namespace to open a netlink socket in")]
    Netns {
        /// The namespace error.
        #[source]
        source: NetnsError,
    },
}

/// A hint on what to do for common kernel errors, appended to [`NetlinkError::Kernel`].
fn errno_hint(errno: &Errno) -> &'static str {
    match errno {
        Errno::EPERM | Errno::EACCES => " (run as root: CAP_NET_ADMIN in the namespace)",
        Errno::ENODEV => " (no such interface in this network namespace)",
        Errno::EEXIST => " (it already exists)",
        Errno::EOPNOTSUPP => " (the kernel lacks this feature or driver)",
        _ => "",
    }
}

/// One interface, as the kernel reports it (`RTM_GETLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// Hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// Transmit queue length in packets.
    pub txqueuelen: Option<u32>,
    /// Index of the bridge (or bond) it is enslaved to.
    pub master: Option<u32>,
    /// Driver kind (`"veth"`, `"bridge"`, `"tun"`, …); `None` for e.g. `lo`.
    pub kind: Option<String>,
}

/// One route of the main table (`RTM_GETROUTE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination and prefix length; `None` for a default route.
    pub dest: Option<(IpAddr, u8)>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub oif: Option<u32>,
}

/// A synchronous rtnetlink connection to the kernel of one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let err = |source| NetlinkError::Socket { source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        // Error replies then carry only the request's header, plus the kernel's text.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    /// Opens a `NETLINK_ROUTE` socket inside `ns`; the returned connection configures
    /// that namespace, from whichever thread uses it.
    pub fn open_in(ns: &NetNs) -> Result<Netlink, NetlinkError> {
        ns.run(Netlink::open)
            .map_err(|source| NetlinkError::Netns { source })?
    }

    /// The index of the interface called `name` (`ENODEV` if there is none).
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link_by_name(name)?.index)
    }

    /// Everything [`Link`] shows about the interface `ifindex`.
    pub fn link(&mut self, ifindex: u32) -> Result<Link, NetlinkError> {
        const OP: &str = "link";
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        self.get_link(OP, msg)
    }

    /// Everything [`Link`] shows about the interface called `name`.
    pub fn link_by_name(&mut self, name: &str) -> Result<Link, NetlinkError> {
        const OP: &str = "link_index";
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(OP, msg)
    }

    /// Every interface of the namespace (`ip link show`).
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        const OP: &str = "links";
        let replies = self.dump(OP, || RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(link_from(m)),
                _ => None,
            })
            .collect())
    }

    /// Sets the interface administratively up (`ip link set up`). `set_up(1)` brings up
    /// `lo`, which is index 1 in every namespace.
    pub fn set_up(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        self.set_link("set_up", ifindex, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Sets the interface administratively down.
    pub fn set_down(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        self.set_link("set_down", ifindex, |m| {
            m.header.flags = LinkFlags::empty();
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link("set_mtu", ifindex, |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        self.set_link("set_mac", ifindex, |m| {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()))
        })
    }

    /// Sets the transmit queue length in packets (`ip link set txqueuelen`). A TAP's
    /// queue must hold the advertised TCP window (docs/architecture.md, "Why it is built this way").
    pub fn set_txqueuelen(&mut self, ifindex: u32, qlen: u32) -> Result<(), NetlinkError> {
        self.set_link("set_txqueuelen", ifindex, |m| {
            m.attributes.push(LinkAttribute::TxQueueLen(qlen))
        })
    }

    /// Adds `addr/prefix_len` to the interface (`ip addr add`). IPv4 addresses get the
    /// subnet's broadcast address (for prefixes up to /30), like Docker's; loopback and
    /// link-local addresses get host and link scope, like iproute2's. `EEXIST` if the
    /// address is already there.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        const OP: &str = "add_address";
        check_prefix(OP, addr, prefix_len)?;
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = prefix_len;
        msg.header.index = ifindex;
        msg.header.scope = address_scope(addr);
        match addr {
            IpAddr::V4(v4) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes.push(AddressAttribute::Local(addr));
                msg.attributes.push(AddressAttribute::Address(addr));
                if prefix_len < 31 {
                    let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
                    let brd = Ipv4Addr::from(u32::from(v4) | host_mask);
                    msg.attributes.push(AddressAttribute::Broadcast(brd));
                }
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.attributes.push(AddressAttribute::Address(addr));
            }
        }
        self.request(
            OP,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The addresses (with prefix lengths) of interface `ifindex`, IPv4 and IPv6.
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        const OP: &str = "addresses";
        let replies = self.dump(OP, || {
            RouteNetlinkMessage::GetAddress(AddressMessage::default())
        })?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if msg.header.index != ifindex {
                continue;
            }
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    // IFA_LOCAL is the interface's own address; IFA_ADDRESS may be a peer.
                    AddressAttribute::Local(a) => address = Some(*a),
                    AddressAttribute::Address(a) if address.is_none() => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(a) = address {
                out.push((a, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Adds a route to the main table (`ip route add`): to `dest` (`None` = default
    /// route), via `gateway` if given, out of `ifindex` (0 = let the kernel choose from the
    /// gateway). Without a gateway the route is on-link. A default route without gateway
    /// is IPv4. The destination must have no host bits set (`EINVAL` otherwise); `EEXIST`
    /// if the route exists.
    pub fn add_route(
        &mut self,
        dest: Option<(IpAddr, u8)>,
        gateway: Option<IpAddr>,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        const OP: &str = "add_route";
        let v6 = match (dest, gateway) {
            (Some((d, _)), Some(g)) if d.is_ipv6() != g.is_ipv6() => {
                return Err(NetlinkError::InvalidArgument {
                    op: OP,
                    reason: "destination and gateway are of different IP versions",
                });
            }
            (Some((d, _)), _) => d.is_ipv6(),
            (None, Some(g)) => g.is_ipv6(),
            (None, None) => false,
        };
        if let Some((d, len)) = dest {
            check_prefix(OP, d, len)?;
        }
        if gateway.is_none() && ifindex == 0 {
            return Err(NetlinkError::InvalidArgument {
                op: OP,
                reason: "a route needs a gateway or an interface (ifindex 0 given without gateway)",
            });
        }
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        // iproute2's choice: on-link IPv4 routes have link scope, everything else universe.
        msg.header.scope = if gateway.is_none() && !v6 {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if let Some((d, len)) = dest {
            msg.header.destination_prefix_length = len;
            if len > 0 {
                msg.attributes
                    .push(RouteAttribute::Destination(RouteAddress::from(d)));
            }
        }
        if let Some(g) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        if ifindex != 0 {
            msg.attributes.push(RouteAttribute::Oif(ifindex));
        }
        self.request(
            OP,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes the IPv4 default route of the main table (`ip route del default`).
    /// Returns false if there was none.
    pub fn delete_default_route(&mut self) -> Result<bool, NetlinkError> {
        const OP: &str = "delete_default_route";
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.scope = RouteScope::NoWhere;
        msg.header.destination_prefix_length = 0;
        match self.request(OP, RouteNetlinkMessage::DelRoute(msg), 0) {
            Ok(_) => Ok(true),
            Err(NetlinkError::Kernel {
                errno: Errno::ESRCH,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The unicast routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        const OP: &str = "routes";
        let replies = self.dump(
            OP,
            || RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(msg) = reply else {
                continue;
            };
            let mut table = u32::from(msg.header.table);
            let (mut dest, mut gateway, mut oif) = (None, None, None);
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(a) => dest = route_ip(a),
                    RouteAttribute::Gateway(a) => gateway = route_ip(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || msg.header.kind != RouteType::Unicast
            {
                continue;
            }
            let dest = dest.map(|d| (d, msg.header.destination_prefix_length));
            out.push(Route { dest, gateway, oif });
        }
        Ok(out)
    }

    /// Deletes the interface (`ip link del`); deleting one end of a veth pair deletes both.
    pub fn delete_link(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        self.request("delete_link", RouteNetlinkMessage::DelLink(msg), 0)
            .map(drop)
    }

    /// Creates a veth pair `name` ↔ `peer`, both in this namespace and down (the kernel
    /// baseline of the perf suite).
    pub fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let info = vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ];
        self.new_link("add_veth", name, info)
    }

    /// Creates a Linux bridge `name`, down (the kernel baseline of the perf suite).
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.new_link("add_bridge", name, vec![LinkInfo::Kind(InfoKind::Bridge)])
    }

    /// Enslaves the interface to the bridge `master` (`ip link set master`); `master` 0
    /// releases it (`nomaster`).
    pub fn set_master(&mut self, ifindex: u32, master: u32) -> Result<(), NetlinkError> {
        self.set_link("set_master", ifindex, |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// Moves the interface into the namespace `ns_fd` (`ip link set netns`). It goes down
    /// and loses its addresses; its index there is usually, but not always, the same.
    pub fn move_to_netns(
        &mut self,
        ifindex: u32,
        ns_fd: BorrowedFd<'_>,
    ) -> Result<(), NetlinkError> {
        self.set_link("move_to_netns", ifindex, |m| {
            m.attributes.push(LinkAttribute::NetNsFd(ns_fd.as_raw_fd()))
        })
    }

    fn set_link(
        &mut self,
        op: &'static str,
        ifindex: u32,
        fill: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), NetlinkError> {
        if ifindex == 0 {
            return Err(NetlinkError::InvalidArgument {
                op,
                reason: "ifindex 0 names no interface",
            });
        }
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        fill(&mut msg);
        self.request(op, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }

    fn new_link(
        &mut self,
        op: &'static str,
        name: &str,
        info: Vec<LinkInfo>,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(
            op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn get_link(&mut self, op: &'static str, msg: LinkMessage) -> Result<Link, NetlinkError> {
        let replies = self.request(op, RouteNetlinkMessage::GetLink(msg), 0)?;
        let msg = replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(m),
                _ => None,
            })
            .ok_or(NetlinkError::MissingReply {
                op,
                what: "the link (RTM_NEWLINK)",
            })?;
        Ok(link_from(msg))
    }

    /// Sends a dump request and collects every part; retries when the kernel reports
    /// that the dump was interrupted by a concurrent change.
    fn dump(
        &mut self,
        op: &'static str,
        make: impl Fn() -> RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_RETRIES {
            let (replies, interrupted) = self.exchange(op, make(), NLM_F_DUMP)?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(NetlinkError::Kernel {
            op,
            errno: Errno::EINTR,
        })
    }

    /// Sends one request and returns the messages of its reply.
    fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(op, msg, flags).map(|(replies, _)| replies)
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and reads until the
    /// acknowledgement, an error or the end of a dump. Returns the reply messages and
    /// whether a dump was interrupted.
    fn exchange(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        let io = |source| NetlinkError::Io { op, source };
        self.socket.send(&out, 0).map_err(io)?;

        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            self.buf.clear();
            let n = match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            if n > self.buf.len() {
                let source = io::Error::other(format!(
                    "a {n}-byte reply exceeds the {}-byte receive buffer",
                    self.buf.len()
                ));
                return Err(io(source));
            }
            let mut rest = &self.buf[..n];
            while !rest.is_empty() {
                let len = NetlinkBuffer::new_checked(rest)
                    .map_err(|source| NetlinkError::Decode { op, source })?
                    .length() as usize;
                let (this, next) = rest.split_at(len.min(rest.len()));
                rest = next.get(align4(len) - len..).unwrap_or_default();
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(this)
                    .map_err(|source| NetlinkError::Decode { op, source })?;
                if msg.header.sequence_number != seq {
                    // A late reply to an earlier request that failed half-way.
                    continue;
                }
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Error(e) => {
                        let Some(code) = e.code else {
                            return Ok((replies, interrupted));
                        };
                        let errno = Errno::from_raw(code.get().saturating_neg());
                        if let Some(text) = ext_ack_text(&e.header) {
                            tracing::debug!(op, %errno, kernel = %text, "netlink request refused");
                        }
                        return Err(NetlinkError::Kernel { op, errno });
                    }
                    NetlinkPayload::Done(d) => {
                        if d.code != 0 {
                            let errno = Errno::from_raw(d.code.saturating_neg());
                            return Err(NetlinkError::Kernel { op, errno });
                        }
                        return Ok((replies, interrupted));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The kernel's error text from the extended ack after the echoed request header (we set
/// `NETLINK_CAP_ACK`, so only the 16-byte header is echoed).
fn ext_ack_text(payload: &[u8]) -> Option<String> {
    let tlvs = payload.get(16..)?;
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            let v = v.split(|&b| b == 0).next().unwrap_or(v);
            String::from_utf8_lossy(v).into_owned()
        })
}

fn check_prefix(op: &'static str, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NetlinkError::InvalidArgument {
            op,
            reason: "prefix length too long (at most 32 for IPv4, 128 for IPv6)",
        });
    }
    Ok(())
}

/// iproute2's default scope for an address.
fn address_scope(addr: IpAddr) -> AddressScope {
    match addr {
        IpAddr::V4(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => AddressScope::Link,
        _ => AddressScope::Universe,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
        mac: None,
        txqueuelen: None,
        master: None,
        kind: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Address(a) => link.mac = a.try_into().ok(),
            LinkAttribute::TxQueueLen(q) => link.txqueuelen = Some(q),
            LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests;
