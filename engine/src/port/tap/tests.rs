//! Tests of the TAP port's receive path against a real TAP, as root
//! (`#[ignore = "needs root"]`), each in a throwaway namespace.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;
use crate::pool::PoolConfig;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNsGuard;
use crate::sys::netns::test_support::scratch_ns;
use crate::sys::tap::{TapConfig, create_tap_in};

/// What every slot holds before the test: bytes of "another network".
const STALE: u8 = 0xab;

fn small_pool() -> BufferPool {
    let pool = BufferPool::new(PoolConfig {
        small_slots: 16,
        small_size: 2048,
        large_slots: 4,
        large_size: HEADROOM + 65536 + 64,
    });
    // Dirty every slot, as frames of other ports would have.
    for class in [SizeClass::Small, SizeClass::Large] {
        let mut held = Vec::new();
        while let Some(mut h) = pool.alloc(class) {
            pool.get_mut(&mut h).slot.fill(STALE);
            held.push(h);
        }
        for h in held {
            pool.free(h);
        }
    }
    pool
}

fn set_hdr_size(fd: BorrowedFd<'_>, size: i32) {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `size` outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
    assert_eq!(r, 0, "TUNSETVNETHDRSZ: {}", io::Error::last_os_error());
}

fn hdr_size(fd: BorrowedFd<'_>) -> i32 {
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer; `size` outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut size) };
    assert_eq!(r, 0, "TUNGETVNETHDRSZ: {}", io::Error::last_os_error());
    size
}

/// The kernel side of a TAP: a packet socket in the TAP's namespace that hands frames
/// straight to the device (`PACKET_QDISC_BYPASS`), so a sent frame is queued on the TAP's
/// fd when `send` returns.
struct KernelSide {
    sock: OwnedFd,
    ifindex: i32,
}

impl KernelSide {
    fn new(ns: &NetNsGuard, ifname: &str) -> KernelSide {
        KernelSide::with_mtu(ns, ifname, 1500)
    }

    fn with_mtu(ns: &NetNsGuard, ifname: &str, mtu: u32) -> KernelSide {
        let mut nl = Netlink::open_in(ns).unwrap();
        let ifindex = nl.link_index(ifname).unwrap();
        nl.set_mtu(ifindex, mtu).unwrap();
        // No IPv6 chatter (router solicitations, MLD) on the TAP; best effort.
        let _ = ns.run(|| {
            std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
                "1",
            )
        });
        nl.set_up(ifindex).unwrap();
        let sock = ns
            .run(|| {
                // SAFETY: plain socket(2) call; the result is checked.
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
                assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
                // SAFETY: the kernel just created this fd; nothing else owns it.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .unwrap();
        let one: libc::c_int = 1;
        // SAFETY: PACKET_QDISC_BYPASS reads one int; `one` outlives the call.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "PACKET_QDISC_BYPASS: {}", io::Error::last_os_error());
        KernelSide {
            sock,
            ifindex: ifindex as i32,
        }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `sll` outlive the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "sendto: {}",
            io::Error::last_os_error()
        );
    }
}

fn test_frame(tag: u8) -> Vec<u8> {
    sized_frame(tag, 100)
}

fn sized_frame(tag: u8, payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
    f.extend(std::iter::repeat_n(tag, payload));
    f
}

/// Waits (bounded) until `fd` is readable.
fn wait_readable(fd: BorrowedFd<'_>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let n = nix::poll::poll(&mut pfd, ms).unwrap();
        assert!(n > 0 || Instant::now() < deadline, "no frame within 20 s");
        if n > 0 {
            return;
        }
    }
}

/// Waits (bounded) until the TAP fd is readable, then receives what is there.
fn recv_all(
    rx: &mut dyn PortRx,
    fd: BorrowedFd<'_>,
    pool: &BufferPool,
    spare: &mut RxSpare,
    ctr: &PortCounters,
) -> Vec<Vec<u8>> {
    wait_readable(fd);
    let mut out = Vec::new();
    while rx.recv(pool, spare, &mut out, 64, ctr) == RxStatus::More {}
    out.into_iter()
        .map(|h| {
            let f = pool.frame(&h).to_vec();
            pool.free(h);
            f
        })
        .collect()
}

fn assert_no_stale(frames: &[Vec<u8>]) {
    for f in frames {
        assert!(
            !f.windows(8).any(|w| w.iter().all(|&b| b == STALE)),
            "stale pool bytes reached the switch: {f:02x?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn a_raised_vnet_header_size_never_exposes_stale_bytes() {
    let ns = scratch_ns("tap-vnethdr");
    let tap = create_tap_in(
        &ns,
        &TapConfig {
            name: "tvh0".into(),
            ..TapConfig::default()
        },
    )
    .unwrap();
    // The sender keeps a duplicate of the fd: the same file description.
    let sender: OwnedFd = tap.fd(0).try_clone_to_owned().unwrap();
    let kernel = KernelSide::new(&ns, "tvh0");
    let pool = small_pool();
    let mut spare = RxSpare::default();
    let ctr = PortCounters::default();
    let (mut rx, _tx) = Box::new(TapPort::new(tap, 1500)).split();
    let fd = sender.as_fd();

    // Far larger than asked for: the frame would start 40 bytes into the slot.
    set_hdr_size(fd, (VNET_HDR_LEN + 40) as i32);
    kernel.send(&test_frame(1));
    let got = recv_all(rx.as_mut(), fd, &pool, &mut spare, &ctr);
    assert_no_stale(&got);
    assert!(!got.contains(&test_frame(1)), "a shifted frame was taken");
    assert!(ctr.rx_vnet_hdr_drops.get() >= 1, "{:?}", ctr.snapshot());
    assert_eq!(
        hdr_size(fd),
        VNET_HDR_LEN as i32,
        "the header size is put back"
    );

    // Slightly larger: two bytes the kernel skips.
    let before = ctr.rx_vnet_hdr_drops.get();
    set_hdr_size(fd, (VNET_HDR_LEN + 2) as i32);
    kernel.send(&test_frame(2));
    let got = recv_all(rx.as_mut(), fd, &pool, &mut spare, &ctr);
    assert_no_stale(&got);
    assert!(!got.contains(&test_frame(2)), "a shifted frame was taken");
    assert!(ctr.rx_vnet_hdr_drops.get() > before, "{:?}", ctr.snapshot());
    assert_eq!(hdr_size(fd), VNET_HDR_LEN as i32);

    // Back to normal: frames pass intact and nothing more is dropped.
    let before = ctr.rx_vnet_hdr_drops.get();
    kernel.send(&test_frame(3));
    let got = recv_all(rx.as_mut(), fd, &pool, &mut spare, &ctr);
    assert_no_stale(&got);
    assert!(got.contains(&test_frame(3)), "{got:02x?}");
    assert_eq!(ctr.rx_vnet_hdr_drops.get(), before);
    spare.release(&pool);
}

#[test]
#[ignore = "needs root"]
fn one_port_cannot_hold_every_large_slot() {
    let ns = scratch_ns("tap-share");
    let cfg = |name: &str| TapConfig {
        name: name.into(),
        ..TapConfig::default()
    };
    let tap_a = create_tap_in(&ns, &cfg("tsa0")).unwrap();
    let tap_b = create_tap_in(&ns, &cfg("tsb0")).unwrap();
    let fd_a = tap_a.fd(0).try_clone_to_owned().unwrap();
    let fd_b = tap_b.fd(0).try_clone_to_owned().unwrap();
    // A jumbo-MTU network: every frame needs a large slot.
    let kernel_a = KernelSide::with_mtu(&ns, "tsa0", 9000);
    let kernel_b = KernelSide::with_mtu(&ns, "tsb0", 9000);
    let pool = BufferPool::new(PoolConfig {
        small_slots: 64,
        small_size: 2048,
        large_slots: 8,
        large_size: HEADROOM + 65536 + 64,
    })
    .with_large_share_floor(2);
    // One spare for both ports, as in the receive stage.
    let mut spare = RxSpare::default();
    let (ctr_a, ctr_b) = (PortCounters::default(), PortCounters::default());
    let (mut rx_a, _tx_a) = Box::new(TapPort::new(tap_a, 9000)).split();
    let (mut rx_b, _tx_b) = Box::new(TapPort::new(tap_b, 9000)).split();

    // Port A's frames are all held downstream (a slow or stuck egress).
    let mut held = Vec::new();
    for tag in 0..12 {
        kernel_a.send(&sized_frame(tag, 4000));
    }
    wait_readable(fd_a.as_fd());
    for _ in 0..12 {
        rx_a.recv(&pool, &mut spare, &mut held, 64, &ctr_a);
    }
    assert!(!held.is_empty());
    assert!(
        held.len() < 8,
        "port A holds {} of 8 large slots",
        held.len()
    );

    // Port B still receives its jumbo frame.
    kernel_b.send(&sized_frame(0x42, 4000));
    wait_readable(fd_b.as_fd());
    let mut got = Vec::new();
    rx_b.recv(&pool, &mut spare, &mut got, 64, &ctr_b);
    assert_eq!(got.len(), 1, "{:?}", ctr_b.snapshot());
    assert_eq!(pool.frame(&got[0]), &sized_frame(0x42, 4000)[..]);
    pool_share_drops_counted(&ctr_a, 12 - held.len());

    for h in held.into_iter().chain(got) {
        pool.free(h);
    }
    spare.release(&pool);
}

fn pool_share_drops_counted(ctr: &PortCounters, dropped: usize) {
    assert_eq!(
        ctr.rx_pool_share_drops.get(),
        dropped as u64,
        "{:?}",
        ctr.snapshot()
    );
}
