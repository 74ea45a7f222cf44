//! Framing of membership datagrams.
//!
//! Every datagram of the cluster crate begins with a 1-byte kind and a 1-byte
//! format version; a membership datagram then has a 1-byte operation:
//!
//! | byte | value |
//! |---|---|
//! | 0 | [`KIND_MEMBERSHIP`] |
//! | 1 | [`VERSION`] |
//! | 2 | [`OP_FOCA`] (a foca packet follows, postcard) or [`OP_HELLO`] (a postcard [`NodeId`] follows) |
//!
//! `OP_HELLO` exists so that a node can join through a seed it knows only by
//! address: foca accepts an announce only when the destination identity has
//! the receiver's address *and* key, so the joiner says hello and the seed
//! answers with a foca announce to the joiner's full identity.

use super::NodeId;

/// Kind byte of a membership datagram (the per-network tables use another).
pub const KIND_MEMBERSHIP: u8 = 1;
/// Format version of membership datagrams.
pub const VERSION: u8 = 1;
/// Operation byte: a foca packet follows.
pub const OP_FOCA: u8 = 0;
/// Operation byte: a hello from a joining node follows (its [`NodeId`]).
pub const OP_HELLO: u8 = 1;
/// Bytes in front of the payload: kind, version, operation.
pub const HEADER_LEN: usize = 3;
/// Largest datagram the cluster crate sends or accepts (fits a 1,500-byte
/// underlay MTU after IPv4 and UDP headers, with room for an encryption
/// envelope later).
pub const MAX_DATAGRAM: usize = 1400;

/// Why a membership datagram was rejected. Each is a counter in
/// [`super::MemberStats`]; none changes the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// Shorter than the header, or a payload cut short.
    Truncated,
    /// The kind byte is not [`KIND_MEMBERSHIP`].
    UnknownKind,
    /// The version byte is not [`VERSION`].
    UnknownVersion,
    /// The operation byte is unknown.
    UnknownOp,
    /// The payload does not decode (postcard), or has trailing bytes.
    Malformed,
    /// The datagram claims to come from this node itself.
    FromOurselves,
    /// Foca refused it for another reason (a protocol error).
    Protocol,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 8] = [
        Reject::Oversized,
        Reject::Truncated,
        Reject::UnknownKind,
        Reject::UnknownVersion,
        Reject::UnknownOp,
        Reject::Malformed,
        Reject::FromOurselves,
        Reject::Protocol,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A checked membership datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A foca packet (not yet decoded).
    Foca(&'a [u8]),
    /// A hello from a joining node.
    Hello(NodeId),
}

/// Check the header of an untrusted datagram and split off its payload.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>, Reject> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Reject::Oversized);
    }
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(Reject::Truncated);
    };
    let [kind, version, op] = *header;
    if kind != KIND_MEMBERSHIP {
        return Err(Reject::UnknownKind);
    }
    if version != VERSION {
        return Err(Reject::UnknownVersion);
    }
    match op {
        OP_FOCA => Ok(Frame::Foca(payload)),
        OP_HELLO => match postcard::take_from_bytes::<NodeId>(payload) {
            Ok((id, [])) => Ok(Frame::Hello(id)),
            Ok(_) => Err(Reject::Malformed),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(Reject::Truncated),
            Err(_) => Err(Reject::Malformed),
        },
        _ => Err(Reject::UnknownOp),
    }
}

/// A datagram carrying `payload` after the header for `op`.
pub(crate) fn encode(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[KIND_MEMBERSHIP, VERSION, op]);
    out.extend_from_slice(payload);
    out
}

/// A hello datagram from `id`.
pub(crate) fn hello(id: &NodeId) -> Vec<u8> {
    let body = postcard::to_allocvec(id).unwrap_or_default();
    encode(OP_HELLO, &body)
}
