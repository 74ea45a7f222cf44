//! Sandboxes and endpoints: create, connect, disconnect, remove; addresses, interfaces,
//! default routes; rollback when the plumbing fails.

use super::*;
use crate::daemon::plumbing::Op;

#[test]
fn a_sandbox_gets_a_namespace_an_interface_an_address_and_a_route() {
    let r = Rig::new();
    let sb = r.sandbox("web", &[]);
    assert_eq!(sb.netns, format!("tapnet-{}", &sb.id[..12]));
    assert_eq!(sb.hostname, sb.id[..12]);
    let eps = r.endpoints("web");
    assert_eq!(eps.len(), 1);
    let (e, n) = &eps[0];
    assert_eq!(n.name, "bridge");
    assert_eq!(
        (e.ifname.as_str(), e.ipv4, e.prefix_len),
        ("eth0", Some(ip("172.17.0.2")), 16)
    );
    assert_eq!(e.mac, "02:42:ac:11:00:02");
    let ns = r.p().namespace(&sb.netns).expect("namespace made");
    let iface = &ns.interfaces["eth0"];
    assert_eq!(iface.addr, Some((ip("172.17.0.2"), 16)));
    assert_eq!(iface.mac, [0x02, 0x42, 0xac, 0x11, 0, 2]);
    assert_eq!(iface.mtu, 1500);
    assert_eq!(ns.default_route, Some((ip("172.17.0.1"), "eth0".into())));
    assert_eq!(r.p().attached().get(&e.id), Some(&n.id));
    assert!(r.d().endpoint_attached(&e.id));
    assert_eq!(
        r.d().netns_path(&sb),
        format!("/proc/{}/ns/net", std::process::id())
    );
    // Lookups: name, full id, id prefix, and Docker's leading slash.
    for key in ["web", "/web", &sb.id, &sb.id[..6]] {
        assert_eq!(r.d().sandbox(key).unwrap().0.id, sb.id, "{key}");
    }
    // The next one gets the next address; a name is made up when none is given.
    let other = r
        .d()
        .create_sandbox(None, Some("h".into()), Vec::new(), &[])
        .unwrap();
    assert_eq!(other.name, format!("sandbox-{}", &other.id[..12]));
    assert_eq!(other.hostname, "h");
    assert_eq!(r.endpoints(&other.name)[0].0.ipv4, Some(ip("172.17.0.3")));
}

#[test]
fn static_addresses_and_their_refusals() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let with_ip = |net: &str, addr: &str| {
        vec![AttachSpec {
            network: net.into(),
            ipv4: Some(addr.into()),
            ..Default::default()
        }]
    };
    let mk = |name: &str, nets| r.d().create_sandbox(Some(name.into()), None, nets, &[]);
    mk("db", with_ip("pets", "10.1.0.40")).unwrap();
    let (e, _) = &r.endpoints("db")[0];
    assert!(e.static_ip);
    assert_eq!(e.ipv4, Some(ip("10.1.0.40")));
    let err = |name: &str, nets| api(mk(name, nets).unwrap_err());
    assert_eq!(
        err("x", with_ip("pets", "10.1.0.40")),
        (403, "Address already in use".into())
    );
    assert_eq!(
        err("x", with_ip("pets", "10.9.0.1")),
        (
            400,
            "no configured subnet contains IP address 10.9.0.1".into()
        )
    );
    assert_eq!(
        err("x", with_ip("pets", "nope")),
        (
            400,
            "invalid IPv4 address \"nope\": not an IPv4 address".into()
        )
    );
    assert_eq!(
        err("x", with_ip("bridge", "172.17.0.9")),
        (
            400,
            "user specified IP address is supported on user defined networks only".into()
        )
    );
    assert_eq!(
        err("x", with_ip("none", "1.2.3.4")),
        (400, "network none has no IPAM: it takes no --ip".into())
    );
    // A dynamic address skips the static one.
    r.sandbox("web", &["pets"]);
    assert_eq!(r.endpoints("web")[0].0.ipv4, Some(ip("10.1.0.2")));
}

#[test]
fn names_networks_and_drivers_docker_refuses() {
    let r = Rig::new();
    let web = r.sandbox("web", &[]);
    let err = |name: &str, nets: &[&str]| {
        api(r
            .d()
            .create_sandbox(Some(name.into()), None, attach(nets), &[])
            .unwrap_err())
    };
    assert_eq!(
        err("web", &[]),
        (
            409,
            format!(
                "Conflict. The container name \"/web\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                web.id
            )
        )
    );
    for bad in ["-x", "a b", "é"] {
        assert_eq!(
            err(bad, &[]),
            (
                400,
                format!(
                    "Invalid container name ({bad}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )
            )
        );
    }
    assert_eq!(
        err("x", &["bridge", "bridge"]),
        (400, "network bridge given twice".into())
    );
    assert_eq!(
        err("x", &["host"]),
        (
            400,
            "a sandbox cannot join the host network: run the command in the host's namespace instead (tapnet run --network host)"
                .into()
        )
    );
    assert_eq!(
        err("x", &["none", "bridge"]),
        (
            400,
            "conflicting options: the none network cannot be combined with other networks".into()
        )
    );
    assert_eq!(
        err("x", &["nosuch"]),
        (404, "network nosuch not found".into())
    );
    assert_eq!(
        api(r.d().sandbox("ghost").unwrap_err()),
        (404, "No such container: ghost".into())
    );
    // Nothing of the refused ones is stored or plumbed.
    assert_eq!(r.d().sandboxes().len(), 1);
    assert_eq!(r.p().namespaces().len(), 1);
    assert_eq!(r.p().attached().len(), 1);
}

#[test]
fn the_none_network_gives_loopback_only() {
    let r = Rig::new();
    let sb = r.sandbox("lo", &["none"]);
    let (e, n) = &r.endpoints("lo")[0];
    assert_eq!(
        (n.name.as_str(), e.ifname.as_str(), e.ipv4),
        ("none", "", None)
    );
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert!(ns.interfaces.is_empty() && ns.default_route.is_none());
    assert_eq!(
        api(r
            .d()
            .connect("bridge", "lo", AttachSpec::default())
            .unwrap_err()),
        (
            403,
            "container lo is on the none network and cannot be connected to another network".into()
        )
    );
}

#[test]
fn a_full_pool_is_dockers_500_with_the_network_named() {
    let r = Rig::new();
    // A /30: network, gateway, one host, broadcast.
    let n = r.create_net("tiny", "10.8.0.0/30");
    r.sandbox("one", &["tiny"]);
    assert_eq!(
        api(r
            .d()
            .create_sandbox(Some("two".into()), None, attach(&["tiny"]), &[])
            .unwrap_err()),
        (
            500,
            format!(
                "no available IPv4 addresses on this network's address pools: tiny ({})",
                n.id
            )
        )
    );
}

#[test]
fn a_daemon_without_root_makes_no_namespaces() {
    let r = Rig::with(MemoryPlumbing::new().rootless());
    assert_eq!(
        api(r.d().create_sandbox(None, None, Vec::new(), &[]).unwrap_err()),
        (
            403,
            "this daemon runs without root: it cannot create network namespaces. Sandboxes come from `tapnet run`, which creates them rootless"
                .into()
        )
    );
}

#[test]
fn remove_frees_addresses_namespace_and_datapath() {
    let r = Rig::new();
    let sb = r.sandbox("web", &[]);
    r.d().remove_sandbox("web").unwrap();
    assert!(r.p().namespace(&sb.netns).is_none());
    assert!(r.p().attached().is_empty());
    assert_eq!(
        api(r.d().remove_sandbox("web").unwrap_err()),
        (404, "No such container: web".into())
    );
    // Its address is handed out again.
    r.sandbox("next", &[]);
    assert_eq!(r.endpoints("next")[0].0.ipv4, Some(ip("172.17.0.2")));
}

#[test]
fn connect_and_disconnect_live() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let sb = r.sandbox("web", &[]);
    let e = r
        .d()
        .connect(
            "pets",
            "web",
            AttachSpec {
                aliases: vec!["w".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((e.ifname.as_str(), e.ipv4), ("eth1", Some(ip("10.1.0.2"))));
    assert_eq!(e.aliases, ["w"]);
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.interfaces.keys().collect::<Vec<_>>(), ["eth0", "eth1"]);
    // Ties go to the network name that sorts first: bridge.
    assert_eq!(ns.default_route, Some((ip("172.17.0.1"), "eth0".into())));
    let err = |r: Result<(), DaemonError>| api(r.unwrap_err());
    assert_eq!(
        err(r
            .d()
            .connect("pets", "web", AttachSpec::default())
            .map(drop)),
        (
            403,
            "endpoint with name web already exists in network pets".into()
        )
    );
    assert_eq!(
        err(r
            .d()
            .connect("host", "web", AttachSpec::default())
            .map(drop)),
        (
            403,
            "container cannot be connected to network host (driver host): only at creation".into()
        )
    );
    // Disconnect from bridge: the default route moves to pets, eth1.
    r.d().disconnect("bridge", "web").unwrap();
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.interfaces.keys().collect::<Vec<_>>(), ["eth1"]);
    assert_eq!(ns.default_route, Some((ip("10.1.0.1"), "eth1".into())));
    assert_eq!(
        err(r.d().disconnect("bridge", "web")),
        (
            403,
            "container web is not connected to network bridge".into()
        )
    );
    // Connect again: eth0 is free and is taken again.
    let e = r
        .d()
        .connect("bridge", "web", AttachSpec::default())
        .unwrap();
    assert_eq!(e.ifname, "eth0");
    assert_eq!(r.p().attached().len(), 2);
}

#[test]
fn the_highest_priority_endpoint_holds_the_default_route() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let sb = r.sandbox("web", &[]);
    r.d()
        .connect(
            "pets",
            "web",
            AttachSpec {
                gw_priority: 10,
                ..Default::default()
            },
        )
        .unwrap();
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.default_route, Some((ip("10.1.0.1"), "eth1".into())));
    // An internal network takes no part.
    let internal = r
        .d()
        .create_network(
            NetworkSpec {
                name: "inner".into(),
                internal: true,
                ..Default::default()
            },
            false,
        )
        .unwrap();
    r.d()
        .connect(
            &internal.name,
            "web",
            AttachSpec {
                gw_priority: 100,
                ..Default::default()
            },
        )
        .unwrap();
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.default_route, Some((ip("10.1.0.1"), "eth1".into())));
}

#[test]
fn plumbing_failures_roll_back_what_was_stored() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    // Creating: the interface cannot be made.
    r.p().fail(Op::Plug);
    assert_eq!(
        api(r
            .d()
            .create_sandbox(Some("web".into()), None, attach(&["pets"]), &[])
            .unwrap_err()),
        (500, "Plug failed (as the test asked)".into())
    );
    assert!(r.d().sandboxes().is_empty());
    assert!(r.p().namespaces().is_empty(), "{:?}", r.p().namespaces());
    assert!(r.p().attached().is_empty());
    // The route cannot be set: the same.
    r.p().fail(Op::SetDefaultRoute);
    assert!(
        r.d()
            .create_sandbox(Some("web".into()), None, attach(&["pets"]), &[])
            .is_err()
    );
    assert!(r.d().sandboxes().is_empty());
    // Neither took an address.
    let sb = r.sandbox("web", &["pets"]);
    assert_eq!(r.endpoints("web")[0].0.ipv4, Some(ip("10.1.0.2")));
    // Connecting: the new endpoint goes, the sandbox stays as it was.
    r.p().fail(Op::Plug);
    assert!(
        r.d()
            .connect("bridge", "web", AttachSpec::default())
            .is_err()
    );
    assert_eq!(r.endpoints("web").len(), 1);
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.interfaces.keys().collect::<Vec<_>>(), ["eth0"]);
    assert_eq!(r.p().attached().len(), 1);
    // Its address went back too.
    r.sandbox("other", &[]);
    assert_eq!(r.endpoints("other")[0].0.ipv4, Some(ip("172.17.0.2")));
}

/// Every endpoint's port is bound to the endpoint's MAC and address, so that a sandbox
/// cannot send from a neighbour's; the binding goes with the endpoint.
#[test]
fn endpoint_ports_are_bound_to_their_mac_and_address() {
    use std::net::IpAddr;
    use tapnet_switch::{MacAddr, PortBinding};

    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    r.sandbox("web", &["pets", "bridge"]);
    let eps = r.endpoints("web");
    assert_eq!(eps.len(), 2);
    for (e, _) in &eps {
        let want = PortBinding::new(
            e.mac.parse::<MacAddr>().unwrap(),
            [IpAddr::V4(e.ipv4.unwrap())],
        );
        assert_eq!(r.p().binding(&e.id), Some(want), "{}", e.ifname);
    }
    r.d().remove_sandbox("web").unwrap();
    for (e, _) in &eps {
        assert_eq!(r.p().binding(&e.id), None);
    }
}

#[test]
fn an_endpoint_the_datapath_cannot_detach_keeps_its_address() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let web = r.sandbox("web", &["pets"]);
    assert_eq!(r.endpoints("web")[0].0.ipv4, Some(ip("10.1.0.2")));
    // Disconnecting: the datapath keeps the port (and the static MAC of the address),
    // so the endpoint stays, with its address and its interface.
    r.p().fail(Op::Detach);
    assert_eq!(
        api(r.d().disconnect("pets", "web").unwrap_err()),
        (500, "Detach failed (as the test asked)".into())
    );
    assert_eq!(r.endpoints("web").len(), 1);
    assert_eq!(r.p().attached().len(), 1);
    let ns = r.p().namespace(&web.netns).unwrap();
    assert_eq!(ns.interfaces.keys().collect::<Vec<_>>(), ["eth0"]);
    // Its address is not given to another sandbox.
    r.sandbox("db", &["pets"]);
    assert_eq!(r.endpoints("db")[0].0.ipv4, Some(ip("10.1.0.3")));
    // Once the datapath lets go, the disconnect goes through and frees the address.
    r.d().disconnect("pets", "web").unwrap();
    assert!(r.endpoints("web").is_empty());
    // Removing a sandbox: the same.
    r.p().fail(Op::Detach);
    assert_eq!(
        api(r.d().remove_sandbox("db").unwrap_err()),
        (500, "Detach failed (as the test asked)".into())
    );
    assert_eq!(r.endpoints("db")[0].0.ipv4, Some(ip("10.1.0.3")));
    assert_eq!(r.p().attached().len(), 1);
    r.sandbox("cache", &["pets"]);
    assert_eq!(r.endpoints("cache")[0].0.ipv4, Some(ip("10.1.0.2")));
    r.d().remove_sandbox("db").unwrap();
    r.sandbox("queue", &["pets"]);
    assert_eq!(r.endpoints("queue")[0].0.ipv4, Some(ip("10.1.0.3")));
    // After a restart the records and the datapath agree.
    let mut r = r;
    r.restart();
    assert_eq!(r.p().attached().len(), 2);
}
