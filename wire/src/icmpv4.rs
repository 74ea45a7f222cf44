//! ICMP for IPv4 (RFC 792), echo request and echo reply in particular.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! |           Identifier          |        Sequence Number        |  (echo)
//! |     Data ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The view wraps exactly one ICMP message (the IPv4 payload, without the
//! Ethernet padding): the checksum covers the whole buffer.

use crate::checksum::{checksum, ones_complement_sum};
use crate::{WireError, read_u16, write_u16};

mod field {
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: usize = 2;
    pub(super) const ECHO_IDENT: usize = 4;
    pub(super) const ECHO_SEQNO: usize = 6;
    pub(super) const DATA: usize = 8;
}

/// Length of the ICMP header: type, code, checksum and the 4-byte
/// type-specific word (identifier and sequence number for echo).
pub const HEADER_LEN: usize = field::DATA;

/// IANA protocol number of ICMP, for IP headers.
pub const PROTOCOL: u8 = 1;

/// ICMP message types (RFC 792, IANA "ICMP Type Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Message {
    /// 0, echo reply.
    EchoReply,
    /// 3, destination unreachable.
    DstUnreachable,
    /// 8, echo request.
    EchoRequest,
    /// 11, time exceeded.
    TimeExceeded,
    /// Any other type.
    Unknown(u8),
}

impl From<u8> for Icmpv4Message {
    fn from(v: u8) -> Self {
        match v {
            0 => Icmpv4Message::EchoReply,
            3 => Icmpv4Message::DstUnreachable,
            8 => Icmpv4Message::EchoRequest,
            11 => Icmpv4Message::TimeExceeded,
            other => Icmpv4Message::Unknown(other),
        }
    }
}

impl From<Icmpv4Message> for u8 {
    fn from(m: Icmpv4Message) -> Self {
        match m {
            Icmpv4Message::EchoReply => 0,
            Icmpv4Message::DstUnreachable => 3,
            Icmpv4Message::EchoRequest => 8,
            Icmpv4Message::TimeExceeded => 11,
            Icmpv4Message::Unknown(v) => v,
        }
    }
}

/// A view of one ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if shorter than the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code (0 for echo).
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request and reply only).
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request and reply only).
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Everything after the 8-byte header (echo data).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the whole message sums to 0xffff, i.e. the stored checksum is
    /// right (RFC 792: the checksum covers the ICMP message; RFC 1071 §1).
    pub fn verify_checksum(&self) -> bool {
        ones_complement_sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, m: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = m.into();
    }

    /// Sets the message code.
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Stores `v` as the checksum (see [`fill_checksum`](Self::fill_checksum)).
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, v);
    }

    /// Mutable data (everything after the header).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// The meaning of the ICMPv4 messages tapnet handles: echo request and
/// reply. The data is borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    /// Type 8 (RFC 792 "Echo or Echo Reply Message").
    EchoRequest {
        /// Identifier, to match replies to requests.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data, returned unchanged in the reply.
        data: &'a [u8],
    },
    /// Type 0.
    EchoReply {
        /// Identifier of the request.
        ident: u16,
        /// Sequence number of the request.
        seq_no: u16,
        /// Data of the request.
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Validates and lifts a message: `Checksum` if the checksum does not
    /// verify, `Malformed` for an echo with a non-zero code, `Unsupported`
    /// for any other type.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv4Packet<&'a T>,
    ) -> Result<Icmpv4Repr<'a>, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::Checksum);
        }
        let data = &packet.buffer.as_ref()[field::DATA..];
        let (ident, seq_no) = (packet.echo_ident(), packet.echo_seq_no());
        match (packet.msg_type(), packet.msg_code()) {
            (Icmpv4Message::EchoRequest, 0) => Ok(Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }),
            (Icmpv4Message::EchoReply, 0) => Ok(Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            }),
            (Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply, _) => Err(WireError::Malformed),
            _ => Err(WireError::Unsupported),
        }
    }

    /// Bytes [`emit`](Self::emit) writes: the header and the data.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
        }
    }

    /// Writes the message with a correct checksum. The packet must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes long (the checksum covers the
    /// whole buffer); a longer one is checksummed with its tail included.
    ///
    /// # Panics
    /// If the packet is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (kind, ident, seq_no, data) = match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (Icmpv4Message::EchoRequest, ident, seq_no, data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (Icmpv4Message::EchoReply, ident, seq_no, data),
        };
        packet.set_msg_type(kind);
        packet.set_msg_code(0);
        packet.set_echo_ident(ident);
        packet.set_echo_seq_no(seq_no);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ping -c1 -p 61 -s 4 172.17.0.1` from a container: echo request id
    /// 0x1c2b, seq 1, data "aaaa". Checksum by hand: words 0x0800 + 0x1c2b +
    /// 0x0001 + 0x6161 + 0x6161 = 0xe6ee, complement 0x1911.
    const REQUEST: [u8; 12] = [
        0x08, 0x00, // echo request, code 0
        0x19, 0x11, // checksum
        0x1c, 0x2b, // identifier
        0x00, 0x01, // sequence number
        0x61, 0x61, 0x61, 0x61, // data
    ];

    /// The reply: type 0, so the sum drops by 0x0800 and the checksum rises
    /// by 0x0800 (RFC 1624): 0x2111.
    const REPLY: [u8; 12] = [
        0x00, 0x00, 0x21, 0x11, 0x1c, 0x2b, 0x00, 0x01, 0x61, 0x61, 0x61, 0x61,
    ];

    #[test]
    fn parse_known_bytes() {
        let p = Icmpv4Packet::new_checked(&REQUEST[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(p.checksum(), 0x1911);
        assert_eq!(p.data(), b"aaaa");
        assert_eq!(
            Icmpv4Repr::parse(&p),
            Ok(Icmpv4Repr::EchoRequest {
                ident: 0x1c2b,
                seq_no: 1,
                data: b"aaaa",
            })
        );
    }

    #[test]
    fn emit_round_trip() {
        let reply = Icmpv4Repr::EchoReply {
            ident: 0x1c2b,
            seq_no: 1,
            data: b"aaaa",
        };
        assert_eq!(reply.buffer_len(), 12);
        let mut buf = [0xeeu8; 12];
        reply.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REPLY);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Ok(reply));

        let request = Icmpv4Repr::EchoRequest {
            ident: 0x1c2b,
            seq_no: 1,
            data: b"aaaa",
        };
        request.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn odd_length_checksum() {
        let r = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 9,
            data: b"abc",
        };
        let mut buf = [0u8; 11];
        r.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Icmpv4Repr::parse(&p), Ok(r));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Icmpv4Packet::new_checked(&REQUEST[..7]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = REQUEST;
        bad[11] ^= 1;
        let p = Icmpv4Packet::new_unchecked(&bad[..]);
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Checksum));
        // Code 1 on an echo request.
        let mut code = REQUEST;
        let mut p = Icmpv4Packet::new_unchecked(&mut code[..]);
        p.set_msg_code(1);
        p.fill_checksum();
        let p = Icmpv4Packet::new_unchecked(&code[..]);
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Malformed));
        // Destination unreachable: well formed, not handled.
        let mut unreach = REQUEST;
        let mut p = Icmpv4Packet::new_unchecked(&mut unreach[..]);
        p.set_msg_type(Icmpv4Message::DstUnreachable);
        p.fill_checksum();
        let p = Icmpv4Packet::new_unchecked(&unreach[..]);
        assert_eq!(p.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Unsupported));
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut b = REQUEST;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_echo_ident(0xbeef);
        p.set_echo_seq_no(0x0102);
        p.data_mut()[0] = b'z';
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(&b[4..9], &[0xbe, 0xef, 0x01, 0x02, b'z']);
    }

    #[test]
    fn message_type_conversions() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Icmpv4Message::from(v)), v);
        }
        assert_eq!(Icmpv4Message::from(11), Icmpv4Message::TimeExceeded);
    }
}
