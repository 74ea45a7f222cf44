//! Networks: create, look up, remove, prune; Docker's texts and statuses.

use std::collections::BTreeMap;

use super::*;
use crate::daemon::core::IpamSpec;
use crate::daemon::plumbing::Op;
use tapnet_switch::MacAddr;

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ..Default::default()
    }
}

fn with_opts(name: &str, opts: &[(&str, &str)]) -> NetworkSpec {
    NetworkSpec {
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..spec(name)
    }
}

#[test]
fn predefined_networks_exist_once_with_dockers_defaults() {
    let mut r = Rig::new();
    let mut names: Vec<(String, String)> = r
        .d()
        .networks()
        .into_iter()
        .map(|n| (n.name, n.driver))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("bridge".to_string(), "bridge".to_string()),
            ("host".into(), "host".into()),
            ("none".into(), "null".into())
        ]
    );
    let b = r.network("bridge");
    assert!(b.predefined);
    assert_eq!(b.ipam[0].subnet, "172.17.0.0/16");
    assert_eq!(b.ipam[0].gateway, Some(ip("172.17.0.1")));
    assert_eq!(b.options["com.docker.network.bridge.name"], "tapnet0");
    // Only the bridge has a datapath; its gateway answers for .1 with 02:42 + address.
    let plans = r.p().networks();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].id, b.id);
    let gw = plans[0].gateway.unwrap();
    assert_eq!(
        (gw.ip, gw.prefix_len, gw.internal),
        (ip("172.17.0.1"), 16, false)
    );
    assert_eq!(gw.mac, MacAddr::from_ipv4(ip("172.17.0.1")));
    assert_eq!((plans[0].icc, plans[0].mtu), (true, 1500));
    r.restart();
    assert_eq!(r.d().networks().len(), 3);
    assert_eq!(r.network("bridge").id, b.id);
}

#[test]
fn create_takes_pools_in_dockers_order_and_plumbs_the_options() {
    let r = Rig::new();
    let a = r.d().create_network(spec("a"), false).unwrap();
    let b = r.d().create_network(spec("b"), false).unwrap();
    assert_eq!(a.ipam[0].subnet, "172.18.0.0/16");
    assert_eq!(b.ipam[0].subnet, "172.19.0.0/16");
    assert_eq!(
        (a.scope.as_str(), a.ipam_driver.as_str()),
        ("local", "default")
    );
    let c = r
        .d()
        .create_network(
            NetworkSpec {
                internal: true,
                ..with_opts(
                    "c",
                    &[
                        ("com.docker.network.bridge.enable_icc", "false"),
                        ("com.docker.network.driver.mtu", "1400"),
                        ("tapnet.host_loopback", "true"),
                    ],
                )
            },
            false,
        )
        .unwrap();
    let plan = r.p().networks().into_iter().find(|p| p.id == c.id).unwrap();
    assert_eq!(
        (plan.icc, plan.mtu, plan.host_loopback),
        (false, 1400, true)
    );
    assert!(plan.gateway.unwrap().internal);
    // Found by name, full id, and a unique id prefix.
    for key in [c.name.as_str(), &c.id, &c.id[..20]] {
        assert_eq!(r.d().network(key).unwrap().0.id, c.id, "{key}");
    }
}

#[test]
fn refusals_have_dockers_texts_and_statuses_and_store_nothing() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let before = r.d().networks().len();
    let plumbed = r.p().networks().len();
    let err = |s: NetworkSpec| api(r.d().create_network(s, false).unwrap_err());
    assert_eq!(
        err(spec("pets")),
        (409, "network with name pets already exists".into())
    );
    assert_eq!(
        err(spec("")),
        (400, "network name must not be empty".into())
    );
    for (driver, shown) in [("host", "host"), ("null", "null"), ("none", "null")] {
        let s = NetworkSpec {
            driver: driver.into(),
            ..spec("x")
        };
        assert_eq!(
            err(s),
            (
                403,
                format!("only one instance of \"{shown}\" network is allowed")
            )
        );
    }
    let s = NetworkSpec {
        driver: "macvlan".into(),
        ..spec("x")
    };
    assert_eq!(
        err(s),
        (
            400,
            "driver \"macvlan\" is not available in this version of tapnet (bridge, host, null and overlay are)"
                .into()
        )
    );
    // Overlay networks need a swarm (503, Docker's text).
    let s = NetworkSpec {
        driver: "overlay".into(),
        ..spec("x")
    };
    assert_eq!(err(s).0, 503);
    let s = NetworkSpec {
        driver: "weave".into(),
        ..spec("x")
    };
    assert_eq!(err(s), (404, "plugin \"weave\" not found".into()));
    let s = NetworkSpec {
        ipam_driver: "dhcp".into(),
        ..spec("x")
    };
    assert_eq!(err(s), (404, "plugin \"dhcp\" not found".into()));
    let s = NetworkSpec {
        enable_ipv6: true,
        ..spec("x")
    };
    assert_eq!(
        err(s),
        (
            400,
            "IPv6 networks are not available in this version of tapnet".into()
        )
    );
    let s = NetworkSpec {
        ingress: true,
        ..spec("x")
    };
    assert_eq!(
        err(s),
        (
            403,
            "ingress networks need swarm mode, which tapnet does not have yet".into()
        )
    );
    let s = NetworkSpec {
        ipam: vec![IpamSpec::default(), IpamSpec::default()],
        ..spec("x")
    };
    assert_eq!(
        err(s),
        (400, "only one IPv4 subnet per network is supported".into())
    );
    assert_eq!(
        err(with_opts("x", &[("com.docker.network.driver.mtu", "9")])),
        (
            400,
            "invalid MTU \"9\" in option com.docker.network.driver.mtu: must be between 68 and 65535"
                .into()
        )
    );
    let (status, text) = err(with_opts("x", &[("bogus", "1")]));
    assert_eq!(status, 400);
    assert!(
        text.starts_with("unknown option \"bogus\" for driver bridge"),
        "{text}"
    );
    // IPAM's own refusals keep libnetwork's statuses.
    let overlap = NetworkSpec {
        ipam: vec![IpamSpec {
            subnet: "10.1.0.128/25".into(),
            ..Default::default()
        }],
        ..spec("x")
    };
    assert_eq!(
        err(overlap),
        (
            403,
            "invalid pool request: Pool overlaps with other one on this address space".into()
        )
    );
    let bad = NetworkSpec {
        ipam: vec![IpamSpec {
            subnet: "10.2.0.0/24".into(),
            gateway: "10.3.0.1".into(),
            ..Default::default()
        }],
        ..spec("x")
    };
    assert_eq!(err(bad).0, 400);
    assert_eq!(r.d().networks().len(), before);
    assert_eq!(r.p().networks().len(), plumbed);
}

#[test]
fn a_datapath_that_cannot_be_made_leaves_no_record_and_frees_the_pool() {
    let r = Rig::new();
    r.p().fail(Op::AddNetwork);
    let s = NetworkSpec {
        ipam: vec![IpamSpec {
            subnet: "10.5.0.0/24".into(),
            ..Default::default()
        }],
        ..spec("pets")
    };
    assert_eq!(
        api(r.d().create_network(s.clone(), false).unwrap_err()),
        (500, "AddNetwork failed (as the test asked)".into())
    );
    assert!(r.d().network("pets").is_err());
    // The name and the subnet are free again.
    let n = r.d().create_network(s, false).unwrap();
    assert_eq!(n.ipam[0].subnet, "10.5.0.0/24");
}

#[test]
fn lookups_by_prefix_and_their_errors() {
    let r = Rig::new();
    // 17 ids over 16 first hex digits: two share their first one.
    for i in 0..14 {
        r.d().create_network(spec(&format!("n{i}")), false).unwrap();
    }
    let ids: Vec<String> = r.d().networks().into_iter().map(|n| n.id).collect();
    let shared = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() > 1)
        .unwrap();
    let n = ids.iter().filter(|id| id.starts_with(&shared)).count();
    assert_eq!(
        api(r.d().network(&shared).unwrap_err()),
        (
            400,
            format!("network {shared} is ambiguous ({n} matches found based on ID prefix)")
        )
    );
    assert_eq!(
        api(r.d().network("cats").unwrap_err()),
        (404, "network cats not found".into())
    );
    assert_eq!(
        api(r.d().network("").unwrap_err()),
        (404, "network  not found".into())
    );
}

#[test]
fn remove_frees_the_pool_and_the_datapath_and_refuses_what_docker_refuses() {
    let r = Rig::new();
    let pets = r.create_net("pets", "10.1.0.0/24");
    let sb = r.sandbox("web", &["pets"]);
    assert_eq!(
        api(r.d().remove_network("pets").unwrap_err()),
        (
            403,
            format!(
                "error while removing network: network pets has active endpoints (name:\"web\" id:\"{}\")",
                &sb.id[..12]
            )
        )
    );
    assert_eq!(
        api(r.d().remove_network("bridge").unwrap_err()),
        (
            403,
            "bridge is a pre-defined network and cannot be removed".into()
        )
    );
    r.d().remove_sandbox("web").unwrap();
    r.d().remove_network(&pets.id[..8]).unwrap();
    assert!(r.p().networks().iter().all(|p| p.id != pets.id));
    assert_eq!(
        api(r.d().remove_network("pets").unwrap_err()),
        (404, "network pets not found".into())
    );
    // The subnet is free for the next network.
    r.create_net("again", "10.1.0.0/24");
}

#[test]
fn prune_removes_unused_user_networks_that_the_filter_picks() {
    let r = Rig::new();
    r.create_net("used", "10.1.0.0/24");
    r.create_net("idle", "10.2.0.0/24");
    let kept = r
        .d()
        .create_network(
            NetworkSpec {
                labels: BTreeMap::from([("keep".to_string(), String::new())]),
                ..spec("kept")
            },
            false,
        )
        .unwrap();
    r.sandbox("web", &["used"]);
    let removed = r
        .d()
        .prune_networks(|n| !n.labels.contains_key("keep"))
        .unwrap();
    assert_eq!(removed, ["idle"]);
    let mut left: Vec<String> = r.d().networks().into_iter().map(|n| n.name).collect();
    left.sort();
    assert_eq!(left, ["bridge", "host", "kept", "none", "used"]);
    assert_eq!(r.d().prune_networks(|_| true).unwrap(), [kept.name]);
}

#[test]
fn pool_usage_counts_what_is_handed_out() {
    let r = Rig::new();
    let n = r.create_net("small", "10.9.0.0/29");
    let pool = &n.ipam[0].pool_id;
    let before = r.d().pool_usage(pool);
    r.sandbox("a", &["small"]);
    let after = r.d().pool_usage(pool);
    assert_eq!(after.in_use, before.in_use + 1);
    assert_eq!(after.available + 1, before.available);
}
