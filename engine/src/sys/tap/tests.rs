//! Tests of configuration and adoption; and, as root (`#[ignore = "needs root"]`
//! otherwise), tests each in throwaway namespaces and the end-to-end smoke test of
//! `tap` + `netns` + `netlink`.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;
use crate::sys::netlink::Netlink;
use crate::sys::netns::test_support::scratch_ns;

fn named(name: &str) -> TapConfig {
    TapConfig {
        name: name.to_owned(),
        ..TapConfig::default()
    }
}

fn flags_of(tap: &Tap, queue: usize) -> u16 {
    get_iff(tap.fd(queue)).unwrap().1
}

fn vnet_hdr_size(fd: BorrowedFd<'_>) -> i32 {
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer; `size` outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut size) };
    assert_eq!(r, 0, "TUNGETVNETHDRSZ: {}", io::Error::last_os_error());
    size
}

fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    flags & libc::O_NONBLOCK != 0
}

const TAP: u16 = libc::IFF_TAP as u16;
const VNET: u16 = libc::IFF_VNET_HDR as u16;
const MQ: u16 = libc::IFF_MULTI_QUEUE as u16;

#[test]
fn config_is_validated_before_opening_anything() {
    let long = named("sixteen-bytes-xx");
    assert!(matches!(
        Tap::create(&long),
        Err(TapError::InvalidName { .. })
    ));
    assert!(matches!(
        Tap::create(&named("a/b")),
        Err(TapError::InvalidName { .. })
    ));
    assert!(matches!(
        Tap::create(&named("a b")),
        Err(TapError::InvalidName { .. })
    ));
    let zero = TapConfig {
        queues: 0,
        ..TapConfig::default()
    };
    assert!(matches!(
        Tap::create(&zero),
        Err(TapError::InvalidQueues { queues: 0 })
    ));
    let many = TapConfig {
        queues: MAX_QUEUES + 1,
        ..TapConfig::default()
    };
    assert!(matches!(
        Tap::create(&many),
        Err(TapError::InvalidQueues { .. })
    ));
}

#[test]
fn defaults() {
    let cfg = TapConfig::default();
    assert!(cfg.vnet_hdr && cfg.name.is_empty() && cfg.queues == 1 && !cfg.persist);
    assert_eq!(
        cfg.offloads,
        Offloads {
            csum: true,
            tso4: true,
            tso6: true
        }
    );
    assert_eq!(
        Offloads::default().bits(),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    assert_eq!(Offloads::NONE.bits(), 0);
}

#[test]
#[ignore = "needs root"]
fn create_in_namespace_with_vnet_hdr_and_offloads() {
    let ns = scratch_ns("tap");
    let tap = create_tap_in(&ns, &named("tnt0")).unwrap();
    assert_eq!(tap.name(), "tnt0");
    assert_eq!(tap.queues(), 1);
    assert_eq!(tap.vnet_hdr_len(), VNET_HDR_LEN);
    assert_eq!(tap.offloads(), Offloads::default());
    let flags = flags_of(&tap, 0);
    assert_eq!(flags & (TAP | VNET | MQ), TAP | VNET, "{flags:#x}");
    assert_eq!(vnet_hdr_size(tap.fd(0)), 12);
    assert!(is_nonblocking(tap.fd(0)));

    // Down and empty: reading would block.
    let mut buf = [0u8; 2048];
    let err = tap
        .recv_vectored(0, &mut [IoSliceMut::new(&mut buf)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    // The interface lives in the namespace; its index is found from here too.
    let mut nl = Netlink::open_in(&ns).unwrap();
    let index = nl.link_index("tnt0").unwrap();
    assert_eq!(tap.ifindex().unwrap(), index);
    assert_eq!(nl.link(index).unwrap().kind.as_deref(), Some("tun"));
    assert_eq!(ns.run(|| nametoindex("tnt0").unwrap()).unwrap(), index);
    // The dump of every link has it, with its kind and MAC, and `lo`.
    let links = nl.links().unwrap();
    let l = links.iter().find(|l| l.index == index).unwrap();
    assert_eq!((l.name.as_str(), l.kind.as_deref()), ("tnt0", Some("tun")));
    assert_eq!(l.mac, nl.link(index).unwrap().mac);
    assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");

    drop(tap);
    // A non-persistent TAP disappears with its fd.
    let gone = nl.link_index("tnt0").unwrap_err();
    assert!(
        matches!(
            gone,
            crate::sys::netlink::NetlinkError::Kernel {
                errno: nix::errno::Errno::ENODEV,
                ..
            }
        ),
        "{gone}"
    );
}

#[test]
#[ignore = "needs root"]
fn kernel_picks_the_name_and_no_vnet_hdr_means_no_offloads() {
    let ns = scratch_ns("tap-plain");
    let cfg = TapConfig {
        vnet_hdr: false,
        ..TapConfig::default()
    };
    let tap = create_tap_in(&ns, &cfg).unwrap();
    assert!(tap.name().starts_with("tap"), "{}", tap.name());
    assert_eq!(tap.vnet_hdr_len(), 0);
    assert_eq!(tap.offloads(), Offloads::NONE);
    assert_eq!(flags_of(&tap, 0) & (TAP | VNET), TAP);
}

#[test]
#[ignore = "needs root"]
fn reduced_offloads_are_recorded() {
    let ns = scratch_ns("tap-off");
    let csum_only = Offloads {
        csum: true,
        ..Offloads::NONE
    };
    let tap = create_tap_in(
        &ns,
        &TapConfig {
            offloads: csum_only,
            ..named("tof0")
        },
    )
    .unwrap();
    assert_eq!(tap.offloads(), csum_only);
    // TSO without checksum offload is not a thing: nothing is asked for.
    let tso_only = Offloads {
        csum: false,
        ..Offloads::default()
    };
    let tap = create_tap_in(
        &ns,
        &TapConfig {
            offloads: tso_only,
            ..named("tof1")
        },
    )
    .unwrap();
    assert_eq!(tap.offloads(), Offloads::NONE);
}

#[test]
#[ignore = "needs root"]
fn multi_queue() {
    let ns = scratch_ns("tap-mq");
    let tap = create_tap_in(
        &ns,
        &TapConfig {
            queues: 2,
            ..named("tmq0")
        },
    )
    .unwrap();
    assert_eq!(tap.queues(), 2);
    assert_ne!(tap.fd(0).as_raw_fd(), tap.fd(1).as_raw_fd());
    for q in 0..2 {
        let (name, flags) = get_iff(tap.fd(q)).unwrap();
        assert_eq!(name, "tmq0");
        assert_eq!(flags & (TAP | VNET | MQ), TAP | VNET | MQ, "{flags:#x}");
        assert!(is_nonblocking(tap.fd(q)));
    }
    assert_eq!(
        vnet_hdr_size(tap.fd(1)),
        12,
        "the header size is per device"
    );

    // Kernel-chosen name with several queues: every queue attaches to the same device.
    let tap = create_tap_in(
        &ns,
        &TapConfig {
            queues: 3,
            ..TapConfig::default()
        },
    )
    .unwrap();
    for q in 0..3 {
        assert_eq!(get_iff(tap.fd(q)).unwrap().0, tap.name());
    }
}

#[test]
#[ignore = "needs root"]
fn adopt_a_duplicated_fd() {
    let ns = scratch_ns("tap-adopt");
    let tap = create_tap_in(&ns, &named("tad0")).unwrap();
    let dup: OwnedFd = tap.fd(0).try_clone_to_owned().unwrap();
    let adopted = Tap::adopt(dup).unwrap();
    assert_eq!(adopted.name(), "tad0");
    assert_eq!(adopted.vnet_hdr_len(), VNET_HDR_LEN);
    assert_eq!(adopted.offloads(), Offloads::default());
    assert_eq!(adopted.queues(), 1);
    assert!(is_nonblocking(adopted.fd(0)));
    assert_eq!(adopted.ifindex().unwrap(), tap.ifindex().unwrap());

    // A plain TAP opened elsewhere, blocking: adopt makes it non-blocking, no header.
    let plain = ns
        .run(|| {
            let fd = open_tun().unwrap();
            set_iff(
                fd.as_fd(),
                "tad1",
                (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            )
            .unwrap();
            let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            let blocking = nix::fcntl::OFlag::from_bits_retain(flags & !libc::O_NONBLOCK);
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(blocking)).unwrap();
            fd
        })
        .unwrap();
    assert!(!is_nonblocking(plain.as_fd()));
    let adopted = Tap::adopt(plain).unwrap();
    assert_eq!(adopted.vnet_hdr_len(), 0);
    assert_eq!(adopted.offloads(), Offloads::NONE);
    assert!(is_nonblocking(adopted.fd(0)));
}

#[test]
fn adopt_rejects_a_pipe() {
    let (r, _w) = nix::unistd::pipe().unwrap();
    let err = Tap::adopt(r).unwrap_err();
    assert!(matches!(err, TapError::NotTun { .. }), "{err:?}");
    assert!(err.to_string().contains("not a TUN/TAP device"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn adopt_rejects_what_is_not_a_tap() {
    // /dev/net/tun never attached to an interface.
    let err = Tap::adopt(open_tun().unwrap()).unwrap_err();
    assert!(matches!(err, TapError::NotTun { .. }), "{err:?}");

    let ns = scratch_ns("tap-notap");
    // A layer-3 TUN.
    let tun = ns
        .run(|| {
            let fd = open_tun().unwrap();
            set_iff(
                fd.as_fd(),
                "ttun0",
                (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            )
            .unwrap();
            fd
        })
        .unwrap();
    let err = Tap::adopt(tun).unwrap_err();
    assert!(matches!(err, TapError::NotTap { .. }), "{err:?}");
    assert!(err.to_string().contains("not a TAP device"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn persistent_tap_outlives_its_fd() {
    let ns = scratch_ns("tap-persist");
    let mut nl = Netlink::open_in(&ns).unwrap();
    let cfg = TapConfig {
        persist: true,
        ..named("tps0")
    };
    let tap = create_tap_in(&ns, &cfg).unwrap();
    assert_ne!(flags_of(&tap, 0) & (libc::IFF_PERSIST as u16), 0);
    let index = tap.ifindex().unwrap();
    drop(tap);
    assert_eq!(
        nl.link_index("tps0").unwrap(),
        index,
        "still there without fds"
    );

    // Re-attach with the same flags, drop persistence; closing removes it.
    let tap = create_tap_in(&ns, &named("tps0")).unwrap();
    tap.set_persist(false).unwrap();
    drop(tap);
    assert!(nl.link_index("tps0").is_err());
}

/// Polls `fd` for input until `deadline`; false on timeout.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd that outlives the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0
}

/// The end-to-end smoke test: two namespaces, a TAP with virtio-net header in each, set
/// up over netlink; a UDP datagram from A makes A's kernel ARP for B, which we read from
/// TAP A; then relaying frames between the TAPs in user space (header included, as the
/// engine does) lets the datagram reach a socket in B.
#[test]
#[ignore = "needs root"]
fn e2e_two_namespaces_arp_then_udp_through_user_space() {
    let a = scratch_ns("e2e-a");
    let b = scratch_ns("e2e-b");
    let tap_a = create_tap_in(&a, &named("tapa")).unwrap();
    let tap_b = create_tap_in(&b, &named("tapb")).unwrap();
    let mac_a = [0x02, 0x42, 10, 99, 0, 1];
    let mac_b = [0x02, 0x42, 10, 99, 0, 2];
    let ip_a = Ipv4Addr::new(10, 99, 0, 1);
    let ip_b = Ipv4Addr::new(10, 99, 0, 2);
    for (ns, tap, mac, ip) in [(&a, &tap_a, mac_a, ip_a), (&b, &tap_b, mac_b, ip_b)] {
        let mut nl = Netlink::open_in(ns).unwrap();
        nl.set_up(1).unwrap();
        let index = nl.link_index(tap.name()).unwrap();
        assert_eq!(tap.ifindex().unwrap(), index);
        nl.set_mac(index, mac).unwrap();
        nl.set_txqueuelen(index, 10_000).unwrap();
        nl.set_up(index).unwrap();
        nl.add_address(index, ip.into(), 24).unwrap();
    }

    let sock_a = a.run(|| UdpSocket::bind((ip_a, 0))).unwrap().unwrap();
    let sock_b = b.run(|| UdpSocket::bind((ip_b, 5555))).unwrap().unwrap();
    sock_b.set_nonblocking(true).unwrap();
    sock_a.send_to(b"tapnet", (ip_b, 5555)).unwrap();

    // 1. The ARP request for 10.99.0.2 comes out of TAP A (after any IPv6 chatter).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frame = vec![0u8; 65_536 + VNET_HDR_LEN];
    let arp_len = loop {
        assert!(
            wait_readable(tap_a.fd(0), deadline),
            "no ARP request from namespace A"
        );
        let n = match tap_a.recv_vectored(0, &mut [IoSliceMut::new(&mut frame)]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => panic!("read TAP A: {e}"),
        };
        let eth = &frame[VNET_HDR_LEN..n];
        if eth.len() >= 14 && eth[12..14] == [0x08, 0x06] {
            break n;
        }
    };
    let (hdr, eth) = frame[..arp_len].split_at(VNET_HDR_LEN);
    assert_eq!(hdr[0], 0, "vnet flags: no checksum needed for ARP");
    assert_eq!(hdr[1], 0, "vnet gso_type: VIRTIO_NET_HDR_GSO_NONE");
    assert_eq!(eth[0..6], [0xff; 6], "broadcast");
    assert_eq!(eth[6..12], mac_a);
    let arp = &eth[14..];
    assert_eq!(
        arp[0..8],
        [0, 1, 0x08, 0x00, 6, 4, 0, 1],
        "Ethernet/IPv4 ARP request"
    );
    assert_eq!(arp[8..14], mac_a, "sender MAC");
    assert_eq!(arp[14..18], ip_a.octets(), "sender IP");
    assert_eq!(arp[24..28], ip_b.octets(), "target IP");

    // 2. Relay frames both ways, header and all, until the datagram arrives in B.
    tap_b
        .send_vectored(0, &[IoSlice::new(&frame[..arp_len])])
        .unwrap();
    let taps = [&tap_a, &tap_b];
    let mut got = [0u8; 64];
    for _ in 0..1_000 {
        match sock_b.recv_from(&mut got) {
            Ok((n, from)) => {
                assert_eq!(&got[..n], b"tapnet");
                assert_eq!(from.ip(), ip_a);
                return;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv in B: {e}"),
        }
        let mut pfds = taps.map(|t| libc::pollfd {
            fd: t.fd(0).as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the datagram never reached namespace B");
        // SAFETY: `pfds` is an array of two valid pollfds that outlives the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, 50) };
        for (from, to) in [(0, 1), (1, 0)] {
            if pfds[from].revents & libc::POLLIN == 0 {
                continue;
            }
            while let Ok(n) = taps[from].recv_vectored(0, &mut [IoSliceMut::new(&mut frame)]) {
                taps[to]
                    .send_vectored(0, &[IoSlice::new(&frame[..n])])
                    .unwrap();
            }
        }
    }
    panic!("the datagram never reached namespace B");
}

/// The error `adopt` gives for an fd that is not the TUN/TAP character device: decided by
/// the file's type alone, so no ioctl reached it (an ioctl on these gives an OS error such
/// as `ENOTTY`, not this).
fn assert_refused_before_ioctl(fd: OwnedFd, what: &str) {
    let err = Tap::adopt(fd).unwrap_err();
    let TapError::NotTun { source } = &err else {
        panic!("{what}: {err:?}");
    };
    assert_eq!(
        source.raw_os_error(),
        None,
        "{what}: an ioctl was issued: {source}"
    );
    assert_eq!(source.kind(), ErrorKind::InvalidInput, "{what}: {source}");
    assert!(
        source.to_string().contains("10:200"),
        "{what}: the error names what is expected: {source}"
    );
}

#[test]
fn adopt_checks_the_file_type_before_any_ioctl() {
    let (r, _w) = nix::unistd::pipe().unwrap();
    assert_refused_before_ioctl(r, "pipe");
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    assert_refused_before_ioctl(OwnedFd::from(sock), "socket");
    let file = File::open("/proc/self/status").unwrap();
    assert_refused_before_ioctl(OwnedFd::from(file), "regular file");
    let dir = File::open("/").unwrap();
    assert_refused_before_ioctl(OwnedFd::from(dir), "directory");
    let null = File::open("/dev/null").unwrap();
    assert_refused_before_ioctl(OwnedFd::from(null), "/dev/null");
}

#[test]
#[ignore = "needs root"]
fn adopt_accepts_the_tun_device() {
    // The character device passes the type check; an unattached one then fails TUNGETIFF.
    let err = Tap::adopt(open_tun().unwrap()).unwrap_err();
    let TapError::NotTun { source } = &err else {
        panic!("{err:?}");
    };
    assert!(
        source.raw_os_error().is_some(),
        "TUNGETIFF was issued: {source}"
    );
    let ns = scratch_ns("tap-fstat");
    let tap = create_tap_in(&ns, &named("tfs0")).unwrap();
    let adopted = Tap::adopt(tap.fd(0).try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(adopted.name(), "tfs0");
}

#[test]
#[ignore = "needs root"]
fn current_header_length_follows_the_device() {
    let ns = scratch_ns("tap-hdrlen");
    let tap = create_tap_in(&ns, &named("thl0")).unwrap();
    assert_eq!(tap.current_vnet_hdr_len().unwrap(), VNET_HDR_LEN);
    let len = 24;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `len` outlives the call.
    let r = unsafe { libc::ioctl(tap.fd(0).as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
    assert_eq!(r, 0);
    assert_eq!(tap.current_vnet_hdr_len().unwrap(), 24);
    tap.restore_vnet_hdr_len().unwrap();
    assert_eq!(tap.current_vnet_hdr_len().unwrap(), VNET_HDR_LEN);

    // IFF_VNET_HDR itself cannot change while a queue is open, attached or not: only the
    // first queue to attach sets the device's flags. So the size is all there is to check.
    let cfg = TapConfig {
        queues: 2,
        ..named("thl1")
    };
    let mq = create_tap_in(&ns, &cfg).unwrap();
    assert_eq!(mq.current_vnet_hdr_len().unwrap(), VNET_HDR_LEN);
    let set_queue = |fd: BorrowedFd<'_>, flags: libc::c_int| {
        let mut ifr = ifreq("", flags as libc::c_short);
        // SAFETY: TUNSETQUEUE reads a `struct ifreq`, which `ifr` is; it outlives the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETQUEUE, &mut ifr) };
        assert_eq!(r, 0, "TUNSETQUEUE: {}", io::Error::last_os_error());
    };
    set_queue(mq.fd(0), libc::IFF_DETACH_QUEUE);
    set_queue(mq.fd(1), libc::IFF_DETACH_QUEUE);
    let other = ns
        .run(|| {
            let fd = open_tun().unwrap();
            let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
            set_iff(fd.as_fd(), "thl1", flags as libc::c_short).unwrap();
            fd
        })
        .unwrap();
    set_queue(mq.fd(0), libc::IFF_ATTACH_QUEUE);
    assert_ne!(flags_of(&mq, 0) & VNET, 0);
    assert_eq!(mq.current_vnet_hdr_len().unwrap(), VNET_HDR_LEN);
    drop(other);
}
