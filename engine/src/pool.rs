//! Preallocated packet buffers.
//!
//! Two size classes: *small* slots hold one MTU-sized frame, *large* slots hold a 64 KiB
//! TCP superframe handed over by a TAP with TSO. Giving every frame a 64 KiB slot would
//! cost 32× the memory; reading a TAP scatters into a small slot first and spills into a
//! large one only when the kernel hands over a superframe (see `port::tap`).
//!
//! Slots are preallocated in one zeroed allocation per class (untouched pages cost no
//! RSS), every slot has [`HEADROOM`] bytes in front of the frame so encapsulation headers
//! can be written in place, and free slots live on a lock-free queue. A [`Handle`] is a
//! `u32` index that is *not* `Clone`: whoever holds it owns the slot, which is what makes
//! [`BufferPool::get_mut`] sound without locks.

use std::cell::UnsafeCell;
use std::fmt;

use crossbeam_queue::ArrayQueue;
use tapnet_wire::VnetHdr;

/// Bytes reserved in front of every frame for headers written in place.
pub const HEADROOM: usize = 128;

/// Sizes and counts of the two slot classes.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Number of small slots.
    pub small_slots: u32,
    /// Bytes per small slot, headroom included.
    pub small_size: usize,
    /// Number of large slots.
    pub large_slots: u32,
    /// Bytes per large slot, headroom included.
    pub large_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            small_slots: 8192,
            small_size: 2048,
            large_slots: 256,
            // A 64 KiB IP packet, its Ethernet and 802.1Q headers, and the headroom.
            large_size: HEADROOM + 65536 + 64,
        }
    }
}

/// Which class a slot belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeClass {
    /// One MTU-sized frame.
    Small,
    /// A TCP superframe.
    Large,
}

const LARGE_BIT: u32 = 1 << 31;

/// Owning reference to one pool slot. Deliberately neither `Clone` nor `Copy`.
#[derive(PartialEq, Eq)]
pub struct Handle(u32);

impl Handle {
    /// The raw index (class bit included), for tracing.
    pub fn raw(&self) -> u32 {
        self.0
    }

    /// The class of the slot.
    pub fn class(&self) -> SizeClass {
        if self.0 & LARGE_BIT != 0 {
            SizeClass::Large
        } else {
            SizeClass::Small
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({:?}#{})", self.class(), self.0 & !LARGE_BIT)
    }
}

/// Per-packet metadata kept beside the slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    /// Offset of the first frame byte in the slot.
    pub head: u32,
    /// Frame length in bytes.
    pub len: u32,
    /// The virtio-net header the frame came with (offload state), forwarded unchanged
    /// between ports that accept it.
    pub vnet: VnetHdr,
    /// Port the frame arrived on.
    pub in_port: u32,
    /// Port the frame leaves by, set by the switch stage.
    pub out_port: u32,
}

struct Class {
    slot_size: usize,
    count: u32,
    /// Start of the slot memory; owned by `_mem`.
    base: *mut u8,
    _mem: Box<[u8]>,
    meta: Box<[UnsafeCell<Meta>]>,
    free: ArrayQueue<u32>,
}

impl Class {
    fn new(count: u32, slot_size: usize) -> Class {
        // vec![0; n] is a zeroed allocation: pages are only backed once written.
        let mut mem = vec![0u8; count as usize * slot_size].into_boxed_slice();
        let base = mem.as_mut_ptr();
        let meta = (0..count)
            .map(|_| UnsafeCell::new(Meta::default()))
            .collect();
        let free = ArrayQueue::new(count.max(1) as usize);
        for i in 0..count {
            let _ = free.push(i);
        }
        Class {
            slot_size,
            count,
            base,
            _mem: mem,
            meta,
            free,
        }
    }
}

/// The packet buffer pool shared by every worker of an engine.
pub struct BufferPool {
    small: Class,
    large: Class,
}

// SAFETY: slot memory and metadata are only reached through a `Handle`, which is unique
// (not Clone, only minted by `alloc`, only returned by `free`), so no two threads ever
// touch the same slot at once. The free lists are lock-free queues.
unsafe impl Sync for BufferPool {}
// SAFETY: as above; the raw base pointers point into boxed memory owned by the pool.
unsafe impl Send for BufferPool {}

/// A mutable view of one packet: its metadata and its whole slot.
pub struct PacketMut<'a> {
    /// The packet's metadata.
    pub meta: &'a mut Meta,
    /// The whole slot, headroom included.
    pub slot: &'a mut [u8],
}

impl PacketMut<'_> {
    /// The frame bytes.
    pub fn frame(&self) -> &[u8] {
        let h = self.meta.head as usize;
        &self.slot[h..h + self.meta.len as usize]
    }

    /// The frame bytes, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        let h = self.meta.head as usize;
        &mut self.slot[h..h + self.meta.len as usize]
    }

    /// Replace the frame with `bytes`, placed after the headroom. Returns false (and
    /// changes nothing) if it does not fit.
    pub fn set_frame(&mut self, bytes: &[u8]) -> bool {
        if HEADROOM + bytes.len() > self.slot.len() {
            return false;
        }
        self.slot[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        self.meta.head = HEADROOM as u32;
        self.meta.len = bytes.len() as u32;
        true
    }

    /// Room after the headroom.
    pub fn capacity(&self) -> usize {
        self.slot.len() - HEADROOM
    }
}

impl BufferPool {
    /// Allocate the pool (address space only; pages are touched as slots are used).
    pub fn new(cfg: PoolConfig) -> BufferPool {
        assert!(cfg.small_size > HEADROOM && cfg.large_size > cfg.small_size);
        assert!(cfg.small_slots < LARGE_BIT && cfg.large_slots < LARGE_BIT);
        BufferPool {
            small: Class::new(cfg.small_slots, cfg.small_size),
            large: Class::new(cfg.large_slots, cfg.large_size),
        }
    }

    fn class(&self, c: SizeClass) -> &Class {
        match c {
            SizeClass::Small => &self.small,
            SizeClass::Large => &self.large,
        }
    }

    /// Bytes a frame can have in a slot of class `c`.
    pub fn frame_capacity(&self, c: SizeClass) -> usize {
        self.class(c).slot_size - HEADROOM
    }

    /// The class that holds a frame of `len` bytes, if any.
    pub fn class_for(&self, len: usize) -> Option<SizeClass> {
        if len <= self.frame_capacity(SizeClass::Small) {
            Some(SizeClass::Small)
        } else if len <= self.frame_capacity(SizeClass::Large) {
            Some(SizeClass::Large)
        } else {
            None
        }
    }

    /// Take a free slot, its metadata reset (empty frame after the headroom).
    pub fn alloc(&self, c: SizeClass) -> Option<Handle> {
        let idx = self.class(c).free.pop()?;
        let h = Handle(match c {
            SizeClass::Small => idx,
            SizeClass::Large => idx | LARGE_BIT,
        });
        let class = self.class(c);
        // SAFETY: the index just came off the free list, so no handle to it exists.
        let meta = unsafe { &mut *class.meta[idx as usize].get() };
        *meta = Meta {
            head: HEADROOM as u32,
            ..Meta::default()
        };
        Some(h)
    }

    /// Take a slot big enough for `len` bytes.
    pub fn alloc_for(&self, len: usize) -> Option<Handle> {
        self.alloc(self.class_for(len)?)
    }

    /// Take a slot holding a copy of `frame` (metadata fresh).
    pub fn alloc_copy(&self, frame: &[u8]) -> Option<Handle> {
        let mut h = self.alloc_for(frame.len())?;
        self.get_mut(&mut h).set_frame(frame);
        Some(h)
    }

    /// Give a slot back.
    pub fn free(&self, h: Handle) {
        let (c, idx) = split(&h);
        // Cannot fail: the queue holds every slot of the class and this one is not on it.
        let _ = self.class(c).free.push(idx);
    }

    fn parts<'a>(&'a self, h: &'a Handle) -> (&'a Class, usize) {
        let (c, idx) = split(h);
        let class = self.class(c);
        debug_assert!(idx < class.count);
        (class, idx as usize)
    }

    /// Metadata of a packet.
    pub fn meta<'a>(&'a self, h: &'a Handle) -> &'a Meta {
        let (class, idx) = self.parts(h);
        // SAFETY: the caller holds the unique handle; shared borrow of it means no
        // mutable view of this slot exists (get_mut needs `&mut Handle`).
        unsafe { &*class.meta[idx].get() }
    }

    /// The frame bytes of a packet.
    pub fn frame<'a>(&'a self, h: &'a Handle) -> &'a [u8] {
        let (class, idx) = self.parts(h);
        let m = self.meta(h);
        // SAFETY: the slot lies inside the class allocation; the handle is unique and
        // borrowed shared, so nothing writes the slot meanwhile.
        let slot = unsafe {
            std::slice::from_raw_parts(class.base.add(idx * class.slot_size), class.slot_size)
        };
        &slot[m.head as usize..(m.head + m.len) as usize]
    }

    /// Mutable view of a packet: metadata and the whole slot.
    pub fn get_mut<'a>(&'a self, h: &'a mut Handle) -> PacketMut<'a> {
        let (class, idx) = self.parts(h);
        // SAFETY: `&mut Handle` proves exclusive ownership of the slot for the borrow's
        // lifetime; the range lies inside the class allocation.
        unsafe {
            PacketMut {
                meta: &mut *class.meta[idx].get(),
                slot: std::slice::from_raw_parts_mut(
                    class.base.add(idx * class.slot_size),
                    class.slot_size,
                ),
            }
        }
    }

    /// Free slots in each class.
    pub fn available(&self) -> PoolFree {
        PoolFree {
            small: self.small.free.len(),
            large: self.large.free.len(),
        }
    }
}

/// Free slots of a [`BufferPool`], per size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFree {
    /// Free small slots.
    pub small: usize,
    /// Free large slots.
    pub large: usize,
}

fn split(h: &Handle) -> (SizeClass, u32) {
    (h.class(), h.0 & !LARGE_BIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BufferPool {
        BufferPool::new(PoolConfig {
            small_slots: 4,
            small_size: 256,
            large_slots: 2,
            large_size: 4096,
        })
    }

    #[test]
    fn alloc_free_and_exhaustion() {
        let p = tiny();
        let hs: Vec<_> = (0..4).map(|_| p.alloc(SizeClass::Small).unwrap()).collect();
        assert!(p.alloc(SizeClass::Small).is_none());
        assert_eq!(p.available(), PoolFree { small: 0, large: 2 });
        for h in hs {
            p.free(h);
        }
        assert_eq!(p.available(), PoolFree { small: 4, large: 2 });
    }

    #[test]
    fn class_selection_and_copy() {
        let p = tiny();
        assert_eq!(p.class_for(128), Some(SizeClass::Small));
        assert_eq!(p.class_for(129), Some(SizeClass::Large));
        assert_eq!(p.class_for(5000), None);
        let big = vec![7u8; 3000];
        let h = p.alloc_copy(&big).unwrap();
        assert_eq!(h.class(), SizeClass::Large);
        assert_eq!(p.frame(&h), &big[..]);
        assert_eq!(p.meta(&h).head as usize, HEADROOM);
        p.free(h);
    }

    #[test]
    fn slots_do_not_overlap() {
        let p = tiny();
        let mut a = p.alloc(SizeClass::Small).unwrap();
        let mut b = p.alloc(SizeClass::Small).unwrap();
        p.get_mut(&mut a).set_frame(&[1; 128]);
        p.get_mut(&mut b).set_frame(&[2; 128]);
        assert!(p.frame(&a).iter().all(|&x| x == 1));
        assert!(p.frame(&b).iter().all(|&x| x == 2));
        assert!(!p.get_mut(&mut a).set_frame(&[0; 129]));
        p.free(a);
        p.free(b);
    }
}
