//! The few things about a DNS message the server reads and writes on the header's
//! bytes itself (RFC 1035 §4.1), next to `simple-dns`.
//!
//! `simple-dns` parses and builds whole messages, but cannot say where a message it
//! parsed ended (so trailing garbage would go unnoticed), nor build an answer to a
//! message it could not parse (FORMERR must still carry the query's id and opcode).
//! [`walk`] checks a message's layout without allocating and finds its question and
//! OPT record; [`short_reply`] writes a header with at most the question.

/// The length of a message header (RFC 1035 §4.1.1).
pub(crate) const HEADER_LEN: usize = 12;
/// QR: the message is a response.
pub(crate) const QR: u16 = 0x8000;
/// The OPCODE field.
pub(crate) const OPCODE_MASK: u16 = 0x7800;
/// TC: truncated.
pub(crate) const TC: u16 = 0x0200;
/// RD: recursion desired.
pub(crate) const RD: u16 = 0x0100;
/// RA: recursion available.
pub(crate) const RA: u16 = 0x0080;
/// RCODE FORMERR.
pub(crate) const FORMERR: u16 = 1;
/// RCODE SERVFAIL.
pub(crate) const SERVFAIL: u16 = 2;
/// RCODE NOTIMP.
pub(crate) const NOTIMP: u16 = 4;
/// RCODE REFUSED.
pub(crate) const REFUSED: u16 = 5;
/// The OPT pseudo-record's type (RFC 6891 §6.1.1).
const TYPE_OPT: u16 = 41;
/// The longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// A message's id. `msg` is at least a header long.
pub(crate) fn id(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// A message's flags (the header's second 16-bit word). `msg` is at least a header long.
pub(crate) fn flags(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[2], msg[3]])
}

/// What [`walk`] found in a well-laid-out message with one question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Where the question ends (it starts at [`HEADER_LEN`]).
    pub(crate) q_end: usize,
    /// Where the question's name ends (its type follows).
    pub(crate) name_end: usize,
    /// QTYPE.
    pub(crate) qtype: u16,
    /// QCLASS.
    pub(crate) qclass: u16,
    /// The requestor's UDP payload size of its OPT record, if it has one (RFC 6891
    /// §6.1.2).
    pub(crate) edns: Option<u16>,
}

/// The big-endian u16 at `at`, if there.
fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Checks that `msg` is a header, exactly one question whose name is uncompressed
/// (it is the first name of the message: a pointer could only point into the header),
/// then whole resource records and nothing after them; at most one OPT record.
/// Compression pointers in records are not followed here (`simple-dns` follows and
/// checks them).
pub(crate) fn walk(msg: &[u8]) -> Option<Shape> {
    if msg.len() < HEADER_LEN || u16_at(msg, 4)? != 1 {
        return None;
    }
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None; // a pointer or a reserved label type
        }
        at += 1 + len;
        if at - HEADER_LEN > MAX_NAME {
            return None;
        }
    }
    let name_end = at;
    let qtype = u16_at(msg, at)?;
    let qclass = u16_at(msg, at + 2)?;
    at += 4;
    let q_end = at;
    let records =
        u32::from(u16_at(msg, 6)?) + u32::from(u16_at(msg, 8)?) + u32::from(u16_at(msg, 10)?);
    let mut edns = None;
    for _ in 0..records {
        // The owner name: labels ending in the root or a pointer.
        loop {
            let len = *msg.get(at)?;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            if len > 63 {
                return None;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let rtype = u16_at(msg, at)?;
        let class = u16_at(msg, at + 2)?;
        let rdlen = usize::from(u16_at(msg, at + 8)?);
        at += 10 + rdlen;
        if at > msg.len() {
            return None;
        }
        if rtype == TYPE_OPT {
            if edns.is_some() {
                return None; // RFC 6891 §6.1.1: more than one OPT is FORMERR
            }
            edns = Some(class);
        }
    }
    (at == msg.len()).then_some(Shape {
        q_end,
        name_end,
        qtype,
        qclass,
        edns,
    })
}

/// The question's name of a message `walk` accepted, lowercase and dotted without the
/// trailing dot, into `out`; false if a label holds a dot or is not UTF-8 (no local
/// name is such).
pub(crate) fn lower_name(msg: &[u8], shape: &Shape, out: &mut String) -> bool {
    out.clear();
    let mut at = HEADER_LEN;
    while at + 1 < shape.name_end {
        let len = usize::from(msg[at]);
        let label = &msg[at + 1..at + 1 + len];
        if label.contains(&b'.') {
            return false;
        }
        let Ok(label) = std::str::from_utf8(label) else {
            return false;
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(label);
        at += 1 + len;
    }
    out.make_ascii_lowercase();
    true
}

/// A reply of a header and `question` (the question's bytes as in the query; empty
/// for none): id `id`, flags `flags`, no record.
pub(crate) fn short_reply(id: u16, flags: u16, question: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&u16::from(!question.is_empty()).to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(question);
    out
}

/// The flags of an answer to a query with flags `query` and RCODE `rcode`: QR, the
/// query's OPCODE and RD, RA.
pub(crate) fn reply_flags(query: u16, rcode: u16) -> u16 {
    QR | (query & (OPCODE_MASK | RD)) | RA | rcode
}

/// The address of a reverse name `d.c.b.a.in-addr.arpa` (lowercase, no trailing dot).
pub(crate) fn reverse_addr(name: &str) -> Option<std::net::Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = rest.split('.');
    for o in octets.iter_mut().rev() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| octets.into())
}
