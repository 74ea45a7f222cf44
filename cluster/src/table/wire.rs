//! Wire format of the table messages: a 2-byte header (kind, format version) then a
//! `postcard` body. Decoding takes untrusted bytes and never panics: oversized,
//! truncated, unknown kind or version, trailing bytes and out-of-bounds fields are
//! each a [`DecodeError`] the caller counts.

use serde::{Deserialize, Serialize};

use super::types::{MAX_DATAGRAM, MAX_KEY_LEN, MAX_NET_LEN, MAX_VALUE_LEN, NodeKey, Version};

/// First byte of every table datagram. `0x01` is left to the membership (foca)
/// packets that share the gossip socket.
pub const KIND_TABLE: u8 = 0x02;
/// Second byte: the format version of the table messages this code speaks.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the header in front of the postcard body.
pub(crate) const HEADER_LEN: usize = 2;

/// Where a table message applies: the cluster-wide attachment table ("node X joined
/// network N", NetworkDB's node-network events) or one network's endpoint table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The cluster-wide table of network attachments: key = network name, a live
    /// entry means its owner is attached to that network.
    Cluster,
    /// One overlay network's endpoint table.
    Net(String),
}

/// One entry (or tombstone) as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The only node that writes this entry.
    pub owner: NodeKey,
    /// Endpoint id (at most [`MAX_KEY_LEN`] bytes).
    pub key: String,
    /// Version of this write.
    pub version: Version,
    /// The value, or `None` for a tombstone (at most [`MAX_VALUE_LEN`] bytes).
    pub value: Option<Vec<u8>>,
}

/// Anti-entropy summary of one owner's entries in one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDigest {
    /// The owner summarised.
    pub owner: NodeKey,
    /// Highest version held from this owner (entries and tombstones).
    pub max: Version,
    /// Order-independent 64-bit hash of the (key, version) pairs of the owner's live
    /// entries (see `store::pair_hash`).
    pub hash: u64,
}

/// A table message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Entries pushed by gossip (`sync == false`) or sent as an anti-entropy answer.
    Updates {
        /// Table the entries belong to.
        scope: Scope,
        /// Sent by anti-entropy (counted as sync bytes, not re-gossiped).
        sync: bool,
        /// The entries.
        entries: Vec<WireEntry>,
    },
    /// Anti-entropy digest of the owners in `lo..=hi` (a digest too big for one
    /// datagram is split in owner ranges).
    Digest {
        /// Table summarised.
        scope: Scope,
        /// Lowest owner covered.
        lo: NodeKey,
        /// Highest owner covered.
        hi: NodeKey,
        /// One summary per owner held in the range, sorted by owner.
        owners: Vec<OwnerDigest>,
    },
    /// Anti-entropy summary of a whole scope: what a node sends on its periodic
    /// sync. A peer whose summary differs answers with its full [`Msg::Digest`];
    /// one that agrees answers nothing. In steady state a sync then costs one small
    /// datagram instead of a digest whose size grows with the number of owners
    /// (35 bytes an owner: 17 datagrams a scope at 1,000 nodes).
    Summary {
        /// Table summarised.
        scope: Scope,
        /// Owners with live entries.
        owners: u32,
        /// Order-independent hash of the (owner, owner hash) pairs of those owners.
        hash: u64,
    },
    /// Answer to a digest: "send me your entries of these owners".
    Want {
        /// Table concerned.
        scope: Scope,
        /// Owners whose entries the sender asks for.
        owners: Vec<NodeKey>,
    },
}

/// Why a datagram could not be decoded. One counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram over {MAX_DATAGRAM} bytes")]
    Oversized,
    /// Shorter than the header, or the body ends early.
    #[error("truncated datagram")]
    Truncated,
    /// The kind byte is not [`KIND_TABLE`].
    #[error("not a table message")]
    UnknownKind,
    /// The format version is not [`FORMAT_VERSION`].
    #[error("unknown format version")]
    UnknownVersion,
    /// The body is not a valid message or a field is out of bounds.
    #[error("malformed table message")]
    Malformed,
    /// Bytes left after the message.
    #[error("trailing bytes after the message")]
    Trailing,
}

impl Msg {
    /// Encode with the header. The caller keeps each message under
    /// [`MAX_DATAGRAM`] (the packers in this module do).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![KIND_TABLE, FORMAT_VERSION];
        // Serialising to a Vec cannot fail for these types.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    fn check(&self) -> bool {
        let scope_ok = |s: &Scope| match s {
            Scope::Cluster => true,
            Scope::Net(n) => !n.is_empty() && n.len() <= MAX_NET_LEN,
        };
        match self {
            Msg::Updates { scope, entries, .. } => {
                scope_ok(scope)
                    && entries.iter().all(|e| {
                        e.key.len() <= MAX_KEY_LEN
                            && !e.key.is_empty()
                            && e.value.as_ref().is_none_or(|v| v.len() <= MAX_VALUE_LEN)
                    })
            }
            Msg::Digest {
                scope,
                lo,
                hi,
                owners,
            } => {
                scope_ok(scope)
                    && lo <= hi
                    && owners.windows(2).all(|w| w[0].owner < w[1].owner)
                    && owners.iter().all(|o| (*lo..=*hi).contains(&o.owner))
            }
            Msg::Want { scope, .. } | Msg::Summary { scope, .. } => scope_ok(scope),
        }
    }
}

/// Decode one datagram (untrusted bytes; never panics).
pub fn decode(bytes: &[u8]) -> Result<Msg, DecodeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::Oversized);
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if bytes[0] != KIND_TABLE {
        return Err(DecodeError::UnknownKind);
    }
    if bytes[1] != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion);
    }
    let (msg, rest) =
        postcard::take_from_bytes::<Msg>(&bytes[HEADER_LEN..]).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            _ => DecodeError::Malformed,
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing);
    }
    if !msg.check() {
        return Err(DecodeError::Malformed);
    }
    Ok(msg)
}

/// Encoded size of a message with these parts, to pack datagrams.
pub(crate) fn entry_len(e: &WireEntry) -> usize {
    postcard::experimental::serialized_size(e).unwrap_or(MAX_DATAGRAM)
}

/// Pack entries into `Updates` datagrams of at most [`MAX_DATAGRAM`] bytes.
pub(crate) fn pack_updates(scope: &Scope, sync: bool, entries: Vec<WireEntry>) -> Vec<Vec<u8>> {
    // Header + enum tag + scope + bool + vec length (≤ 5 bytes of varint).
    let base = HEADER_LEN
        + 1
        + postcard::experimental::serialized_size(scope).unwrap_or(MAX_DATAGRAM)
        + 1
        + 5;
    let mut out = Vec::new();
    let mut cur: Vec<WireEntry> = Vec::new();
    let mut len = base;
    for e in entries {
        let l = entry_len(&e);
        if !cur.is_empty() && len + l > MAX_DATAGRAM {
            out.push(
                Msg::Updates {
                    scope: scope.clone(),
                    sync,
                    entries: std::mem::take(&mut cur),
                }
                .encode(),
            );
            len = base;
        }
        len += l;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(
            Msg::Updates {
                scope: scope.clone(),
                sync,
                entries: cur,
            }
            .encode(),
        );
    }
    out
}

/// Pack a full digest (sorted by owner) into `Digest` datagrams covering
/// contiguous owner ranges that together cover every `u64`.
pub(crate) fn pack_digest(scope: &Scope, owners: &[OwnerDigest]) -> Vec<Vec<u8>> {
    // Header + tag + scope + lo + hi (≤ 10 each) + vec length; an owner ≤ 10+5+10+10.
    let base = HEADER_LEN
        + 1
        + postcard::experimental::serialized_size(scope).unwrap_or(MAX_DATAGRAM)
        + 20
        + 5;
    let per = (MAX_DATAGRAM - base) / 35;
    let mut out = Vec::new();
    let mut lo = 0u64;
    let chunks: Vec<&[OwnerDigest]> = if owners.is_empty() {
        vec![&[]]
    } else {
        owners.chunks(per).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let hi = if i + 1 == n {
            u64::MAX
        } else {
            c[c.len() - 1].owner
        };
        out.push(
            Msg::Digest {
                scope: scope.clone(),
                lo,
                hi,
                owners: c.to_vec(),
            }
            .encode(),
        );
        lo = hi.saturating_add(1);
    }
    out
}
