//! Who asked a query.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Who asked, and so where the answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Asker {
    /// A UDP query from this address and port.
    Udp(SocketAddrV4),
    /// A query on TCP connection `conn` (the caller's id of it) from address `src`.
    Tcp {
        /// The caller's id of the connection.
        conn: u64,
        /// The asker's address.
        src: Ipv4Addr,
    },
}

impl Asker {
    /// The asker's address.
    pub fn addr(&self) -> Ipv4Addr {
        match self {
            Asker::Udp(a) => *a.ip(),
            Asker::Tcp { src, .. } => *src,
        }
    }
}
