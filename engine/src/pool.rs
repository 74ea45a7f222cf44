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
//!
//! Large slots are few (256 by default) and every network's ports draw on them, so one
//! port must not hold them all: a port that receives a superframe or a jumbo frame
//! charges its slot to its [`ShareAccount`], and an account holds at most its share
//! ([`BufferPool::large_share`]) at once. A frame beyond the share is dropped by the port
//! (`rx_pool_share_drops`), and the other ports still find slots.

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_queue::ArrayQueue;
use tapnet_wire::VnetHdr;

/// Bytes reserved in front of every frame for headers written in place.
pub const HEADROOM: usize = 128;

/// Default floor of a port's share of the large slots: however many ports share the
/// pool, each may hold at least this many large slots at once (see
/// [`BufferPool::large_share`]). Eight 64 KiB superframes in flight keep one TCP flow
/// near line rate between two TAPs.
pub const LARGE_SHARE_FLOOR: u32 = 8;

/// Share accounts a pool tracks one by one ([`BufferPool::open_account`]); ports beyond
/// that many share the last account, and so one share between them.
pub const MAX_SHARE_ACCOUNTS: usize = 1024;

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

/// Large slots held per share account.
struct Shares {
    /// Large slots each account holds now.
    held: Box<[AtomicU32]>,
    /// Whether each account has an owner.
    open: Box<[AtomicBool]>,
    /// Owners of accounts now (the last account may have several).
    owners: AtomicU32,
}

impl Shares {
    fn new() -> Shares {
        Shares {
            held: (0..MAX_SHARE_ACCOUNTS).map(|_| AtomicU32::new(0)).collect(),
            open: (0..MAX_SHARE_ACCOUNTS)
                .map(|_| AtomicBool::new(false))
                .collect(),
            owners: AtomicU32::new(0),
        }
    }
}

/// A port's account of the large slots it holds (see [`BufferPool::charge`]). Closed
/// when dropped; its index is reused once every slot charged to it is back.
pub struct ShareAccount {
    shares: Arc<Shares>,
    index: usize,
}

impl fmt::Debug for ShareAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareAccount({})", self.index)
    }
}

impl ShareAccount {
    /// Large slots charged to this account and not yet freed.
    pub fn held(&self) -> u32 {
        self.shares.held[self.index].load(Ordering::Relaxed)
    }
}

impl Drop for ShareAccount {
    fn drop(&mut self) {
        self.shares.owners.fetch_sub(1, Ordering::Relaxed);
        if self.index + 1 < MAX_SHARE_ACCOUNTS {
            self.shares.open[self.index].store(false, Ordering::Release);
        }
    }
}

/// The packet buffer pool shared by every worker of an engine.
pub struct BufferPool {
    small: Class,
    large: Class,
    /// Per large slot: the account it is charged to, plus one (0: none).
    charged: Box<[AtomicU32]>,
    shares: Arc<Shares>,
    large_share_floor: u32,
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
            charged: (0..cfg.large_slots).map(|_| AtomicU32::new(0)).collect(),
            shares: Arc::new(Shares::new()),
            large_share_floor: LARGE_SHARE_FLOOR,
        }
    }

    /// The same pool with another floor for the share of large slots (default
    /// [`LARGE_SHARE_FLOOR`]; see [`BufferPool::large_share`]).
    pub fn with_large_share_floor(mut self, floor: u32) -> BufferPool {
        self.large_share_floor = floor.max(1);
        self
    }

    /// Opens a share account for a port (see [`BufferPool::charge`]).
    pub fn open_account(&self) -> ShareAccount {
        let shares = &self.shares;
        let last = MAX_SHARE_ACCOUNTS - 1;
        let index = (0..last)
            .find(|&i| {
                if shares.held[i].load(Ordering::Acquire) != 0 {
                    return false;
                }
                shares.open[i]
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .unwrap_or(last);
        shares.owners.fetch_add(1, Ordering::Relaxed);
        ShareAccount {
            shares: shares.clone(),
            index,
        }
    }

    /// Large slots one account may hold at once: `max(floor, large_slots / (owners + 1))`,
    /// at most every large slot. Dividing by one more than the accounts open leaves a
    /// share free for a port that opens one next, and for the receive stages' spares;
    /// past `large_slots / floor` ports the floor wins and the shares may add up to more
    /// than the pool.
    pub fn large_share(&self) -> u32 {
        let owners = self.shares.owners.load(Ordering::Relaxed);
        (self.large.count / (owners + 1))
            .max(self.large_share_floor)
            .min(self.large.count)
    }

    /// Charges large slot `h` to `account`, unless the account holds its share already
    /// (then false, and the caller drops the frame). A small slot is never charged (true).
    /// The charge ends when the slot is freed, by whoever frees it.
    pub fn charge(&self, h: &Handle, account: &ShareAccount) -> bool {
        let (c, idx) = split(h);
        if c == SizeClass::Small {
            return true;
        }
        debug_assert!(Arc::ptr_eq(&account.shares, &self.shares));
        let share = self.large_share();
        let held = &self.shares.held[account.index];
        if held
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < share).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        let old = self.charged[idx as usize].swap(account.index as u32 + 1, Ordering::AcqRel);
        if old != 0 {
            // Charged twice: the earlier charge ends here.
            self.shares.held[old as usize - 1].fetch_sub(1, Ordering::AcqRel);
        }
        true
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
        if c == SizeClass::Large {
            let account = self.charged[idx as usize].swap(0, Ordering::AcqRel);
            if account != 0 {
                self.shares.held[account as usize - 1].fetch_sub(1, Ordering::AcqRel);
            }
        }
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

    fn larger() -> BufferPool {
        BufferPool::new(PoolConfig {
            small_slots: 4,
            small_size: 256,
            large_slots: 12,
            large_size: 4096,
        })
        .with_large_share_floor(2)
    }

    /// Charges fresh large slots to `account` until refused; returns those it took.
    fn fill(p: &BufferPool, account: &ShareAccount) -> Vec<Handle> {
        let mut held = Vec::new();
        while let Some(h) = p.alloc(SizeClass::Large) {
            if !p.charge(&h, account) {
                p.free(h);
                break;
            }
            held.push(h);
        }
        held
    }

    #[test]
    fn one_account_cannot_take_every_large_slot() {
        let p = larger();
        let a = p.open_account();
        let held_a = fill(&p, &a);
        // Alone, a port gets half (12 / (1 + 1)), never all.
        assert_eq!(held_a.len(), 6);
        assert_eq!(a.held(), 6);
        assert_eq!(p.available().large, 6);

        // A second port still finds slots: its share is 12 / 3 = 4, and `a` is over
        // its new share until some of its frames are gone.
        let b = p.open_account();
        let held_b = fill(&p, &b);
        assert_eq!(held_b.len(), 4);
        let h = p.alloc(SizeClass::Large).unwrap();
        assert!(!p.charge(&h, &a), "a is over its share");
        p.free(h);

        // Freeing ends the charge, wherever it happens.
        for h in held_a {
            p.free(h);
        }
        assert_eq!(a.held(), 0);
        assert_eq!(b.held(), 4);
        for h in held_b {
            p.free(h);
        }
        assert_eq!(p.available().large, 12);
    }

    #[test]
    fn share_floor_and_small_slots() {
        let p = larger();
        let accounts: Vec<_> = (0..20).map(|_| p.open_account()).collect();
        // 12 / 21 rounds to 0: the floor wins.
        assert_eq!(p.large_share(), 2);
        assert_eq!(fill(&p, &accounts[0]).len(), 2);
        // Small slots are not charged.
        let s = p.alloc(SizeClass::Small).unwrap();
        assert!(p.charge(&s, &accounts[0]));
        p.free(s);
        drop(accounts);
        // No port left: no share to keep free.
        assert_eq!(p.large_share(), 12);
    }

    #[test]
    fn accounts_are_reused_once_their_slots_are_back() {
        let p = larger();
        let a = p.open_account();
        let h = p.alloc(SizeClass::Large).unwrap();
        assert!(p.charge(&h, &a));
        let index = a.index;
        drop(a);
        // Its slot is still out: the index is not handed out again yet.
        let b = p.open_account();
        assert_ne!(b.index, index);
        p.free(h);
        let c = p.open_account();
        assert_eq!(c.index, index);
        assert_eq!(c.held(), 0);
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
