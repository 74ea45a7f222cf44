//! Overlay networks through fake swarm hooks: create, list, inspect, remove through the
//! swarm; sandboxes on them (addresses from the swarm, the datapath on the VTEP, the
//! swarm told); remote endpoints in the VTEP tables and the DNS; rollback; restarts.

use std::net::SocketAddrV4;
use std::sync::Mutex;

use simple_dns::TYPE;

use super::dns::ask;
use super::*;
use crate::cluster::{Answer, ClusterState, Command, NetworkSpec as SwarmSpec, SwarmNetwork};
use crate::daemon::core::{
    LocalEndpoint, OPT_VXLANID, OVERLAY_MTU, RemoteEndpoint, SwarmError, SwarmHooks,
};
use crate::daemon::plumbing::Op;

/// What the fake swarm was asked, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Allocate(String, Option<Ipv4Addr>),
    Release(String),
    Up(String, Ipv4Addr),
    Down(String),
    Attach(bool),
}

/// A swarm in memory: the replicated state machine applied directly; every call is
/// recorded (network ids left out: one network per test).
#[derive(Default)]
struct FakeSwarm {
    state: Mutex<ClusterState>,
    calls: Mutex<Vec<Call>>,
    /// Refuse the next allocation.
    refuse_allocate: Mutex<bool>,
}

fn refused(e: impl std::fmt::Display) -> SwarmError {
    SwarmError {
        status: 409,
        message: e.to_string(),
    }
}

impl FakeSwarm {
    fn apply(&self, cmd: Command) -> Result<Answer, SwarmError> {
        self.state.lock().unwrap().apply(&cmd).map_err(refused)
    }

    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl SwarmHooks for FakeSwarm {
    fn networks(&self) -> Vec<SwarmNetwork> {
        self.state
            .lock()
            .unwrap()
            .networks
            .values()
            .cloned()
            .collect()
    }

    fn create_network(&self, spec: SwarmSpec) -> Result<SwarmNetwork, SwarmError> {
        match self.apply(Command::CreateNetwork(spec))? {
            Answer::Network(n) => Ok(n),
            other => panic!("{other:?}"),
        }
    }

    fn remove_network(&self, id: &str) -> Result<(), SwarmError> {
        self.apply(Command::RemoveNetwork { network: id.into() })
            .map(drop)
    }

    fn allocate(
        &self,
        net_id: &str,
        ep_id: &str,
        addr: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, SwarmError> {
        self.record(Call::Allocate(ep_id.into(), addr));
        if std::mem::take(&mut *self.refuse_allocate.lock().unwrap()) {
            return Err(SwarmError {
                status: 503,
                message: "no leader".into(),
            });
        }
        match self.apply(Command::Allocate {
            network: net_id.into(),
            endpoint: ep_id.into(),
            address: addr,
        })? {
            Answer::Address(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    fn release(&self, net_id: &str, ep_id: &str) -> Result<(), SwarmError> {
        self.record(Call::Release(ep_id.into()));
        self.apply(Command::Release {
            network: net_id.into(),
            endpoint: ep_id.into(),
        })
        .map(drop)
    }

    fn endpoint_up(&self, _net_id: &str, ep: &LocalEndpoint) {
        self.record(Call::Up(ep.id.clone(), ep.ip));
    }

    fn endpoint_down(&self, _net_id: &str, ep_id: &str) {
        self.record(Call::Down(ep_id.into()));
    }

    fn attach(&self, _net_id: &str, attached: bool) {
        self.record(Call::Attach(attached));
    }
}

const VTEP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4789);

/// A rig in a swarm: the VTEP up, the fake swarm's hooks installed.
fn swarm_rig() -> (Rig, Arc<FakeSwarm>) {
    let r = Rig::new();
    let s = Arc::new(FakeSwarm::default());
    r.d().set_vtep(VTEP).unwrap();
    r.d().set_swarm(Some(s.clone()));
    (r, s)
}

fn overlay(
    r: &Rig,
    name: &str,
    subnet: &str,
    attachable: bool,
) -> Result<NetworkRecord, DaemonError> {
    r.d().create_network(
        NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            attachable,
            ipam: vec![crate::daemon::core::IpamSpec {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        false,
    )
}

fn remote(ip: &str, vtep: &str, name: &str) -> RemoteEndpoint {
    let ip: Ipv4Addr = ip.parse().unwrap();
    RemoteEndpoint {
        ip,
        mac: tapnet_switch::MacAddr::from_ipv4(ip).0,
        vtep: vtep.parse().unwrap(),
        name: name.into(),
        aliases: vec![format!("{name}-alias")],
    }
}

#[test]
fn without_a_swarm_overlay_networks_are_refused_with_dockers_text() {
    let r = Rig::new();
    let e = overlay(&r, "ov", "", true).unwrap_err();
    assert_eq!(
        api(e),
        (
            503,
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.".to_string()
        )
    );
    assert!(r.d().network("ov").is_err());
}

#[test]
fn overlay_networks_are_created_listed_inspected_and_removed_through_the_swarm() {
    let (r, s) = swarm_rig();
    let n = overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    assert_eq!((n.driver.as_str(), n.scope.as_str()), ("overlay", "swarm"));
    assert!(n.attachable);
    assert_eq!(n.options[OPT_VXLANID], "4096");
    assert_eq!(n.ipam[0].subnet, "10.9.0.0/24");
    assert_eq!(n.ipam[0].gateway, Some(ip("10.9.0.1")));
    // Listed and found by name, id and id prefix; not stored, not plumbed.
    assert!(r.d().networks().iter().any(|x| x.id == n.id));
    assert_eq!(r.network("ov").id, n.id);
    assert_eq!(r.d().network(&n.id[..10]).unwrap().0.name, "ov");
    assert!(r.p().networks().iter().all(|p| p.id != n.id));
    // A name the swarm holds is refused by the swarm.
    assert_eq!(api(overlay(&r, "ov", "", true).unwrap_err()).0, 409);
    // Options tapnet's overlay driver does not have are refused.
    let e = r
        .d()
        .create_network(
            NetworkSpec {
                name: "ov2".into(),
                driver: "overlay".into(),
                options: [("encrypted".to_string(), String::new())].into(),
                ..Default::default()
            },
            false,
        )
        .unwrap_err();
    assert_eq!(api(e).0, 400);
    r.d().remove_network("ov").unwrap();
    assert!(s.networks().is_empty());
    assert_eq!(api(r.d().network("ov").unwrap_err()).0, 404);
}

#[test]
fn a_sandbox_instantiates_the_network_and_its_removal_reverses_everything() {
    let (r, s) = swarm_rig();
    let n = overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    let sb = r.sandbox("web", &["ov"]);
    let (e, net) = r.endpoints("web").remove(0);
    assert_eq!(net.id, n.id);
    assert_eq!(e.ipv4, Some(ip("10.9.0.2")));
    assert_eq!(e.mac, "02:42:0a:09:00:02");
    assert_eq!(
        s.calls(),
        vec![
            Call::Allocate(e.id.clone(), None),
            Call::Attach(true),
            Call::Up(e.id.clone(), ip("10.9.0.2")),
        ]
    );
    // The local instance: stored (same id), plumbed on the VTEP; the interface is in.
    let plan = r.p().networks().into_iter().find(|p| p.id == n.id).unwrap();
    assert_eq!(plan.overlay, Some(4096));
    assert_eq!(plan.mtu, OVERLAY_MTU);
    assert!(plan.gateway.is_some_and(|g| g.internal));
    assert_eq!(r.p().attached().get(&e.id), Some(&n.id));
    let ns = r.p().namespace(&sb.netns).unwrap();
    assert_eq!(ns.interfaces["eth0"].mtu, OVERLAY_MTU);
    // No external access: no default route; the gateway is the nameserver.
    assert_eq!(ns.default_route, None);
    assert!(r.p().resolv_conf(&sb.netns).unwrap().contains("10.9.0.1"));
    // The swarm's table is what local_swarm_endpoints republishes.
    let locals = r.d().local_swarm_endpoints();
    assert_eq!(locals.len(), 1);
    assert_eq!(locals[0].0, n.id);
    assert_eq!(locals[0].1.name, "web");
    // A second sandbox: no second attach; a static address passes through.
    r.d()
        .create_sandbox(
            Some("db".into()),
            None,
            vec![AttachSpec {
                network: "ov".into(),
                ipv4: Some("10.9.0.50".into()),
                ..Default::default()
            }],
            &[],
        )
        .unwrap();
    let db = r.endpoints("db").remove(0).0;
    assert_eq!(db.ipv4, Some(ip("10.9.0.50")));
    assert_eq!(
        s.calls(),
        vec![
            Call::Allocate(db.id.clone(), Some(ip("10.9.0.50"))),
            Call::Up(db.id.clone(), ip("10.9.0.50")),
        ]
    );
    r.d().remove_sandbox("db").unwrap();
    assert_eq!(
        s.calls(),
        vec![Call::Down(db.id.clone()), Call::Release(db.id.clone())]
    );
    // The last one: the network is let go of, here and in the swarm's eyes.
    r.d().remove_sandbox("web").unwrap();
    assert_eq!(
        s.calls(),
        vec![
            Call::Down(e.id.clone()),
            Call::Release(e.id.clone()),
            Call::Attach(false)
        ]
    );
    assert!(r.p().networks().iter().all(|p| p.id != n.id));
    assert!(r.p().attached().is_empty());
    // Still in the catalogue, as the swarm's (no local creation time).
    assert_eq!(r.network("ov").created, "0001-01-01T00:00:00Z");
    assert!(s.networks()[0].endpoints.is_empty());
}

#[test]
fn overlay_networks_refuse_ports_unattachable_networks_and_connect() {
    let (r, _s) = swarm_rig();
    overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    overlay(&r, "closed", "10.8.0.0/24", false).unwrap();
    let port = tapnet_nat::portspec::PortMapping {
        host_ip: None,
        host_ports: Some((8080, 8080)),
        container_port: 80,
        proto: tapnet_nat::portspec::Proto::Tcp,
    };
    let e = r
        .d()
        .create_sandbox(Some("web".into()), None, attach(&["ov"]), &[port])
        .unwrap_err();
    assert!(matches!(e, DaemonError::NoExternalNetwork(_)), "{e}");
    let e = r
        .d()
        .create_sandbox(Some("web".into()), None, attach(&["closed"]), &[])
        .unwrap_err();
    assert_eq!(
        api(e),
        (
            403,
            "Could not attach to network closed: rpc error: code = PermissionDenied desc = network closed not manually attachable".to_string()
        )
    );
    r.sandbox("web", &["bridge"]);
    let e = r
        .d()
        .connect("ov", "web", AttachSpec::default())
        .unwrap_err();
    assert_eq!(api(e).0, 403);
    // Nothing was left instantiated.
    assert!(r.p().networks().iter().all(|p| p.overlay.is_none()));
}

#[test]
fn a_failed_creation_gives_the_address_back_and_drops_the_instance() {
    let (r, s) = swarm_rig();
    let n = overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    r.p().fail(Op::Plug);
    r.d()
        .create_sandbox(Some("web".into()), None, attach(&["ov"]), &[])
        .unwrap_err();
    let calls = s.calls();
    assert!(
        matches!(&calls[..], [Call::Allocate(..), Call::Release(..)]),
        "{calls:?}"
    );
    assert!(s.networks()[0].endpoints.is_empty());
    assert!(r.p().networks().iter().all(|p| p.id != n.id));
    assert!(r.d().sandbox("web").is_err());
    // The swarm refusing an address: nothing is left either.
    *s.refuse_allocate.lock().unwrap() = true;
    let e = r
        .d()
        .create_sandbox(Some("web".into()), None, attach(&["bridge", "ov"]), &[])
        .unwrap_err();
    assert_eq!(api(e), (503, "no leader".to_string()));
    assert!(r.p().networks().iter().all(|p| p.id != n.id));
    assert!(r.p().attached().is_empty());
    // A later sandbox works, and holds the only address the swarm gave out.
    r.sandbox("web", &["ov"]);
    let e = r.endpoints("web").remove(0).0;
    assert_eq!(s.networks()[0].endpoints.get(&e.id).copied(), e.ipv4);
    assert_eq!(s.networks()[0].endpoints.len(), 1);
}

#[test]
fn remote_endpoints_are_programmed_and_answered_by_the_dns() {
    let (r, _s) = swarm_rig();
    let n = overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    // Known before the network is instantiated here: kept, programmed later.
    let far = remote("10.9.0.7", "192.0.2.2", "far");
    r.d().remote_endpoint_set(&n.id, "k1", far.clone());
    assert!(r.p().overlay_entries(&n.id).is_empty());
    r.sandbox("web", &["ov"]);
    assert_eq!(
        r.p().overlay_entries(&n.id),
        vec![(far.mac, far.ip, far.vtep)]
    );
    let me = ip("10.9.0.2");
    assert_eq!(
        ask(&r, "ov", me, "far", TYPE::A),
        Ok(vec!["10.9.0.7".into()])
    );
    assert_eq!(
        ask(&r, "ov", me, "far-alias.ov", TYPE::A),
        Ok(vec!["10.9.0.7".into()])
    );
    // A second one behind another VTEP; then the first moves there.
    r.d()
        .remote_endpoint_set(&n.id, "k2", remote("10.9.0.8", "192.0.2.3", "other"));
    assert_eq!(
        r.p().overlay_peers(&n.id),
        vec![ip("192.0.2.2"), ip("192.0.2.3")]
    );
    r.d()
        .remote_endpoint_set(&n.id, "k1", remote("10.9.0.7", "192.0.2.3", "far"));
    assert_eq!(r.p().overlay_peers(&n.id), vec![ip("192.0.2.3")]);
    // Removed: out of the tables and the DNS.
    r.d().remote_endpoint_remove(&n.id, "k1");
    assert_eq!(r.p().overlay_entries(&n.id).len(), 1);
    assert!(ask(&r, "ov", me, "far", TYPE::A).is_err());
    r.d().remote_endpoints_clear();
    assert!(r.p().overlay_entries(&n.id).is_empty());
    assert!(ask(&r, "ov", me, "other", TYPE::A).is_err());
    // The local sandbox is answered all along.
    assert_eq!(
        ask(&r, "ov", me, "web", TYPE::A),
        Ok(vec!["10.9.0.2".into()])
    );
}

#[test]
fn after_a_restart_overlay_networks_wait_for_the_vtep() {
    let (mut r, s) = swarm_rig();
    let n = overlay(&r, "ov", "10.9.0.0/24", true).unwrap();
    let sb = r.sandbox("web", &["ov"]);
    let e = r.endpoints("web").remove(0).0;
    s.calls();
    r.restart();
    // Stored, but down: no VTEP yet.
    assert_eq!(r.network("ov").id, n.id);
    assert!(r.p().networks().iter().all(|p| p.id != n.id));
    assert!(r.p().attached().is_empty());
    r.d().set_vtep(VTEP).unwrap();
    assert_eq!(r.p().vtep(), Some(VTEP));
    assert!(r.p().networks().iter().any(|p| p.id == n.id));
    assert_eq!(r.p().attached().get(&e.id), Some(&n.id));
    assert!(
        r.p()
            .namespace(&sb.netns)
            .unwrap()
            .interfaces
            .contains_key("eth0")
    );
    // The service installs its hooks and republishes; removal then lets go.
    r.d().set_swarm(Some(s.clone()));
    assert_eq!(r.d().local_swarm_endpoints()[0].1.id, e.id);
    r.d().remove_sandbox("web").unwrap();
    assert_eq!(
        s.calls(),
        vec![
            Call::Down(e.id.clone()),
            Call::Release(e.id.clone()),
            Call::Attach(false)
        ]
    );
}
