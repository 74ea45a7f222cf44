use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn spec(n: u8, name: &str, subnet: Option<&str>) -> Command {
    Command::CreateNetwork(NetworkSpec {
        id: id(n),
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        attachable: true,
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
    })
}

fn net(a: Answer) -> SwarmNetwork {
    match a {
        Answer::Network(n) => n,
        a => panic!("not a network: {a:?}"),
    }
}

fn alloc(
    s: &mut ClusterState,
    net: &str,
    ep: &str,
    addr: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, StateError> {
    match s.apply(&Command::Allocate {
        network: net.into(),
        endpoint: ep.into(),
        address: addr,
    })? {
        Answer::Address(a) => Ok(a),
        a => panic!("not an address: {a:?}"),
    }
}

#[test]
fn networks_get_vnis_from_4096_and_24s_of_10_8() {
    let mut s = ClusterState::default();
    let a = net(s.apply(&spec(1, "a", None)).unwrap());
    assert_eq!(a.vni, 4096);
    assert_eq!(a.subnet.to_string(), "10.0.0.0/24");
    assert_eq!(a.gateway, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(a.driver, "overlay");
    assert!(a.attachable);
    let b = net(s.apply(&spec(2, "b", Some("10.0.2.0/23"))).unwrap());
    assert_eq!(b.vni, 4097);
    let c = net(s.apply(&spec(3, "c", None)).unwrap());
    assert_eq!(c.subnet.to_string(), "10.0.1.0/24", "first fit");
    assert_eq!(c.vni, 4098);
    let e = net(s.apply(&spec(5, "e", None)).unwrap());
    assert_eq!(e.subnet.to_string(), "10.0.4.0/24", "skips the whole /23");
    // A removed network frees its VNI and subnet for the next one.
    s.apply(&Command::RemoveNetwork {
        network: "a".into(),
    })
    .unwrap();
    let d = net(s.apply(&spec(4, "d", None)).unwrap());
    assert_eq!(
        (d.vni, d.subnet.to_string().as_str()),
        (4096, "10.0.0.0/24")
    );
}

#[test]
fn create_errors_have_dockers_texts() {
    let mut s = ClusterState::default();
    s.apply(&spec(1, "a", Some("10.9.0.0/16"))).unwrap();
    let e = s.apply(&spec(2, "a", None)).unwrap_err();
    assert_eq!(e.to_string(), "network with name a already exists");
    let e = s.apply(&spec(2, "b", Some("10.9.3.0/24"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Pool overlaps with other one on this address space"
    );
    let e = s.apply(&spec(2, "b", Some("10.8.3.1/24"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid subnet 10.8.3.1/24: it should be 10.8.3.0/24"
    );
    let e = s.apply(&spec(1, "b", None)).unwrap_err();
    assert!(matches!(e, StateError::IdExists(_)));
    let mut bad = spec(2, "b", None);
    if let Command::CreateNetwork(sp) = &mut bad {
        sp.id = "xyz".into();
    }
    assert!(matches!(s.apply(&bad), Err(StateError::BadId(_))));
    // A /8 taking the whole default pool exhausts it.
    let mut s = ClusterState::default();
    s.apply(&spec(1, "all", Some("10.0.0.0/8"))).unwrap();
    let e = s.apply(&spec(2, "b", None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "all predefined address pools have been fully subnetted"
    );
}

#[test]
fn allocation_is_serial_and_never_hands_out_a_held_address() {
    let mut s = ClusterState::default();
    s.apply(&spec(1, "n", Some("10.1.0.0/29"))).unwrap();
    // .0 network, .1 gateway, .7 broadcast: .2–.6 are for endpoints.
    let a = alloc(&mut s, "n", "e1", None).unwrap();
    assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
    let b = alloc(&mut s, "n", "e2", None).unwrap();
    assert_eq!(b, Ipv4Addr::new(10, 1, 0, 3));
    s.apply(&Command::Release {
        network: "n".into(),
        endpoint: "e1".into(),
    })
    .unwrap();
    // Serial: the released .2 is not the next one.
    assert_eq!(
        alloc(&mut s, "n", "e3", None).unwrap(),
        Ipv4Addr::new(10, 1, 0, 4)
    );
    let e = alloc(&mut s, "n", "e4", Some(Ipv4Addr::new(10, 1, 0, 3))).unwrap_err();
    assert_eq!(e.to_string(), "Address already in use");
    let e = alloc(&mut s, "n", "e4", Some(Ipv4Addr::new(10, 1, 0, 1))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Address already in use",
        "the gateway is held"
    );
    let e = alloc(&mut s, "n", "e4", Some(Ipv4Addr::new(10, 1, 0, 7))).unwrap_err();
    assert_eq!(e.to_string(), "requested address is out of range");
    let e = alloc(&mut s, "n", "e4", Some(Ipv4Addr::new(10, 2, 0, 3))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no configured subnet contains IP address 10.2.0.3"
    );
    assert_eq!(
        alloc(&mut s, "n", "e4", Some(Ipv4Addr::new(10, 1, 0, 6))).unwrap(),
        Ipv4Addr::new(10, 1, 0, 6)
    );
    assert_eq!(
        alloc(&mut s, "n", "e5", None).unwrap(),
        Ipv4Addr::new(10, 1, 0, 5)
    );
    // Wraps to the released .2.
    assert_eq!(
        alloc(&mut s, "n", "e6", None).unwrap(),
        Ipv4Addr::new(10, 1, 0, 2)
    );
    let e = alloc(&mut s, "n", "e7", None).unwrap_err();
    assert_eq!(e.to_string(), "no available addresses on this pool");
    let e = alloc(&mut s, "n", "e6", None).unwrap_err();
    assert!(matches!(e, StateError::EndpointExists { .. }));
    let held: Vec<Ipv4Addr> = s
        .network("n")
        .unwrap()
        .endpoints
        .values()
        .copied()
        .collect();
    let mut dedup = held.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(held.len(), dedup.len());
}

#[test]
fn remove_is_refused_while_endpoints_hold_addresses() {
    let mut s = ClusterState::default();
    let n = net(s.apply(&spec(1, "n", None)).unwrap());
    alloc(&mut s, &n.id, "e1", None).unwrap();
    let e = s
        .apply(&Command::RemoveNetwork {
            network: "n".into(),
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "error while removing network: network n id {} has active endpoints",
            n.id
        )
    );
    let e = s
        .apply(&Command::Release {
            network: "n".into(),
            endpoint: "zz".into(),
        })
        .unwrap_err();
    assert!(matches!(e, StateError::EndpointNotFound { .. }));
    s.apply(&Command::Release {
        network: "n".into(),
        endpoint: "e1".into(),
    })
    .unwrap();
    s.apply(&Command::RemoveNetwork {
        network: n.id.clone(),
    })
    .unwrap();
    let e = s
        .apply(&Command::RemoveNetwork {
            network: "n".into(),
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "network n not found");
}

#[test]
fn roles_and_node_removal() {
    let mut s = ClusterState::default();
    s.apply(&Command::SetRole {
        node: 1,
        role: Role::Manager,
    })
    .unwrap();
    s.apply(&Command::SetRole {
        node: 2,
        role: Role::Worker,
    })
    .unwrap();
    s.apply(&Command::SetRole {
        node: 2,
        role: Role::Manager,
    })
    .unwrap();
    assert_eq!(s.nodes[&2].role, Role::Manager);
    s.apply(&Command::RemoveNode { node: 2 }).unwrap();
    assert_eq!(
        s.apply(&Command::RemoveNode { node: 2 }).unwrap_err(),
        StateError::NodeNotFound(2)
    );
    assert_eq!(s.nodes.len(), 1);
}

#[test]
fn node_info_and_the_data_path_port() {
    let mut s = ClusterState::default();
    assert_eq!(s.data_path_port, 0);
    s.apply(&Command::Init { data_path_port: 0 }).unwrap();
    assert_eq!(s.data_path_port, DEFAULT_DATA_PATH_PORT);
    s.apply(&Command::Init {
        data_path_port: 7789,
    })
    .unwrap();
    assert_eq!(s.data_path_port, 7789);
    let info = NodeInfo {
        role: Role::Worker,
        hostname: "w1".into(),
        addr: "192.0.2.5:2377".into(),
        gossip: "192.0.2.5:7946".into(),
        data: "192.0.2.5".into(),
    };
    s.apply(&Command::SetNode {
        node: 5,
        info: info.clone(),
    })
    .unwrap();
    assert_eq!(s.nodes[&5], info);
    // Promotion keeps the addresses.
    s.apply(&Command::SetRole {
        node: 5,
        role: Role::Manager,
    })
    .unwrap();
    assert_eq!(
        s.nodes[&5],
        NodeInfo {
            role: Role::Manager,
            ..info
        }
    );
    let json = serde_json::to_vec(&s).unwrap();
    assert_eq!(serde_json::from_slice::<ClusterState>(&json).unwrap(), s);
}

#[test]
fn replicas_applying_the_same_commands_agree_and_serde_round_trips() {
    let cmds = vec![
        spec(1, "a", None),
        spec(2, "b", Some("10.5.0.0/16")),
        Command::Allocate {
            network: "a".into(),
            endpoint: "x".into(),
            address: None,
        },
        Command::Allocate {
            network: "b".into(),
            endpoint: "y".into(),
            address: Some(Ipv4Addr::new(10, 5, 3, 3)),
        },
        spec(3, "a", None),
        Command::Release {
            network: "a".into(),
            endpoint: "x".into(),
        },
        Command::SetRole {
            node: 7,
            role: Role::Worker,
        },
        Command::Init {
            data_path_port: 4790,
        },
        Command::SetNode {
            node: 8,
            info: NodeInfo::with_role(Role::Manager),
        },
    ];
    let (mut r1, mut r2) = (ClusterState::default(), ClusterState::default());
    let a1: Vec<_> = cmds.iter().map(|c| r1.apply(c)).collect();
    let a2: Vec<_> = cmds.iter().map(|c| r2.apply(c)).collect();
    assert_eq!(a1, a2);
    assert_eq!(r1, r2);
    let json = serde_json::to_vec(&r1).unwrap();
    let back: ClusterState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, r1);
    let cj = serde_json::to_string(&cmds).unwrap();
    let cb: Vec<Command> = serde_json::from_str(&cj).unwrap();
    assert_eq!(cb, cmds);
}
