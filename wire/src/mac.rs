//! Ethernet (IEEE 802 48-bit) addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address, in transmission byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, which is never a valid source (IEEE 802-2014 §8.2).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address Docker gives a container on a bridge network:
    /// `02:42` (locally administered, unicast) followed by the IPv4 address.
    pub const fn from_ipv4(ip: Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// The address in the first six bytes of `bytes`, if there are six.
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// The six address bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is `ff:ff:ff:ff:ff:ff`.
    pub const fn is_broadcast(&self) -> bool {
        u64_of(self.0) == 0xffff_ffff_ffff
    }

    /// Whether the I/G (group) bit, the least significant bit of the first
    /// octet, is set. Broadcast is a multicast address.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address: the group bit is clear.
    ///
    /// `00:00:00:00:00:00` counts as unicast here; see [`MacAddr::is_zero`].
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether this is `00:00:00:00:00:00`.
    pub const fn is_zero(&self) -> bool {
        u64_of(self.0) == 0
    }

    /// Whether the U/L bit is set (a locally administered address, such as
    /// Docker's `02:42:…`).
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The address as the low 48 bits of a `u64` (first octet most significant).
    pub const fn to_u64(&self) -> u64 {
        u64_of(self.0)
    }
}

const fn u64_of(b: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// A string that is not a MAC address in `xx:xx:xx:xx:xx:xx` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six hex octets separated by ':', like 02:42:ac:11:00:02"
)]
pub struct MacParseError {
    /// The text that failed to parse.
    pub input: String,
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Parses six colon-separated hex octets (`02:42:ac:11:00:02`), one or two
    /// digits each, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        let v6mcast = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        assert!(v6mcast.is_multicast());
        let docker = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert!(docker.is_unicast() && docker.is_local() && !docker.is_multicast());
        assert!(MacAddr::ZERO.is_zero() && MacAddr::ZERO.is_unicast());
        assert_eq!(docker.to_u64(), 0x0242_ac11_0002);
    }

    #[test]
    fn from_ipv4() {
        let m = MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(m, MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
    }

    #[test]
    fn display_and_parse_round_trip() {
        let m = MacAddr([0xde, 0xad, 0xbe, 0xef, 0x00, 0x0a]);
        assert_eq!(m.to_string(), "de:ad:be:ef:00:0a");
        assert_eq!(format!("{m:?}"), "MacAddr(de:ad:be:ef:00:0a)");
        assert_eq!("de:ad:be:ef:00:0a".parse::<MacAddr>(), Ok(m));
        assert_eq!("DE:AD:BE:EF:0:A".parse::<MacAddr>(), Ok(m));
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:00:",
            "02-42-ac-11-00-02",
            "02:42:ac:11:00:002",
            "02:42:ac:11:00:+2",
            "g2:42:ac:11:00:02",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.input, bad);
        }
    }

    #[test]
    fn from_bytes() {
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(
            MacAddr::from_bytes(&[1, 2, 3, 4, 5, 6, 7]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
    }
}
