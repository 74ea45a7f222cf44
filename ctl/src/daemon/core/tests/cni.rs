//! CNI attachments: ADD, DEL, CHECK, GC and STATUS on the in-memory plumbing, with the
//! CNI conventions (ADD twice fails and changes nothing, DEL is idempotent), and what a
//! restart keeps and removes.

use tapnet_nat::portspec::{PortMapping, Proto};

use super::*;
use crate::daemon::model::External;
use crate::daemon::plumbing::Op;

const NS1: &str = "/run/netns/cni-test-1";
const NS2: &str = "/run/netns/cni-test-2";
const C1: &str = "0123456789abcdef0123";
const C2: &str = "fedcba9876543210fedc";

/// A rig with network `pets` (10.7.0.0/24) and two runtime namespaces.
fn rig() -> Rig {
    let r = Rig::new();
    r.create_net("pets", "10.7.0.0/24");
    r.p().add_runtime_namespace(NS1);
    r.p().add_runtime_namespace(NS2);
    r
}

#[test]
fn add_plugs_a_tap_into_the_runtimes_namespace() {
    let r = rig();
    let a = r
        .d()
        .cni_add("pets", C1, NS1, "eth0", Some("web".into()), &[])
        .unwrap();
    assert_eq!(a.sandbox.name, "web");
    assert_eq!(a.sandbox.netns, NS1);
    assert_eq!(
        a.sandbox.external,
        Some(External::Cni {
            container_id: C1.into()
        })
    );
    assert_eq!(a.endpoint.ifname, "eth0");
    assert_eq!(a.endpoint.ipv4, Some(ip("10.7.0.2")));
    assert_eq!(a.endpoint.prefix_len, 24);
    assert_eq!(a.gateway, Some(ip("10.7.0.1")));
    assert_eq!(a.nameserver, Some(ip("10.7.0.1")));
    assert!(a.default_route);
    let ns = r.p().namespace(NS1).unwrap();
    assert_eq!(ns.interfaces["eth0"].addr, Some((ip("10.7.0.2"), 24)));
    assert_eq!(ns.default_route, Some((ip("10.7.0.1"), "eth0".into())));
    assert!(r.d().endpoint_attached(&a.endpoint.id));
    // The daemon never writes a runtime's resolv.conf.
    assert_eq!(r.p().resolv_conf(NS1), None);
    // Shown as any sandbox, on the network.
    let (_, eps) = r.d().network("pets").unwrap();
    assert_eq!(eps.len(), 1);
}

#[test]
fn the_name_falls_back_when_invalid_or_taken() {
    let r = rig();
    r.sandbox("web", &["pets"]);
    let a = r
        .d()
        .cni_add("pets", C1, NS1, "eth0", Some("web".into()), &[])
        .unwrap();
    assert_eq!(a.sandbox.name, "cni-0123456789ab-eth0");
    let b = r
        .d()
        .cni_add("pets", C2, NS2, "eth0", Some("bad name!".into()), &[])
        .unwrap();
    assert_eq!(b.sandbox.name, "cni-fedcba987654-eth0");
    // A CNI container cannot be removed or connected through tapnet.
    let e = r.d().remove_sandbox(&b.sandbox.name).unwrap_err();
    assert_eq!(api(e).0, 403);
}

#[test]
fn add_twice_fails_and_changes_nothing() {
    let r = rig();
    r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    let before = (r.d().sandboxes(), r.p().namespace(NS1), r.p().attached());
    let e = r
        .d()
        .cni_add("pets", C1, NS1, "eth0", None, &[])
        .unwrap_err();
    let (status, text) = api(e);
    assert_eq!(status, 409);
    assert!(text.contains("attached as eth0 already"), "{text}");
    assert_eq!(
        (r.d().sandboxes(), r.p().namespace(NS1), r.p().attached()),
        before
    );
    // The same container on another interface is another attachment.
    r.create_net("db", "10.8.0.0/24");
    let b = r.d().cni_add("db", C1, NS1, "eth1", None, &[]).unwrap();
    assert_eq!(b.endpoint.ifname, "eth1");
    // The first attachment keeps the default route.
    assert!(!b.default_route);
    let ns = r.p().namespace(NS1).unwrap();
    assert_eq!(ns.default_route, Some((ip("10.7.0.1"), "eth0".into())));
}

#[test]
fn add_into_a_namespace_with_that_interface_fails() {
    let r = rig();
    r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    // Another container id, the same namespace and interface name.
    let e = r
        .d()
        .cni_add("pets", C2, NS1, "eth0", None, &[])
        .unwrap_err();
    assert_eq!(api(e).0, 409);
    assert_eq!(r.d().sandboxes().len(), 1);
}

#[test]
fn add_refuses_what_cannot_be_done() {
    let r = rig();
    let cases = [
        ("host", C1, NS1, "eth0", 403),
        ("none", C1, NS1, "eth0", 403),
        ("nosuch", C1, NS1, "eth0", 404),
        ("pets", C1, "relative/ns", "eth0", 400),
        ("pets", C1, "/run/netns/absent", "eth0", 400),
        ("pets", "-bad", NS1, "eth0", 400),
        ("pets", C1, NS1, "a/b", 400),
        ("pets", C1, NS1, "sixteen-chars-xx", 400),
    ];
    for (net, c, ns, ifname, want) in cases {
        let e = r.d().cni_add(net, c, ns, ifname, None, &[]).unwrap_err();
        assert_eq!(api(e).0, want, "{net} {c} {ns} {ifname}");
    }
    assert!(r.d().sandboxes().is_empty());
    assert!(r.p().attached().is_empty());
}

#[test]
fn a_plumbing_failure_leaves_nothing() {
    let r = rig();
    r.p().fail(Op::Plug);
    r.d()
        .cni_add("pets", C1, NS1, "eth0", None, &[])
        .unwrap_err();
    assert!(r.d().sandboxes().is_empty());
    // The address was not kept.
    let a = r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    assert_eq!(a.endpoint.ipv4, Some(ip("10.7.0.2")));
}

#[test]
fn del_removes_the_interface_and_releases_the_address() {
    let r = rig();
    let a = r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    r.d().cni_del(C1, "eth0").unwrap();
    assert!(r.d().sandboxes().is_empty());
    assert!(r.p().attached().is_empty());
    // The namespace is the runtime's: it stays, without the interface.
    let ns = r.p().namespace(NS1).unwrap();
    assert!(ns.interfaces.is_empty());
    assert_eq!(ns.default_route, None);
    // Again, and for a container never added: no error.
    r.d().cni_del(C1, "eth0").unwrap();
    r.d().cni_del("never-added", "eth0").unwrap();
    // The address is free again.
    let b = r.d().cni_add("pets", C2, NS2, "eth0", None, &[]).unwrap();
    assert_eq!(b.endpoint.ipv4, a.endpoint.ipv4);
}

#[test]
fn del_after_the_namespace_is_gone_succeeds() {
    let r = rig();
    r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    r.p().remove_runtime_namespace(NS1);
    r.d().cni_del(C1, "eth0").unwrap();
    assert!(r.d().sandboxes().is_empty());
    assert!(r.p().attached().is_empty());
}

#[test]
fn del_of_the_route_holder_moves_the_default_route() {
    let r = rig();
    r.create_net("db", "10.8.0.0/24");
    r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    r.d().cni_add("db", C1, NS1, "eth1", None, &[]).unwrap();
    r.d().cni_del(C1, "eth0").unwrap();
    let ns = r.p().namespace(NS1).unwrap();
    assert_eq!(ns.default_route, Some((ip("10.8.0.1"), "eth1".into())));
    let a = r.d().cni_check(C1, "eth1", NS1).unwrap();
    assert!(a.default_route);
}

#[test]
fn check_finds_what_add_made_and_what_went_missing() {
    let r = rig();
    let a = r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    assert_eq!(r.d().cni_check(C1, "eth0", NS1).unwrap(), a);
    // Unknown attachment: 404 (the plugin's "container unknown").
    let e = r.d().cni_check(C2, "eth0", NS1).unwrap_err();
    assert_eq!(api(e).0, 404);
    // Another namespace than ADD's.
    let e = r.d().cni_check(C1, "eth0", NS2).unwrap_err();
    assert!(api(e).1.contains("not /run/netns/cni-test-2"));
    // The interface deleted behind the daemon's back.
    r.p().remove_interface(NS1, "eth0");
    let (status, text) = api(r.d().cni_check(C1, "eth0", NS1).unwrap_err());
    assert_eq!(status, 500);
    assert!(text.contains("has no such interface"), "{text}");
    // The namespace gone.
    r.p().remove_runtime_namespace(NS1);
    let text = api(r.d().cni_check(C1, "eth0", NS1).unwrap_err()).1;
    assert!(text.contains("is gone"), "{text}");
}

#[test]
fn gc_removes_what_the_runtime_does_not_list() {
    let r = rig();
    r.create_net("db", "10.8.0.0/24");
    r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    r.d().cni_add("pets", C2, NS2, "eth0", None, &[]).unwrap();
    r.d().cni_add("db", C2, NS2, "eth1", None, &[]).unwrap();
    r.sandbox("own", &["pets"]);
    let removed = r
        .d()
        .cni_gc("pets", &[(C1.to_string(), "eth0".to_string())])
        .unwrap();
    assert_eq!(removed, vec!["cni-fedcba987654-eth0".to_string()]);
    let names: Vec<String> = r.d().sandboxes().into_iter().map(|s| s.0.name).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.contains(&"cni-fedcba987654-eth0".to_string()));
    // The other network's attachment and tapnet's own sandbox stay; the attachment of
    // the same container on db took the default route over.
    assert_eq!(
        r.p().namespace(NS2).unwrap().default_route,
        Some((ip("10.8.0.1"), "eth1".into()))
    );
    // An empty list removes every attachment of the network; an unknown network has
    // nothing to collect.
    assert_eq!(r.d().cni_gc("pets", &[]).unwrap().len(), 1);
    assert!(r.d().cni_gc("nosuch", &[]).unwrap().is_empty());
    assert_eq!(r.d().sandboxes().len(), 2);
}

#[test]
fn status_needs_a_network_with_addresses_left() {
    let r = rig();
    r.d().cni_status("pets").unwrap();
    assert_eq!(api(r.d().cni_status("nosuch").unwrap_err()).0, 404);
    assert_eq!(api(r.d().cni_status("host").unwrap_err()).0, 403);
    r.create_net("tiny", "10.9.0.0/30");
    r.d().cni_status("tiny").unwrap();
    r.d().cni_add("tiny", C1, NS1, "eth0", None, &[]).unwrap();
    assert_eq!(api(r.d().cni_status("tiny").unwrap_err()).0, 500);
}

#[test]
fn a_restart_plugs_attachments_again_and_removes_those_whose_container_is_gone() {
    let mut r = rig();
    let a = r.d().cni_add("pets", C1, NS1, "eth0", None, &[]).unwrap();
    let b = r.d().cni_add("pets", C2, NS2, "eth0", None, &[]).unwrap();
    r.p().remove_runtime_namespace(NS2);
    r.restart();
    // The first comes back, plugged, with its route.
    assert_eq!(r.d().cni_check(C1, "eth0", NS1).unwrap(), a);
    assert!(r.p().attached().contains_key(&a.endpoint.id));
    assert_eq!(
        r.p().namespace(NS1).unwrap().default_route,
        Some((ip("10.7.0.1"), "eth0".into()))
    );
    // The second's container is gone: so is its attachment, and its address is free.
    assert_eq!(r.d().sandboxes().len(), 1);
    r.d().cni_del(C2, "eth0").unwrap();
    r.p().add_runtime_namespace(NS2);
    let c = r
        .d()
        .cni_add("pets", "another", NS2, "eth0", None, &[])
        .unwrap();
    assert_eq!(c.endpoint.ipv4, b.endpoint.ipv4);
}

fn tcp_port(host_ip: &str, host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        host_ip: Some(host_ip.parse().unwrap()),
        host_ports: Some((host_port, host_port)),
        container_port,
        proto: Proto::Tcp,
    }
}

#[test]
fn port_mappings_are_published_closed_with_the_attachment_and_restored() {
    let mut r = rig();
    let web = [tcp_port("127.0.0.1", 8080, 80)];
    let a = r.d().cni_add("pets", C1, NS1, "eth0", None, &web).unwrap();
    assert_eq!(a.sandbox.ports.len(), 1);
    let p = &a.sandbox.ports[0];
    assert_eq!(
        (p.host_ip, p.host_port, p.container_port, p.proto.as_str()),
        ("127.0.0.1".parse().unwrap(), 8080, 80, "tcp")
    );
    // Carried to the container's address, and stored.
    let live = r.p().published(&a.sandbox.id);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].target, (ip("10.7.0.2"), 80));
    assert_eq!(
        r.d().sandbox(&a.sandbox.name).unwrap().0.ports,
        a.sandbox.ports
    );
    let bound = r.p().bound();
    assert_eq!(bound.len(), 1);

    // The same host port for another container: Docker's error, and nothing of it
    // stays (no attachment, no interface, no address, nothing more bound).
    let e = r
        .d()
        .cni_add(
            "pets",
            C2,
            NS2,
            "eth0",
            None,
            &[tcp_port("127.0.0.1", 8080, 90)],
        )
        .unwrap_err();
    let (status, text) = api(e);
    assert_eq!(status, 500);
    assert!(
        text.ends_with("Bind for 127.0.0.1:8080 failed: port is already allocated"),
        "{text}"
    );
    assert_eq!(r.d().sandboxes().len(), 1);
    assert!(r.p().namespace(NS2).unwrap().interfaces.is_empty());
    assert_eq!(r.p().bound(), bound);
    let b = r.d().cni_add("pets", C2, NS2, "eth0", None, &[]).unwrap();
    assert_eq!(b.endpoint.ipv4, Some(ip("10.7.0.3")));

    // A restart binds it again, to the same container.
    r.restart();
    assert_eq!(r.p().bound(), bound);
    let live = r.p().published(&a.sandbox.id);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].target, (ip("10.7.0.2"), 80));

    // DEL closes it.
    r.d().cni_del(C1, "eth0").unwrap();
    assert!(r.p().bound().is_empty());
    assert!(r.p().published(&a.sandbox.id).is_empty());
}

#[test]
fn check_fails_when_the_ports_could_not_be_bound_again() {
    let mut r = rig();
    let web = [tcp_port("127.0.0.1", 8080, 80)];
    r.d().cni_add("pets", C1, NS1, "eth0", None, &web).unwrap();
    r.d().cni_check(C1, "eth0", NS1).unwrap();
    // Restarted while something else holds the port: the attachment comes back, its
    // port cannot, and CHECK says so.
    drop(r.daemon.take());
    r.plumbing = Arc::new(r.plumbing.restarted().unwrap());
    let _held = r
        .p()
        .occupy(Proto::Tcp, "127.0.0.1:8080".parse().unwrap())
        .unwrap();
    r.daemon = Some(open(&r.dir, &r.plumbing));
    let (status, text) = api(r.d().cni_check(C1, "eth0", NS1).unwrap_err());
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains("none of its published ports is bound"),
        "{text}"
    );
}
