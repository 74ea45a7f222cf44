//! Tests of the pure helpers; and, as root (`#[ignore = "needs root"]` otherwise),
//! tests each in throwaway namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::sys::netns::test_support::scratch_ns;

const V4: fn(u8, u8, u8, u8) -> IpAddr = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));

fn errno_of(e: NetlinkError) -> Errno {
    match e {
        NetlinkError::Kernel { errno, .. } => errno,
        other => panic!("expected a kernel error, got {other:?}"),
    }
}

#[test]
fn prefix_and_scope_helpers() {
    assert!(check_prefix("t", V4(10, 0, 0, 1), 32).is_ok());
    assert!(check_prefix("t", V4(10, 0, 0, 1), 33).is_err());
    assert!(check_prefix("t", IpAddr::V6(Ipv6Addr::LOCALHOST), 128).is_ok());
    assert!(check_prefix("t", IpAddr::V6(Ipv6Addr::LOCALHOST), 129).is_err());
    assert_eq!(address_scope(V4(127, 0, 0, 2)), AddressScope::Host);
    assert_eq!(address_scope(V4(10, 0, 0, 2)), AddressScope::Universe);
    assert_eq!(
        address_scope("fe80::1".parse().unwrap()),
        AddressScope::Link
    );
    assert_eq!(
        address_scope("fd00::1".parse().unwrap()),
        AddressScope::Universe
    );
}

#[test]
fn ext_ack_text_is_found_after_the_echoed_header() {
    let mut payload = vec![0u8; 16];
    // NLMSGERR_ATTR_MSG, "bad mtu\0", padded to 4.
    let text = b"bad mtu\0";
    payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
    payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
    payload.extend_from_slice(text);
    assert_eq!(ext_ack_text(&payload).as_deref(), Some("bad mtu"));
    assert_eq!(ext_ack_text(&payload[..16]), None);
}

#[test]
fn kernel_error_message_names_op_errno_and_hint() {
    let e = NetlinkError::Kernel {
        op: "set_mtu",
        errno: Errno::ENODEV,
    };
    let text = e.to_string();
    assert!(
        text.contains("set_mtu") && text.contains("ENODEV"),
        "{text}"
    );
    assert!(text.contains("no such interface"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn veth_up_mtu_mac_qlen_address_route() {
    let ns = scratch_ns("nl-veth");
    let mut nl = Netlink::open_in(&ns).unwrap();
    nl.set_up(1).unwrap();
    assert!(nl.link(1).unwrap().up, "lo is up");

    nl.add_veth("veth0", "veth1").unwrap();
    let i0 = nl.link_index("veth0").unwrap();
    let i1 = nl.link_index("veth1").unwrap();
    assert_ne!(i0, i1);
    assert_eq!(
        errno_of(nl.add_veth("veth0", "veth9").unwrap_err()),
        Errno::EEXIST
    );

    let mac = [0x02, 0x42, 10, 98, 0, 1];
    nl.set_mtu(i0, 9000).unwrap();
    nl.set_mac(i0, mac).unwrap();
    nl.set_txqueuelen(i0, 5000).unwrap();
    nl.set_up(i0).unwrap();
    nl.set_up(i1).unwrap();
    let link = nl.link(i0).unwrap();
    assert_eq!(link.name, "veth0");
    assert_eq!(link.index, i0);
    assert!(link.up);
    assert_eq!(link.mtu, Some(9000));
    assert_eq!(link.mac, Some(mac));
    assert_eq!(link.txqueuelen, Some(5000));
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert_eq!(nl.link_by_name("veth0").unwrap(), link);

    nl.set_down(i1).unwrap();
    assert!(!nl.link(i1).unwrap().up);
    nl.set_up(i1).unwrap();

    let v6: IpAddr = "fd00:98::1".parse().unwrap();
    nl.add_address(i0, V4(10, 98, 0, 1), 24).unwrap();
    nl.add_address(i0, v6, 64).unwrap();
    assert_eq!(
        errno_of(nl.add_address(i0, V4(10, 98, 0, 1), 24).unwrap_err()),
        Errno::EEXIST
    );
    let addrs = nl.addresses(i0).unwrap();
    assert!(addrs.contains(&(V4(10, 98, 0, 1), 24)), "{addrs:?}");
    assert!(addrs.contains(&(v6, 64)), "{addrs:?}");

    let gw = V4(10, 98, 0, 254);
    nl.add_route(Some((V4(10, 97, 0, 0), 16)), Some(gw), i0)
        .unwrap();
    nl.add_route(None, Some(gw), i0).unwrap();
    nl.add_route(Some((V4(10, 96, 0, 0), 24)), None, i0)
        .unwrap();
    let routes = nl.routes().unwrap();
    let want = [
        Route {
            dest: Some((V4(10, 97, 0, 0), 16)),
            gateway: Some(gw),
            oif: Some(i0),
        },
        Route {
            dest: None,
            gateway: Some(gw),
            oif: Some(i0),
        },
        Route {
            dest: Some((V4(10, 96, 0, 0), 24)),
            gateway: None,
            oif: Some(i0),
        },
        // The prefix route the kernel made for the address.
        Route {
            dest: Some((V4(10, 98, 0, 0), 24)),
            gateway: None,
            oif: Some(i0),
        },
    ];
    for r in &want {
        assert!(routes.contains(r), "{r:?} missing from {routes:?}");
    }
    assert!(matches!(
        nl.add_route(Some((V4(10, 95, 0, 0), 16)), Some(v6), i0),
        Err(NetlinkError::InvalidArgument { .. })
    ));

    nl.delete_link(i0).unwrap();
    assert_eq!(errno_of(nl.link_index("veth1").unwrap_err()), Errno::ENODEV);
}

#[test]
#[ignore = "needs root"]
fn bridge_and_enslave() {
    let ns = scratch_ns("nl-br");
    let mut nl = Netlink::open_in(&ns).unwrap();
    nl.add_bridge("br0").unwrap();
    nl.add_veth("v0", "v1").unwrap();
    let br = nl.link_index("br0").unwrap();
    let v0 = nl.link_index("v0").unwrap();
    assert_eq!(nl.link(br).unwrap().kind.as_deref(), Some("bridge"));
    nl.set_master(v0, br).unwrap();
    assert_eq!(nl.link(v0).unwrap().master, Some(br));
    nl.set_master(v0, 0).unwrap();
    assert_eq!(nl.link(v0).unwrap().master, None);
    nl.delete_link(br).unwrap();
    assert_eq!(errno_of(nl.link(br).unwrap_err()), Errno::ENODEV);
}

#[test]
#[ignore = "needs root"]
fn move_veth_end_to_other_namespace() {
    let a = scratch_ns("nl-mv-a");
    let b = scratch_ns("nl-mv-b");
    let mut nla = Netlink::open_in(&a).unwrap();
    let mut nlb = Netlink::open_in(&b).unwrap();
    nla.add_veth("mv0", "mv1").unwrap();
    let i1 = nla.link_index("mv1").unwrap();
    nla.move_to_netns(i1, b.fd()).unwrap();
    assert_eq!(errno_of(nla.link_index("mv1").unwrap_err()), Errno::ENODEV);
    let moved = nlb.link_by_name("mv1").unwrap();
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    // Both ends still work as a pair: bring them up and give them addresses.
    nlb.set_up(moved.index).unwrap();
    nlb.add_address(moved.index, V4(10, 94, 0, 2), 24).unwrap();
    assert_eq!(
        nlb.addresses(moved.index).unwrap(),
        vec![(V4(10, 94, 0, 2), 24)]
    );
}

#[test]
#[ignore = "needs root"]
fn kernel_errors_carry_errno() {
    let ns = scratch_ns("nl-err");
    let mut nl = Netlink::open_in(&ns).unwrap();
    let err = nl.set_mtu(9999, 1500).unwrap_err();
    assert!(err.to_string().contains("set_mtu"), "{err}");
    assert_eq!(errno_of(err), Errno::ENODEV);
    assert_eq!(errno_of(nl.link_index("nope0").unwrap_err()), Errno::ENODEV);
    // Above the device's maximum MTU.
    nl.add_veth("e0", "e1").unwrap();
    let e0 = nl.link_index("e0").unwrap();
    assert_eq!(
        errno_of(nl.set_mtu(e0, 100_000).unwrap_err()),
        Errno::EINVAL
    );
    assert!(matches!(
        nl.set_up(0),
        Err(NetlinkError::InvalidArgument { .. })
    ));
    assert!(matches!(
        nl.add_address(1, V4(10, 0, 0, 1), 33),
        Err(NetlinkError::InvalidArgument { .. })
    ));
    // The connection is still in step after errors.
    assert_eq!(nl.link_index("lo").unwrap(), 1);
}

#[test]
#[ignore = "needs root"]
fn multipart_dump_spans_datagrams() {
    let ns = scratch_ns("nl-dump");
    let mut nl = Netlink::open_in(&ns).unwrap();
    nl.set_up(1).unwrap();
    // ~600 addresses of ~70 bytes each: more than one 32 KiB dump datagram.
    let n = 600u16;
    for i in 0..n {
        let [hi, lo] = i.to_be_bytes();
        nl.add_address(1, V4(10, 93, hi, lo), 32).unwrap();
    }
    let addrs = nl.addresses(1).unwrap();
    let ours = addrs
        .iter()
        .filter(|(a, len)| {
            *len == 32 && matches!(a, IpAddr::V4(v4) if v4.octets()[..2] == [10, 93])
        })
        .count();
    assert_eq!(ours, usize::from(n));
    assert!(addrs.contains(&(V4(127, 0, 0, 1), 8)), "{addrs:?}");
}
