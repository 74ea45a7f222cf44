//! What Docker's engine asks through the network and IPAM plugins (`core::docker`):
//! the calls in the order Docker makes them, with tapnet's IPAM and with Docker's, and
//! the repeats and leftovers Docker's cleanup produces.

use std::net::{IpAddr, Ipv4Addr};

use tapnet_nat::portspec::{PortMapping, Proto};

use super::Rig;
use crate::daemon::core::{DaemonError, DockerNetwork, DockerPool, PLUGIN_IPAM};
use crate::daemon::model::External;

const NET: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const EP1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EP2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Docker's `network create -d tapnet --ipam-driver tapnet -o tapnet.name=pets`:
/// RequestPool, RequestAddress (gateway), CreateNetwork. Returns the pool id.
fn plugin_network(r: &Rig) -> String {
    let (pool, subnet) = r.d().plugin_request_pool("10.7.0.0/24", "").unwrap();
    let (gw, len) = r.d().plugin_request_address(&pool, None, true).unwrap();
    assert_eq!((gw, len), (Ipv4Addr::new(10, 7, 0, 1), 24));
    r.d()
        .docker_create_network(DockerNetwork {
            id: NET.into(),
            pool: Some(DockerPool {
                held: true,
                subnet,
                gateway: format!("{gw}/{len}"),
            }),
            options: [("tapnet.name".to_string(), "pets".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
    pool
}

/// Docker's `-p 127.0.0.1:18080:80`.
fn local_18080() -> PortMapping {
    PortMapping {
        host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        host_ports: Some((18080, 18080)),
        container_port: 80,
        proto: Proto::Tcp,
    }
}

#[test]
fn a_container_on_a_tapnet_ipam_network_from_create_to_delete() {
    let r = Rig::new();
    let pool = plugin_network(&r);
    let n = r.network("pets");
    assert_eq!((n.id.as_str(), n.ipam_driver.as_str()), (NET, PLUGIN_IPAM));
    assert_eq!(n.ipam[0].gateway, Some(Ipv4Addr::new(10, 7, 0, 1)));

    // RequestAddress, CreateEndpoint (Docker sends no MAC: tapnet's is answered).
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    assert_eq!(a, Ipv4Addr::new(10, 7, 0, 2));
    let e = r
        .d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    assert_eq!((e.mac.as_str(), e.ipam_held), ("02:42:0a:07:00:02", true));
    // An address the IPAM plugin did not give is refused.
    let err = r
        .d()
        .docker_create_endpoint(NET, EP2, Some(Ipv4Addr::new(10, 7, 0, 9)), None)
        .unwrap_err();
    assert!(matches!(err, DaemonError::NotAllocated(_)), "{err}");

    // Join: a TAP in the daemon's namespace, in the datapath; Leave deletes it.
    let j = r.d().docker_join(EP1, "/var/run/docker/netns/x").unwrap();
    assert_eq!(j.ifname, "tnaaaaaaaaaaaa");
    assert_eq!(j.gateway, Some(Ipv4Addr::new(10, 7, 0, 1)));
    assert!(r.p().attached().contains_key(EP1));
    assert!(
        r.p()
            .namespace("")
            .unwrap()
            .interfaces
            .contains_key(&j.ifname)
    );
    let (sb, _) = r.d().sandbox("docker-aaaaaaaaaaaa").unwrap();
    assert_eq!(
        sb.external,
        Some(External::Docker {
            sandbox_key: "/var/run/docker/netns/x".into()
        })
    );
    assert_eq!(r.d().netns_path(&sb), "/var/run/docker/netns/x");
    let err = r.d().docker_join(EP1, "/x").unwrap_err();
    assert!(matches!(err, DaemonError::EndpointJoined(_)), "{err}");
    r.d().docker_leave(EP1).unwrap();
    assert!(!r.p().attached().contains_key(EP1));
    assert!(
        !r.p()
            .namespace("")
            .unwrap()
            .interfaces
            .contains_key(&j.ifname)
    );

    // DeleteEndpoint keeps the address: the IPAM plugin holds it until ReleaseAddress.
    r.d().docker_delete_endpoint(EP1).unwrap();
    assert!(r.d().sandbox("docker-aaaaaaaaaaaa").is_err());
    let err = r.d().docker_create_endpoint(NET, EP2, Some(a), None);
    assert!(err.is_ok(), "still allocated, so still usable: {err:?}");
    r.d().docker_delete_endpoint(EP2).unwrap();
    r.d().plugin_release_address(&pool, a).unwrap();
    // Again, and the gateway: no error.
    r.d().plugin_release_address(&pool, a).unwrap();
    r.d()
        .plugin_release_address(&pool, Ipv4Addr::new(10, 7, 0, 1))
        .unwrap();
    assert_eq!(
        r.d().plugin_request_address(&pool, None, false).unwrap().0,
        a
    );
    r.d().plugin_release_address(&pool, a).unwrap();

    // ReleasePool is refused while the network uses the pool (Docker sends it before
    // DeleteNetwork, and only warns); the pool goes with the network, and ReleasePool
    // after that is no error.
    let err = r.d().plugin_release_pool(&pool).unwrap_err();
    assert!(matches!(err, DaemonError::PoolInUse { .. }), "{err}");
    r.d().docker_delete_network(NET).unwrap();
    r.d().plugin_release_pool(&pool).unwrap();
    // The subnet is free again.
    r.d().plugin_request_pool("10.7.0.0/24", "").unwrap();
}

#[test]
fn with_dockers_own_ipam_the_network_and_addresses_are_the_ones_docker_chose() {
    let r = Rig::new();
    r.d()
        .docker_create_network(DockerNetwork {
            id: NET.into(),
            pool: Some(DockerPool {
                held: false,
                subnet: "10.9.0.0/24".into(),
                gateway: "10.9.0.1/24".into(),
            }),
            ..Default::default()
        })
        .unwrap();
    let n = r.network("docker-111111111111");
    assert_eq!(n.ipam_driver, "default");
    let a = Ipv4Addr::new(10, 9, 0, 5);
    let mac = [2, 0, 0, 0, 0, 7];
    let e = r
        .d()
        .docker_create_endpoint(NET, EP1, Some(a), Some(mac))
        .unwrap();
    assert_eq!((e.ipv4, e.ipam_held), (Some(a), false));
    assert_eq!(e.mac, "02:00:00:00:00:07");
    // The address is taken in tapnet's IPAM too.
    let err = r.d().docker_create_endpoint(NET, EP2, Some(a), None);
    assert!(err.is_err());
    r.d().docker_delete_endpoint(EP1).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP2, Some(a), None)
        .unwrap();
    r.d().docker_delete_endpoint(EP2).unwrap();
    r.d().docker_delete_network(NET).unwrap();
    // The pool went with the network.
    assert!(
        r.d()
            .plugin_request_pool("10.9.0.0/24", "")
            .is_ok_and(|(id, _)| id == "10.9.0.0/24")
    );
}

#[test]
fn repeats_and_leftovers_are_no_error_and_bad_ids_are_refused() {
    let r = Rig::new();
    plugin_network(&r);
    // Docker replays CreateNetwork as it starts.
    plugin_network_again(&r);
    r.d().docker_delete_endpoint(EP1).unwrap();
    r.d().docker_unpublish(EP1).unwrap();
    r.d().docker_delete_network(EP1).unwrap();
    let err = r.d().docker_leave(EP1).unwrap_err();
    assert!(matches!(err, DaemonError::NoDockerEndpoint(_)), "{err}");
    let err = r
        .d()
        .docker_create_endpoint(NET, "short", None, None)
        .unwrap_err();
    assert!(matches!(err, DaemonError::BadDockerId(_)), "{err}");
    let err = r
        .d()
        .docker_create_network(DockerNetwork {
            id: "../x".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, DaemonError::BadDockerId(_)), "{err}");
}

fn plugin_network_again(r: &Rig) {
    r.d()
        .docker_create_network(DockerNetwork {
            id: NET.into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.network("pets").id, NET);
}

#[test]
fn a_docker_endpoint_is_changed_through_docker_only() {
    let r = Rig::new();
    let pool = plugin_network(&r);
    r.create_net("mine", "10.8.0.0/24");
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    let err = r.d().remove_sandbox("docker-aaaaaaaaaaaa").unwrap_err();
    assert!(matches!(err, DaemonError::ExternalSandbox { .. }), "{err}");
    let err = r
        .d()
        .connect("mine", "docker-aaaaaaaaaaaa", Default::default())
        .unwrap_err();
    assert!(matches!(err, DaemonError::ExternalSandbox { .. }), "{err}");
    // A network with a container on it is not deleted.
    assert!(r.d().docker_delete_network(NET).is_err());
    // tapnet's own sandboxes join the same network by its name.
    let sb = r.sandbox("web", &["pets"]);
    let eps = r.endpoints("web");
    assert_eq!(eps[0].0.ipv4, Some(Ipv4Addr::new(10, 7, 0, 3)));
    assert!(!eps[0].0.ipam_held);
    r.d().remove_sandbox(&sb.id).unwrap();
}

#[test]
fn published_ports_follow_program_and_revoke() {
    let r = Rig::new();
    let pool = plugin_network(&r);
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    r.d().docker_join(EP1, "/k").unwrap();
    let p = local_18080();
    r.d().docker_publish(EP1, &[p]).unwrap();
    let ports = r.d().docker_endpoint_ports(EP1).unwrap();
    assert_eq!((ports[0].host_port, ports[0].container_port), (18080, 80));
    assert_eq!(r.p().bound().len(), 1);
    r.d().docker_unpublish(EP1).unwrap();
    assert!(r.p().bound().is_empty());
    assert!(r.d().docker_endpoint_ports(EP1).unwrap().is_empty());
    // Leave closes what Revoke did not.
    r.d().docker_publish(EP1, &[p]).unwrap();
    r.d().docker_leave(EP1).unwrap();
    assert!(r.p().bound().is_empty());
}

#[test]
fn a_container_leaving_deletes_its_interface_wherever_docker_put_it() {
    let r = Rig::new();
    let pool = plugin_network(&r);
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    r.p().add_runtime_namespace("/k");
    let j = r.d().docker_join(EP1, "/k").unwrap();
    // Docker moves the TAP into the container and renames it.
    assert!(r.p().move_interface("", &j.ifname, "/k", "eth0"));
    r.d().docker_leave(EP1).unwrap();
    assert!(r.p().namespace("/k").unwrap().interfaces.is_empty());
    // Given back to the daemon's namespace before the endpoint goes: deleted there.
    r.d().docker_join(EP1, "/k").unwrap();
    assert!(r.p().move_interface("", &j.ifname, "/k", "eth0"));
    assert!(r.p().move_interface("/k", "eth0", "", &j.ifname));
    r.d().docker_delete_endpoint(EP1).unwrap();
    assert!(
        !r.p()
            .namespace("")
            .unwrap()
            .interfaces
            .contains_key(&j.ifname)
    );
    assert!(r.p().namespace("/k").unwrap().interfaces.is_empty());
}

#[test]
fn after_a_restart_a_running_container_gets_its_interface_back() {
    let mut r = Rig::new();
    let pool = plugin_network(&r);
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    let (b, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    r.d()
        .docker_create_endpoint(NET, EP2, Some(b), None)
        .unwrap();
    r.p().add_runtime_namespace("/k1");
    r.p().add_runtime_namespace("/k2");
    let j1 = r.d().docker_join(EP1, "/k1").unwrap();
    let j2 = r.d().docker_join(EP2, "/k2").unwrap();
    assert!(r.p().move_interface("", &j1.ifname, "/k1", "eth0"));
    assert!(r.p().move_interface("", &j2.ifname, "/k2", "eth1"));
    let p = local_18080();
    r.d().docker_publish(EP1, &[p]).unwrap();
    // The second container goes while the daemon is down: its namespace with it.
    r.p().remove_runtime_namespace("/k2");
    r.restart();
    // The first one's TAP is found under Docker's name and attached again, its port
    // published again.
    assert!(r.p().attached().contains_key(EP1));
    assert!(
        r.p()
            .namespace("/k1")
            .unwrap()
            .interfaces
            .contains_key("eth0")
    );
    assert_eq!(r.p().bound().len(), 1, "{:?}", r.p().bound());
    // The second one is no longer joined; Docker's cleanup removes it.
    assert!(!r.p().attached().contains_key(EP2));
    let (sb2, _) = r.d().sandbox("docker-bbbbbbbbbbbb").unwrap();
    assert_eq!(
        sb2.external,
        Some(External::Docker {
            sandbox_key: String::new()
        })
    );
    r.d().docker_leave(EP2).unwrap();
    r.d().docker_delete_endpoint(EP2).unwrap();
    r.d().docker_leave(EP1).unwrap();
    assert!(r.p().namespace("/k1").unwrap().interfaces.is_empty());
    assert!(r.p().bound().is_empty());
    r.d().docker_delete_endpoint(EP1).unwrap();
    r.d().plugin_release_address(&pool, a).unwrap();
    r.d().plugin_release_address(&pool, b).unwrap();
    r.d().docker_delete_network(NET).unwrap();
    r.d().plugin_release_pool(&pool).unwrap();
    assert!(r.d().sandboxes().is_empty());
}

#[test]
fn after_a_restart_docker_endpoints_stay_until_docker_deletes_them() {
    let mut r = Rig::new();
    let pool = plugin_network(&r);
    let (a, _) = r.d().plugin_request_address(&pool, None, false).unwrap();
    r.d()
        .docker_create_endpoint(NET, EP1, Some(a), None)
        .unwrap();
    r.d().docker_join(EP1, "/k").unwrap();
    r.restart();
    // Its container's namespace is not there: the records stay, joined to nothing.
    assert!(!r.p().attached().contains_key(EP1));
    assert!(r.d().sandbox("docker-aaaaaaaaaaaa").is_ok());
    r.d().docker_leave(EP1).unwrap();
    r.d().docker_delete_endpoint(EP1).unwrap();
    r.d().plugin_release_address(&pool, a).unwrap();
    r.d().docker_delete_network(NET).unwrap();
    r.d().plugin_release_pool(&pool).unwrap();
    assert!(r.d().sandboxes().is_empty());
    r.d().plugin_request_pool("10.7.0.0/24", "").unwrap();
}
