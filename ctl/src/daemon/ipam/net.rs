//! An IPv4 prefix in CIDR notation, with the semantics of Go's `netip.Prefix`, which is
//! what Docker parses user input with: the address keeps any host bits it was given
//! (`172.30.0.1/16` parses, and validation then says "it should be 172.30.0.0/16").

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 address and a prefix length (0–32). Ordered like moby's `PrefixCompare`: by
/// address, then the shorter prefix first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

/// The text did not parse as `a.b.c.d/n` with `n` in 0–32.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR block notation: {0:?}")]
pub struct Ipv4NetParseError(pub String);

impl Ipv4Net {
    /// `addr/len`; `None` if `len` is over 32. Host bits are kept.
    pub const fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        Some(Self { addr, len })
    }

    /// The address as given (host bits included).
    pub const fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(self) -> u8 {
        self.len
    }

    /// The netmask as a number (`/16` is `0xffff_0000`).
    pub const fn mask_bits(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    /// The netmask as an address (`/16` is `255.255.0.0`).
    pub const fn netmask(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.mask_bits())
    }

    /// The same prefix with the host bits cleared.
    pub const fn masked(self) -> Self {
        Self {
            addr: self.network(),
            len: self.len,
        }
    }

    /// Whether the host bits are all clear.
    pub const fn is_masked(self) -> bool {
        self.addr.to_bits() & !self.mask_bits() == 0
    }

    /// The first address of the prefix (the network address).
    pub const fn network(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.addr.to_bits() & self.mask_bits())
    }

    /// The last address of the prefix (the IPv4 broadcast address).
    pub const fn last(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.addr.to_bits() | !self.mask_bits())
    }

    /// How many addresses the prefix spans (2^(32-len)).
    pub const fn size(self) -> u64 {
        1u64 << (32 - self.len as u32)
    }

    /// Whether `a` is inside the prefix.
    pub const fn contains(self, a: Ipv4Addr) -> bool {
        a.to_bits() & self.mask_bits() == self.addr.to_bits() & self.mask_bits()
    }

    /// Whether the two prefixes share any address.
    pub const fn overlaps(self, other: Ipv4Net) -> bool {
        // Two prefixes overlap iff one contains the other's network address; the
        // shorter one decides.
        let m = if self.len < other.len {
            self.mask_bits()
        } else {
            other.mask_bits()
        };
        self.addr.to_bits() & m == other.addr.to_bits() & m
    }

    /// `a`'s offset from the network address (its host part). Meaningful only when
    /// `self.contains(a)`.
    pub(crate) const fn offset_of(self, a: Ipv4Addr) -> u32 {
        a.to_bits().wrapping_sub(self.network().to_bits())
    }

    /// The address `offset` after the network address.
    pub(crate) const fn at(self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network().to_bits().wrapping_add(offset))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Net {
    type Err = Ipv4NetParseError;

    /// `a.b.c.d/n`: the address as `std` parses it (four decimal octets, no leading
    /// zeros), `n` decimal 0–32 without sign or leading zeros (as Go's
    /// `netip.ParsePrefix`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || Ipv4NetParseError(s.to_owned());
        let (a, n) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| err())?;
        let digits_ok = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        if !digits_ok {
            return Err(err());
        }
        let len: u8 = n.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ipv4Net;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 prefix such as \"172.17.0.0/16\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ipv4Net, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
