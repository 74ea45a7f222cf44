//! What the [`HostNet`](super::HostNet) handle tells the host thread.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;
use rtrb::{Consumer, Producer};
use tapnet_nat::dns::Names;
use tapnet_nat::relay::Relay;
use tapnet_switch::MacAddr;

use super::api::{HostListener, PublishId};
use super::splice::NsConnector;
use crate::pool::Handle;
use crate::wake::Notifier;

/// What the handle asks of the host thread. `done` is answered once the change is live.
pub(super) enum Ctl {
    /// Carry network `key` through `relay`; its subnet joins the isolation table.
    Attach {
        key: String,
        relay: Box<Relay>,
        to_engine: Producer<Handle>,
        from_engine: Consumer<Handle>,
        notifier: Arc<OnceLock<Notifier>>,
        done: Sender<()>,
    },
    /// Network `key` (one without a relay) has subnet `addr/prefix`.
    Isolate {
        key: String,
        addr: Ipv4Addr,
        prefix: u8,
        done: Sender<()>,
    },
    /// Forget network `key`: its subnet, and its relay, flows and published ports.
    Detach { key: String, done: Sender<()> },
    /// Carry what reaches `listener` to `ctr` on network `key`; loopback TCP clients
    /// through `splice`'s namespace where given.
    Publish {
        key: String,
        id: PublishId,
        listener: HostListener,
        ctr: SocketAddrV4,
        splice: Option<Arc<NsConnector>>,
    },
    /// Network `key`'s endpoint `ip` has MAC `mac` (`None`: the endpoint is gone).
    Endpoint {
        key: String,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
        done: Sender<()>,
    },
    /// Close a published port.
    Unpublish(PublishId),
    /// Every network's DNS server answers from `names` from now on.
    Names { names: Arc<Names>, done: Sender<()> },
    /// Close everything and end the thread.
    Stop,
}
