//! Shared pieces of tapnet's fuzz targets (`fuzz_targets/`): a reader that turns the
//! fuzzer's bytes into operations ([`Input`]), frame builders that keep addresses,
//! lengths and checksums right so that mutations reach the logic behind the parsers
//! ([`frames`]), a container-gateway-relay rig for the stateful relay targets
//! ([`rig`]), and the seed corpora ([`seeds`]).
//!
//! Nothing here is fuzzed itself; each target is one small file that documents what it
//! drives and which invariants it asserts.

pub mod frames;
pub mod rig;
pub mod seeds;

/// The fuzzer's bytes, read front to back as operations and their arguments. Reads past
/// the end yield zeros / empty slices, so every input is a valid program.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A chunk whose length is the next byte (0-255).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A chunk whose length is the next two bytes, at most `max`.
    pub fn long_chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()).min(max);
        self.bytes(n)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
