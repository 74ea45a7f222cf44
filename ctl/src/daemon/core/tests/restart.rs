//! Restarts: what was committed comes back, live state is made again from the records,
//! and what a removal left behind is cleaned up.

use tapnet_nat::portspec::{PortMapping, Proto};

use super::*;
use crate::daemon::plumbing::Op;

#[test]
fn records_come_back_and_the_datapath_is_made_again() {
    let mut r = Rig::new();
    let pets = r.create_net("pets", "10.1.0.0/24");
    let web = r
        .d()
        .create_sandbox(
            Some("web".into()),
            None,
            attach(&["pets", "bridge"]),
            &[PortMapping {
                host_ip: None,
                host_ports: Some((8080, 8080)),
                container_port: 80,
                proto: Proto::Tcp,
            }],
        )
        .unwrap();
    let eps = r.endpoints("web");
    let ns_before = r.p().namespace(&web.netns).unwrap();
    r.restart();
    // The same records.
    assert_eq!(r.network("pets"), pets);
    assert_eq!(r.d().sandbox("web").unwrap().0, web);
    assert_eq!(r.endpoints("web"), eps);
    // The datapath again: both networks, both endpoints, the same interfaces and route.
    let plumbed: Vec<String> = r.p().networks().into_iter().map(|p| p.id).collect();
    assert!(plumbed.contains(&pets.id) && plumbed.len() == 2);
    assert_eq!(r.p().attached().len(), 2);
    assert_eq!(r.p().namespace(&web.netns).unwrap(), ns_before);
    // The ports bound again, exactly, and carried to the same address.
    assert_eq!(r.p().bound().len(), 2);
    let live = r.p().published(&web.id);
    assert_eq!(live.len(), 2);
    // Ties go to the network whose name sorts first: bridge.
    assert!(
        live.iter()
            .all(|p| p.host.port() == 8080 && p.target == (ip("172.17.0.2"), 80))
    );
    // IPAM state came back too: the next address is the next one.
    r.sandbox("db", &["pets"]);
    assert_eq!(r.endpoints("db")[0].0.ipv4, Some(ip("10.1.0.3")));
}

#[test]
fn a_namespace_left_by_a_removal_is_deleted_at_the_next_start() {
    let mut r = Rig::new();
    let sb = r.sandbox("web", &[]);
    // The record goes, the namespace cannot: the removal still succeeds (it is noted).
    r.p().fail(Op::RemoveNamespace);
    r.d().remove_sandbox("web").unwrap();
    assert!(r.p().namespace(&sb.netns).is_some());
    r.restart();
    assert!(r.p().namespace(&sb.netns).is_none());
    assert!(r.d().sandboxes().is_empty());
}

#[test]
fn a_sandbox_that_cannot_be_restored_keeps_its_records() {
    let mut r = Rig::new();
    r.sandbox("web", &[]);
    drop(r.daemon.take());
    r.plumbing = std::sync::Arc::new(r.plumbing.restarted().unwrap());
    r.p().fail(Op::Plug);
    r.daemon = Some(open(&r.dir, &r.plumbing));
    // Not plumbed, but not forgotten: a later start restores it.
    assert!(r.p().attached().is_empty());
    assert_eq!(r.d().sandboxes().len(), 1);
    r.restart();
    assert_eq!(r.p().attached().len(), 1);
}

#[test]
fn rootless_sandboxes_wait_for_their_process_or_go_with_it() {
    let mut r = Rig::with(MemoryPlumbing::new().rootless());
    r.p().start_process(100);
    r.p().start_process(200);
    let keep = r
        .d()
        .create_rootless_sandbox(
            Some("keep".into()),
            None,
            Vec::new(),
            &[PortMapping {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_ports: Some((8080, 8080)),
                container_port: 80,
                proto: Proto::Tcp,
            }],
            100,
        )
        .unwrap();
    r.d()
        .create_rootless_sandbox(Some("gone".into()), None, Vec::new(), &[], 200)
        .unwrap();
    r.d()
        .adopt_taps(
            "keep",
            vec!["eth0".into()],
            vec![r.p().tap("eth0").unwrap()],
            100,
        )
        .unwrap();
    r.p().end_process(200);
    r.restart();
    let names: Vec<String> = r.d().sandboxes().into_iter().map(|(s, _)| s.name).collect();
    assert_eq!(names, ["keep"]);
    // Its ports are bound again at once; its interfaces wait for the process.
    assert_eq!(r.p().published(&keep.id).len(), 1);
    assert!(r.p().attached().is_empty());
    r.d()
        .adopt_taps(
            "keep",
            vec!["eth0".into()],
            vec![r.p().tap("eth0").unwrap()],
            100,
        )
        .unwrap();
    assert_eq!(r.p().attached().len(), 1);
}
