//! End to end: the real `tapnet daemon` (one per test, in its own state directory),
//! driven by the `tapnet` binary, by hand-written HTTP on its socket and by the docker
//! CLI; traffic between real network namespaces through the engine's TAPs.
//!
//! Root only (namespaces, TAPs): each test is `#[ignore = "needs root"]`. Every test uses
//! its own subnets (10.251.<n>.0/24, the burst 10.252.<n>.0/24) so failures read
//! clearly, and its [`common::Daemon`] guard removes the daemon, its namespaces and its
//! state directory also when the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Daemon, addrs, assert_no_ping, assert_pings, in_ns_ok, links, mac_for, netns_exists,
    output_within, sb_from_json,
};
use serde_json::{Value, json};
use tapnet_engine::sys::netns::NetNs;

/// Parse `network ls --format json` (one object a line), sorted by name.
fn ls_json(d: &Daemon) -> Vec<Value> {
    let out = d.ok(&["network", "ls", "--format", "json"]);
    let mut v: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    v.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    v
}

fn default_route(ns: &str) -> Option<String> {
    in_ns_ok(ns, &["ip", "-4", "route"])
        .lines()
        .find(|l| l.starts_with("default"))
        .map(|l| l.trim().to_string())
}

/// `IPsInUse` of a network's (only) subnet.
fn ips_in_use(net: &Value) -> u64 {
    let subnets = net["Status"]["IPAM"]["Subnets"].as_object().unwrap();
    assert_eq!(subnets.len(), 1, "{net}");
    subnets.values().next().unwrap()["IPsInUse"]
        .as_u64()
        .unwrap()
}

/// A deterministic byte pattern and its FNV-1a hash.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// TCP both ways between two sandboxes, from this process: `len` bytes from `client`
/// to `server` and `len` bytes back, each checked by hash.
fn tcp_both_ways(client_ns: &str, server_ns: &str, server_ip: &str, len: usize) {
    let addr = (server_ip.parse::<Ipv4Addr>().unwrap(), 5201);
    let listener = NetNs::open(server_ns)
        .unwrap()
        .run(|| TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let up = pattern(len, 0x5a);
    let down = pattern(len, 0xa5);
    let (want_up, want_down) = (fnv(&up), fnv(&down));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::with_capacity(len);
        s.read_to_end(&mut got).unwrap();
        s.write_all(&down).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        (got.len(), fnv(&got))
    });
    let mut c = NetNs::open(client_ns)
        .unwrap()
        .run(|| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {server_ip}:5201 from {client_ns}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(&up).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::with_capacity(len);
    c.read_to_end(&mut back).unwrap();
    let (n, h) = server.join().unwrap();
    assert_eq!((n, h), (len, want_up), "client → server stream corrupted");
    assert_eq!(
        (back.len(), fnv(&back)),
        (len, want_down),
        "server → client"
    );
}

// ---------------------------------------------------------------------------------------

/// Checklist 1: the predefined networks, and the API's JSON as a Docker user knows it.
#[test]
#[ignore = "needs root"]
fn predefined_networks_and_dockers_json() {
    let d = Daemon::start("predef");
    // The table, as `docker network ls` prints it.
    let table = d.ok(&["network", "ls"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"],
        "{table}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(
        names,
        [
            ("bridge", "bridge", "local"),
            ("host", "host", "local"),
            ("none", "null", "local")
        ],
        "{table}"
    );
    assert!(rows.iter().all(|r| r[0].len() == 12), "short ids: {table}");

    // --format json: docker's keys and string values.
    let ls = ls_json(&d);
    assert_eq!(ls.len(), 3);
    assert_eq!(ls[0]["Name"], "bridge");
    assert_eq!(ls[0]["Driver"], "bridge");
    assert_eq!(ls[0]["Scope"], "local");
    assert_eq!(ls[0]["IPv4"], "true");
    assert_eq!(ls[0]["Internal"], "false");

    // The raw API, as `curl --unix-socket … /networks` sees it.
    let r = d.get("/networks");
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|x| x["Name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {list}"))
            .clone()
    };
    let bridge = by_name("bridge");
    let id = bridge["Id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(bridge["Driver"], "bridge");
    assert_eq!(bridge["Scope"], "local");
    assert_eq!(bridge["EnableIPv4"], true);
    assert_eq!(bridge["IPAM"]["Driver"], "default");
    assert_eq!(bridge["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(bridge["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    assert_eq!(
        bridge["Options"]["com.docker.network.bridge.default_bridge"],
        "true"
    );
    for key in ["Created", "Internal", "Attachable", "Ingress", "Labels"] {
        assert!(bridge.get(key).is_some(), "{key} missing: {bridge}");
    }
    assert_eq!(by_name("host")["Driver"], "host");
    assert_eq!(by_name("none")["Driver"], "null");
    assert_eq!(by_name("host")["IPAM"]["Config"], json!([]));

    // The versioned paths the docker CLI uses, /_ping and /version.
    let v = d.get("/v1.47/networks/bridge");
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["Id"], id);
    let p = d.get("/_ping");
    assert_eq!((p.status, p.body.as_str()), (200, "OK"));
    let ver = d.get("/version").json();
    assert!(
        ver["ApiVersion"]
            .as_str()
            .is_some_and(|s| s.starts_with("1."))
    );

    // Without --subnet, Docker's pools in order: 172.18/16, then 172.19/16.
    for (name, subnet, gw) in [
        ("auto1", "172.18.0.0/16", "172.18.0.1"),
        ("auto2", "172.19.0.0/16", "172.19.0.1"),
    ] {
        d.ok(&["network", "create", name]);
        let n = d.inspect("network", name);
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], subnet);
        assert_eq!(n["IPAM"]["Config"][0]["Gateway"], gw);
    }

    // A sandbox with no --network joins the default bridge and reaches its gateway.
    let sb = d.sandbox("plain", &[], &[]);
    assert_eq!(sb.nets.len(), 1);
    let (net, ip, ifname, gw) = &sb.nets[0];
    assert_eq!(
        (net.as_str(), ip.as_str(), ifname.as_str(), gw.as_str()),
        ("bridge", "172.17.0.2", "eth0", "172.17.0.1")
    );
    assert_pings(&sb.netns, "172.17.0.1");
    let inspect = d.inspect("network", "bridge");
    assert_eq!(inspect["Containers"][&sb.id]["Name"], "plain");
    assert_eq!(
        inspect["Containers"][&sb.id]["IPv4Address"],
        "172.17.0.2/16"
    );
    assert_eq!(
        inspect["Containers"][&sb.id]["MacAddress"],
        "02:42:ac:11:00:02"
    );
}

/// Checklist 2 and 3: a user bridge with every IPAM flag: addresses, MACs, MTU, routes,
/// ping and TCP between sandboxes; and a second network that cannot reach it, not even
/// with an address of the first network's subnet.
#[test]
#[ignore = "needs root"]
fn user_bridge_traffic_and_isolation() {
    let d = Daemon::start("bridge");
    let id = d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.251.2.0/24",
        "--gateway",
        "10.251.2.254",
        "--ip-range",
        "10.251.2.32/28",
        "--aux-address",
        "router=10.251.2.33",
        "--label",
        "team=e2e",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "front",
    ]);
    assert_eq!(id.trim().len(), 64);
    let n = d.inspect("network", "front");
    assert_eq!(n["Id"], id.trim());
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(
        n["IPAM"]["Config"],
        json!([{"Subnet": "10.251.2.0/24", "IPRange": "10.251.2.32/28",
                "Gateway": "10.251.2.254", "AuxiliaryAddresses": {"router": "10.251.2.33"}}])
    );
    assert_eq!(n["Labels"], json!({"team": "e2e"}));
    assert_eq!(n["Options"]["com.docker.network.driver.mtu"], "1400");
    // network, broadcast, gateway and the auxiliary address.
    assert_eq!(ips_in_use(&n), 4);

    let a = d.sandbox("a", &["front"], &[]);
    let b = d.sandbox("b", &["front"], &[]);
    let c = d.sandbox("c", &["front"], &["--ip", "10.251.2.10"]);
    assert_eq!(c.ip("front"), "10.251.2.10");
    let range: Vec<String> = (32..48).map(|i| format!("10.251.2.{i}")).collect();
    for s in [&a, &b] {
        let ip = s.ip("front");
        assert!(range.contains(&ip), "{ip} is outside --ip-range");
        assert_ne!(ip, "10.251.2.33", "the aux address was handed out");
    }
    assert_ne!(a.ip("front"), b.ip("front"));
    assert_eq!(ips_in_use(&d.inspect("network", "front")), 7);

    for s in [&a, &b, &c] {
        let ip = s.ip("front");
        assert_eq!(addrs(&s.netns), [("eth0".to_string(), format!("{ip}/24"))]);
        let link = in_ns_ok(&s.netns, &["ip", "-o", "link", "show", "eth0"]);
        assert!(link.contains(&mac_for(&ip)), "MAC is not 02:42+IP: {link}");
        assert!(link.contains("mtu 1400"), "MTU option not applied: {link}");
        assert_eq!(
            default_route(&s.netns).as_deref(),
            Some("default via 10.251.2.254 dev eth0")
        );
        let inspect = d.inspect("sandbox", &s.name);
        assert_eq!(inspect["Networks"]["front"]["MacAddress"], mac_for(&ip));
        assert_eq!(
            inspect["NetnsPath"],
            format!("/run/netns/{}", s.netns).as_str()
        );
    }
    assert_pings(&a.netns, "10.251.2.254");
    assert_pings(&a.netns, &b.ip("front"));
    assert_pings(&b.netns, &c.ip("front"));
    assert_pings(&c.netns, &a.ip("front"));
    tcp_both_ways(&a.netns, &c.netns, &c.ip("front"), 4 << 20);
    // The engine carried it: a's port received the 4 MiB (`tapnet stats`).
    let stats: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    let port = stats["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Sandbox"] == "a" && p["Network"] == "front")
        .unwrap_or_else(|| panic!("no port of a in {stats}"))
        .clone();
    assert!(port["RxBytes"].as_u64().unwrap() > 4 << 20, "{port}");
    assert_eq!(port["Mtu"], 1400);
    assert!(d.ok(&["stats"]).contains("front"));

    // Isolation: a second network in the same daemon.
    d.ok(&["network", "create", "--subnet", "10.251.3.0/24", "back"]);
    let x = d.sandbox("x", &["back"], &[]);
    assert_eq!(x.ip("back"), "10.251.3.2");
    assert_pings(&x.netns, "10.251.3.1");
    assert_no_ping(&x.netns, &a.ip("front"));
    assert_no_ping(&a.netns, &x.ip("back"));
    // Even with an address of front's subnet, x's frames stay in back's domain.
    in_ns_ok(
        &x.netns,
        &["ip", "addr", "add", "10.251.2.99/24", "dev", "eth0"],
    );
    assert_no_ping(&x.netns, &a.ip("front"));
    assert_no_ping(&x.netns, "10.251.2.254");
    // And front still works.
    assert_pings(&b.netns, &a.ip("front"));
}

/// Checklist 4: icc=false: the gateway only. --internal: no default route, gateway reachable.
#[test]
#[ignore = "needs root"]
fn icc_false_and_internal() {
    let d = Daemon::start("icc");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.251.4.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    let n = d.inspect("network", "quiet");
    assert_eq!(
        n["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    let p = d.sandbox("p", &["quiet"], &[]);
    let q = d.sandbox("q", &["quiet"], &[]);
    assert_pings(&p.netns, "10.251.4.1");
    assert_pings(&q.netns, "10.251.4.1");
    assert_no_ping(&p.netns, &q.ip("quiet"));
    assert_no_ping(&q.netns, &p.ip("quiet"));
    // Not even unicast with the neighbour's MAC known: the switch drops it as isolated
    // (without an ARP answer, plain pings never get that far).
    in_ns_ok(
        &p.netns,
        &[
            "ip",
            "neigh",
            "replace",
            &q.ip("quiet"),
            "lladdr",
            &mac_for(&q.ip("quiet")),
            "dev",
            "eth0",
        ],
    );
    assert_no_ping(&p.netns, &q.ip("quiet"));
    let stats: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    let quiet = stats["Networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Network"] == "quiet")
        .unwrap_or_else(|| panic!("no quiet in {stats}"))
        .clone();
    assert!(quiet["Drops"]["isolated"].as_u64() > Some(0), "{quiet}");

    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.251.5.0/24",
        "inner",
    ]);
    assert_eq!(d.inspect("network", "inner")["Internal"], true);
    let r = d.sandbox("r", &["inner"], &[]);
    let s = d.sandbox("s", &["inner"], &[]);
    assert_eq!(default_route(&r.netns), None, "internal: no default route");
    assert_eq!(r.nets[0].3, "10.251.5.1");
    assert_pings(&r.netns, "10.251.5.1");
    assert_pings(&r.netns, &s.ip("inner"));
    // icc=false still holds after a sandbox joins later.
    let late = d.sandbox("late", &["quiet"], &[]);
    assert_no_ping(&late.netns, &p.ip("quiet"));
    assert_pings(&late.netns, "10.251.4.1");
}

/// Checklist 5: connect and disconnect live; `rm` of a network in use; addresses freed
/// by `rm`; `network prune`.
#[test]
#[ignore = "needs root"]
fn live_connect_disconnect_and_removal() {
    let d = Daemon::start("live");
    d.ok(&["network", "create", "--subnet", "10.251.6.0/24", "one"]);
    d.ok(&["network", "create", "--subnet", "10.251.7.0/24", "two"]);
    let s1 = d.sandbox("s1", &["one"], &[]);
    let s2 = d.sandbox("s2", &["two"], &[]);
    let s2_ip = s2.ip("two");
    assert_no_ping(&s1.netns, &s2_ip);

    d.ok(&["network", "connect", "two", "s1"]);
    let s1 = d.sandbox_info("s1");
    let eth1 = s1.ip("two");
    assert_eq!(
        addrs(&s1.netns),
        [
            ("eth0".to_string(), format!("{}/24", s1.ip("one"))),
            ("eth1".to_string(), format!("{eth1}/24")),
        ]
    );
    let link = in_ns_ok(&s1.netns, &["ip", "-o", "link", "show", "eth1"]);
    assert!(link.contains(&mac_for(&eth1)), "{link}");
    assert_pings(&s1.netns, &s2_ip);
    assert_pings(&s2.netns, &eth1);
    // Ties go to the network whose name sorts first: "one".
    assert_eq!(
        default_route(&s1.netns).as_deref(),
        Some("default via 10.251.6.1 dev eth0")
    );
    let two = d.inspect("network", "two");
    assert_eq!(two["Containers"].as_object().unwrap().len(), 2);
    // Connecting twice is refused.
    let err = d.fails(&["network", "connect", "two", "s1"], 1);
    assert!(err.contains("already exists in network two"), "{err}");

    d.ok(&["network", "disconnect", "two", "s1"]);
    assert!(!links(&s1.netns).contains(&"eth1".to_string()));
    assert_eq!(addrs(&s1.netns).len(), 1);
    assert_no_ping(&s1.netns, &s2_ip);
    assert_eq!(ips_in_use(&d.inspect("network", "two")), 4);

    // With a higher priority, the second network provides the default route.
    d.ok(&["network", "connect", "--gw-priority", "5", "two", "s1"]);
    assert_eq!(
        default_route(&s1.netns).as_deref(),
        Some("default via 10.251.7.1 dev eth1")
    );
    assert_pings(&s1.netns, "10.251.7.1");
    d.ok(&["network", "disconnect", "two", "s1"]);
    assert_eq!(
        default_route(&s1.netns).as_deref(),
        Some("default via 10.251.6.1 dev eth0")
    );

    // rm of a network in use: Docker's message, exit status 1, nothing removed.
    let r = d.tapnet(&["network", "rm", "two"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.err.contains("Error response from daemon")
            && r.err.contains("network two has active endpoints"),
        "{}",
        r.err
    );
    let h = d.delete("/networks/two");
    assert_eq!(h.status, 403, "{}", h.body);
    assert!(ls_json(&d).iter().any(|n| n["Name"] == "two"));
    d.ok(&["sandbox", "rm", "s2"]);
    assert!(!netns_exists(&s2.netns), "sandbox rm left its namespace");
    assert_eq!(d.ok(&["network", "rm", "two"]).trim(), "two");
    assert!(!ls_json(&d).iter().any(|n| n["Name"] == "two"));
    // Its pool was released: the same subnet can be had again.
    d.ok(&["network", "create", "--subnet", "10.251.7.0/24", "two"]);
    d.ok(&["network", "rm", "two"]);

    // `sandbox rm` frees its address: the next sandbox gets it back.
    let before = ips_in_use(&d.inspect("network", "one"));
    let s3 = d.sandbox("s3", &["one"], &[]);
    let s3_ip = s3.ip("one");
    d.ok(&["sandbox", "rm", "s3"]);
    assert_eq!(ips_in_use(&d.inspect("network", "one")), before);
    let s4 = d.sandbox("s4", &["one"], &[]);
    assert_eq!(s4.ip("one"), s3_ip);
    let s5 = d.sandbox("s5", &["one"], &["--ip", "10.251.6.50"]);
    d.ok(&["sandbox", "rm", s5.name.as_str()]);
    let s6 = d.sandbox("s6", &["one"], &["--ip", "10.251.6.50"]);
    assert_eq!(s6.ip("one"), "10.251.6.50");
    assert_pings(&s6.netns, &s4.ip("one"));

    // prune removes unused user networks only (it used to hang the daemon).
    d.ok(&["network", "create", "--subnet", "10.251.8.0/24", "spare"]);
    let out = d.ok(&["network", "prune", "-f"]);
    assert_eq!(out, "Deleted Networks:\nspare\n\n");
    let names: Vec<Value> = ls_json(&d).iter().map(|n| n["Name"].clone()).collect();
    assert_eq!(names, ["bridge", "host", "none", "one"]);
}

/// Checklist 6: `tapnet run`: exit status, reachability, `none`, `host`.
#[test]
#[ignore = "needs root"]
fn run_exit_status_and_modes() {
    let d = Daemon::start("run");
    d.ok(&["network", "create", "--subnet", "10.251.10.0/24", "runs"]);
    let r = d.tapnet(&["run", "--network", "runs", "--", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    let r = d.tapnet(&[
        "run",
        "--network",
        "runs",
        "--",
        "ping",
        "-c1",
        "-W1",
        "10.251.10.1",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = d.ok(&[
        "run",
        "--network",
        "runs",
        "--ip",
        "10.251.10.77",
        "--name",
        "r1",
        "--",
        "ip",
        "-o",
        "-4",
        "addr",
    ]);
    assert!(out.contains("eth0    inet 10.251.10.77/24"), "{out}");
    let out = d.ok(&["run", "--network", "none", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    assert_eq!(names, ["lo"], "{out}");
    let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
    let out = d.ok(&[
        "run",
        "--network",
        "host",
        "--",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.trim(), mine.to_str().unwrap());
    let out = d.ok(&[
        "run",
        "--network",
        "runs",
        "--",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_ne!(out.trim(), mine.to_str().unwrap());
    // A missing network: docker's 125.
    let r = d.tapnet(&["run", "--network", "nope", "--", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.err.contains("network nope not found"), "{}", r.err);
    // Every run removed its sandbox and gave its address back.
    assert_eq!(d.get("/sandboxes").json(), json!([]));
    assert_eq!(ips_in_use(&d.inspect("network", "runs")), 3);
}

/// Checklist 7: restart: everything kept, sandboxes reattached. Also: starting another
/// daemon (another state dir) leaves this daemon's namespaces alone.
#[test]
#[ignore = "needs root"]
fn restart_keeps_state_and_sandboxes_work() {
    let mut d = Daemon::start("restart");
    d.ok(&["network", "create", "--subnet", "10.251.11.0/24", "keep"]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.251.14.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "keep2",
    ]);
    let k1 = d.sandbox("k1", &["keep"], &[]);
    let k2 = d.sandbox("k2", &["keep"], &["--ip", "10.251.11.20"]);
    d.ok(&["network", "connect", "keep2", "k1"]);
    let k1 = d.sandbox_info(&k1.name);
    assert_pings(&k1.netns, &k2.ip("keep"));
    let snapshot = |d: &Daemon| {
        let nets: Vec<Value> = ["bridge", "host", "none", "keep", "keep2"]
            .iter()
            .map(|n| d.inspect("network", n))
            .collect();
        let sbs: Vec<Value> = ["k1", "k2"]
            .iter()
            .map(|s| d.inspect("sandbox", s))
            .collect();
        (ls_json(d), nets, sbs)
    };
    let before = snapshot(&d);

    // Regression: a daemon starting elsewhere used to delete every `tapnet-*` namespace
    // it had no record of — this daemon's sandboxes among them.
    {
        let other = Daemon::start("restart-other");
        assert_eq!(other.get("/sandboxes").json(), json!([]));
    }
    assert!(netns_exists(&k1.netns) && netns_exists(&k2.netns));
    assert_pings(&k1.netns, &k2.ip("keep"));
    // A second daemon on the same state dir is refused before it touches anything.
    let o = output_within(
        Command::new(env!("CARGO_BIN_EXE_tapnet"))
            .arg("--state-dir")
            .arg(&d.dir)
            .arg("daemon")
            .stdin(std::process::Stdio::null()),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Database already open"), "{err}");
    assert_eq!(snapshot(&d), before);

    assert!(
        d.stop(Duration::from_secs(10)),
        "daemon did not exit on SIGTERM"
    );
    // Sandboxes outlive the daemon: namespace and configured interfaces stay.
    assert!(netns_exists(&k1.netns) && netns_exists(&k2.netns));
    assert_eq!(
        addrs(&k2.netns),
        [("eth0".to_string(), "10.251.11.20/24".to_string())]
    );
    d.spawn();
    let after = snapshot(&d);
    assert_eq!(before.0, after.0, "network ls changed across the restart");
    assert_eq!(
        before.1, after.1,
        "network inspect changed across the restart"
    );
    assert_eq!(
        before.2, after.2,
        "sandbox inspect changed across the restart"
    );
    // The TAPs persisted and were reattached: traffic flows again.
    assert_pings(&k1.netns, &k2.ip("keep"));
    assert_pings(&k2.netns, &k1.ip("keep"));
    assert_pings(&k1.netns, "10.251.14.1");
    tcp_both_ways(&k2.netns, &k1.netns, &k1.ip("keep"), 1 << 20);
    // IPAM state survived: a new sandbox gets a fresh address; icc=false still holds.
    let k3 = d.sandbox("k3", &["keep", "keep2"], &[]);
    assert!(![k1.ip("keep"), k2.ip("keep")].contains(&k3.ip("keep")));
    assert_ne!(k3.ip("keep2"), k1.ip("keep2"));
    assert_no_ping(&k3.netns, &k1.ip("keep2"));
    assert_pings(&k3.netns, &k1.ip("keep"));
    // Removing works after the restart, also of a sandbox from before it.
    d.ok(&["sandbox", "rm", "k2"]);
    assert!(!netns_exists(&k2.netns));
}

/// One API call of the burst and what came of it.
#[derive(Clone, Debug)]
struct Call {
    op: &'static str,
    target: String,
    /// HTTP status, or None if the daemon died before answering.
    status: Option<u16>,
    /// The id in the answer (`sb+`).
    id: Option<String>,
}

/// Checklist 8: kill -9 in the middle of a burst of API calls: nothing committed is lost,
/// nothing half-done remains, and the daemon goes on working.
#[test]
#[ignore = "needs root"]
fn kill_9_during_a_burst_loses_nothing() {
    let mut d = Daemon::start("kill9");
    d.ok(&["network", "create", "--subnet", "10.251.13.0/24", "base"]);
    let s0 = d.sandbox("s0", &["base"], &[]);
    let s1 = d.sandbox("s1", &["base"], &[]);
    let seed = std::process::id() as usize
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as usize;
    for round in 0..2usize {
        let kill_after = 8 + (seed >> (round * 8)) % 20;
        let done = Arc::new(AtomicUsize::new(0));
        let socket = d.socket.clone();
        let counter = done.clone();
        let burst = std::thread::spawn(move || {
            let mut calls: Vec<Call> = Vec::new();
            let mut call = |op: &'static str,
                            target: String,
                            method: &str,
                            path: String,
                            body: Option<&str>| {
                let r = common::http(&socket, method, &path, body);
                let status = r.as_ref().ok().map(|h| h.status);
                let id = r
                    .ok()
                    .and_then(|h| serde_json::from_str::<Value>(&h.body).ok())
                    .and_then(|v| Some(v.get("Id")?.as_str()?.to_string()));
                calls.push(Call {
                    op,
                    target,
                    status,
                    id,
                });
                counter.fetch_add(1, Ordering::SeqCst);
                status.is_some()
            };
            for i in 0..8 {
                let net = format!("burst{round}-{i}");
                let sb = format!("b{round}-{i}");
                let body = json!({"Name": net,
                    "IPAM": {"Config": [{"Subnet": format!("10.252.{}.0/24", round * 10 + i)}]}})
                .to_string();
                if !call(
                    "net+",
                    net.clone(),
                    "POST",
                    "/networks/create".into(),
                    Some(&body),
                ) {
                    break;
                }
                let body = json!({"Name": sb, "Networks": [{"Network": "base"}]}).to_string();
                if !call("sb+", sb.clone(), "POST", "/sandboxes".into(), Some(&body)) {
                    break;
                }
                let body = json!({"Container": sb}).to_string();
                let path = format!("/networks/{net}/connect");
                if !call("conn", sb.clone(), "POST", path, Some(&body)) {
                    break;
                }
                if i > 0 {
                    let prev = format!("b{round}-{}", i - 1);
                    let body = json!({"Container": prev}).to_string();
                    let path = format!("/networks/burst{round}-{}/disconnect", i - 1);
                    if !call("disc", prev.clone(), "POST", path, Some(&body)) {
                        break;
                    }
                    if !call(
                        "sb-",
                        prev.clone(),
                        "DELETE",
                        format!("/sandboxes/{prev}"),
                        None,
                    ) {
                        break;
                    }
                    let prev = format!("burst{round}-{}", i - 1);
                    if !call(
                        "net-",
                        prev.clone(),
                        "DELETE",
                        format!("/networks/{prev}"),
                        None,
                    ) {
                        break;
                    }
                }
            }
            calls
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < kill_after && !burst.is_finished() {
            assert!(Instant::now() < deadline, "burst stalled: {}", d.log());
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros((seed as u64 >> 3) % 3000));
        d.remember_sandboxes_quietly();
        d.kill9();
        let calls = burst.join().unwrap();
        let answered = calls.iter().filter(|c| c.status.is_some()).count();
        let cut = calls.iter().find(|c| c.status.is_none());
        eprintln!("round {round}: killed after {answered} answered calls, during {cut:?}");
        assert!(
            calls.iter().all(|c| c.status.is_none_or(|s| s < 300)),
            "a burst call failed: {calls:?}\n{}",
            d.log()
        );
        d.spawn();
        check_after_crash(&d, &calls, &[&s0, &s1]);
    }

    // And it goes on working.
    d.ok(&["network", "create", "--subnet", "10.252.100.0/24", "after"]);
    let z = d.sandbox("z", &["base", "after"], &[]);
    assert_pings(&z.netns, "10.251.13.1");
    assert_pings(&z.netns, "10.252.100.1");
    assert_pings(&z.netns, &s0.ip("base"));
    assert_pings(&s1.netns, &z.ip("base"));
}

/// The checks after a crash: what the burst's answered calls did is there (what it
/// undid is not); every sandbox has its namespace and interfaces and reaches its
/// gateways; IPAM counts match the endpoints; no address is held twice; no namespace
/// of this daemon is left without a record.
fn check_after_crash(d: &Daemon, calls: &[Call], old: &[&common::Sb]) {
    let ctx = || format!("calls: {calls:?}\n{}", d.log());
    // What must exist and what must not, from the answered calls.
    let mut want_nets: BTreeMap<String, bool> = BTreeMap::new();
    let mut want_sbs: BTreeMap<String, bool> = BTreeMap::new();
    // Sandbox → how many networks it is on.
    let mut want_eps: BTreeMap<String, usize> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.status.is_some()) {
        let t = c.target.clone();
        match c.op {
            "net+" | "net-" => {
                want_nets.insert(t, c.op == "net+");
            }
            "sb+" => {
                want_sbs.insert(t.clone(), true);
                want_eps.insert(t, 1);
            }
            "sb-" => {
                want_sbs.insert(t.clone(), false);
                want_eps.remove(&t);
            }
            "conn" | "disc" => {
                want_eps.insert(t, if c.op == "conn" { 2 } else { 1 });
            }
            other => unreachable!("{other}"),
        }
    }
    // The call the kill interrupted may or may not have happened.
    for c in calls.iter().filter(|c| c.status.is_none()) {
        want_nets.remove(&c.target);
        want_sbs.remove(&c.target);
        want_eps.remove(&c.target);
    }
    let nets: Vec<Value> = d.get("/networks").json().as_array().unwrap().clone();
    let net_names: BTreeSet<String> = nets
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    for (n, present) in &want_nets {
        assert_eq!(
            net_names.contains(n),
            *present,
            "network {n} after the crash\n{}",
            ctx()
        );
    }
    let sbs: Vec<common::Sb> = d
        .get("/sandboxes")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(sb_from_json)
        .collect();
    for sb in &sbs {
        d.note_netns(&sb.netns);
    }
    let sb_names: BTreeSet<String> = sbs.iter().map(|s| s.name.clone()).collect();
    for (s, present) in &want_sbs {
        assert_eq!(
            sb_names.contains(s),
            *present,
            "sandbox {s} after the crash\n{}",
            ctx()
        );
    }
    for s in old {
        assert!(sb_names.contains(&s.name), "{} lost\n{}", s.name, ctx());
    }
    for (s, n) in &want_eps {
        let sb = sbs.iter().find(|x| &x.name == s).unwrap();
        assert_eq!(
            sb.nets.len(),
            *n,
            "{s}: networks after the crash\n{}",
            ctx()
        );
    }

    // Every sandbox: namespace, interfaces with their addresses, gateways reachable.
    for sb in &sbs {
        assert!(
            netns_exists(&sb.netns),
            "{} has no namespace\n{}",
            sb.name,
            ctx()
        );
        let have = addrs(&sb.netns);
        for (net, ip, ifname, gw) in &sb.nets {
            assert!(
                have.contains(&(ifname.clone(), format!("{ip}/24"))),
                "{}: {ifname} lacks {ip} on {net}: {have:?}\n{}",
                sb.name,
                ctx()
            );
            assert_pings(&sb.netns, gw);
        }
        assert_eq!(have.len(), sb.nets.len(), "{}: {have:?}", sb.name);
        // No interface without an endpoint (e.g. left by an interrupted disconnect).
        let mut want: Vec<String> = sb.nets.iter().map(|n| n.2.clone()).collect();
        want.push("lo".into());
        want.sort();
        let mut got = links(&sb.netns);
        got.sort();
        assert_eq!(got, want, "{}: interfaces\n{}", sb.name, ctx());
    }
    assert_pings(&old[0].netns, &old[1].ip("base"));

    // IPAM: in use = endpoints + network, broadcast and gateway; no address twice.
    for n in nets.iter().filter(|n| n["Driver"] == "bridge") {
        let name = n["Name"].as_str().unwrap();
        let full = d.inspect("network", name);
        let eps = full["Containers"].as_object().unwrap();
        assert_eq!(
            ips_in_use(&full),
            eps.len() as u64 + 3,
            "IPAM of {name} does not match its endpoints: {full}\n{}",
            ctx()
        );
        let mut seen = BTreeSet::new();
        for sb in &sbs {
            for (net, ip, _, _) in &sb.nets {
                if net == name {
                    assert!(seen.insert(ip.clone()), "{ip} held twice on {name}");
                }
            }
        }
        assert_eq!(seen.len(), eps.len(), "{name}: endpoints vs sandboxes");
    }

    // No namespace of this daemon without a record. Exactly: every sandbox the burst
    // created and that is gone now has no namespace left (a sandbox whose create was
    // interrupted has a record, or never got a namespace).
    let ids: BTreeSet<&str> = sbs.iter().map(|s| s.id.as_str()).collect();
    for c in calls.iter().filter(|c| c.op == "sb+") {
        if let Some(id) = c.id.as_deref().filter(|id| !ids.contains(id)) {
            let ns = format!("tapnet-{}", &id[..12]);
            assert!(
                !netns_exists(&ns),
                "{ns} of removed {} remains\n{}",
                c.target,
                ctx()
            );
        }
    }
    // And as a net for anything else: any `tapnet-*` namespace holding an interface with
    // one of this test's MACs (02:42:0a:fb:0d:…, 02:42:0a:fc:…) is one of the sandboxes.
    let known: BTreeSet<String> = sbs.iter().map(|s| s.netns.clone()).collect();
    for prefix in ["02:42:0a:fb:0d:", "02:42:0a:fc:"] {
        for ns in common::netns_with_mac(prefix) {
            assert!(
                known.contains(&ns),
                "namespace {ns} of this daemon has no record\n{}",
                ctx()
            );
        }
    }
}

/// Checklist 9: bad input: Docker's status and message for each, and nothing changed.
#[test]
#[ignore = "needs root"]
fn bad_input_gets_dockers_errors_and_changes_nothing() {
    let mut d = Daemon::start("bad");
    d.ok(&["network", "create", "--subnet", "10.251.9.0/24", "good"]);
    d.sandbox("s1", &["good"], &["--ip", "10.251.9.5"]);
    let state = |d: &Daemon| {
        (
            ls_json(d),
            d.get("/networks").json(),
            d.get("/sandboxes").json(),
            d.inspect("network", "good"),
            d.inspect("network", "bridge"),
        )
    };
    let before = state(&d);
    let netns_before = common::netns_with_mac("02:42:0a:fb:09:");
    assert_eq!(netns_before.len(), 1);

    let create = |body: &str| d.post("/networks/create", body);
    let sandbox = |body: Value| d.post("/sandboxes", &body.to_string());
    let expect = |what: &str, r: common::Http, status: u16, msg: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let m = r.message();
        assert!(m.contains(msg), "{what}: message {m:?} lacks {msg:?}");
    };
    expect(
        "malformed JSON",
        create(r#"{"Name": "x", "#),
        400,
        "invalid JSON",
    );
    expect(
        "malformed sandbox JSON",
        d.post("/sandboxes", "{nope"),
        400,
        "invalid JSON",
    );
    expect(
        "wrong JSON type",
        create(r#"{"Name": 5}"#),
        400,
        "invalid JSON",
    );
    expect(
        "unknown driver",
        create(r#"{"Name": "x", "Driver": "foo"}"#),
        404,
        r#"plugin "foo" not found"#,
    );
    expect(
        "unknown option",
        create(r#"{"Name": "x", "Options": {"com.example.nope": "1"}}"#),
        400,
        "unknown option",
    );
    expect(
        "bad option value",
        create(r#"{"Name": "x", "Options": {"com.docker.network.driver.mtu": "9"}}"#),
        400,
        "invalid MTU",
    );
    expect(
        "invalid subnet",
        create(r#"{"Name": "x", "IPAM": {"Config": [{"Subnet": "10.251.300.0/24"}]}}"#),
        400,
        "",
    );
    expect(
        "subnet with host bits",
        create(r#"{"Name": "x", "IPAM": {"Config": [{"Subnet": "10.251.20.1/24"}]}}"#),
        400,
        "invalid subnet 10.251.20.1/24",
    );
    expect(
        "overlapping subnet",
        create(r#"{"Name": "x", "IPAM": {"Config": [{"Subnet": "10.251.9.128/25"}]}}"#),
        403,
        "Pool overlaps with other one on this address space",
    );
    expect(
        "duplicate network",
        create(r#"{"Name": "good"}"#),
        409,
        "network with name good already exists",
    );
    expect(
        "static IP outside the subnet",
        sandbox(json!({"Networks": [{"Network": "good", "IPv4Address": "10.251.99.5"}]})),
        400,
        "no configured subnet contains IP address 10.251.99.5",
    );
    expect(
        "static IP in use",
        sandbox(json!({"Networks": [{"Network": "good", "IPv4Address": "10.251.9.5"}]})),
        403,
        "Address already in use",
    );
    expect(
        "static IP = gateway",
        sandbox(json!({"Networks": [{"Network": "good", "IPv4Address": "10.251.9.1"}]})),
        403,
        "Address already in use",
    );
    expect(
        "static IP not an address",
        sandbox(json!({"Networks": [{"Network": "good", "IPv4Address": "banana"}]})),
        400,
        "banana",
    );
    expect(
        "static IP on the default bridge",
        sandbox(json!({"Networks": [{"Network": "bridge", "IPv4Address": "172.17.0.9"}]})),
        400,
        "user specified IP address is supported on user defined networks only",
    );
    expect(
        "duplicate sandbox",
        sandbox(json!({"Name": "s1", "Networks": [{"Network": "good"}]})),
        409,
        r#"The container name "/s1" is already in use"#,
    );
    expect(
        "second network missing",
        sandbox(json!({"Name": "s2", "Networks": [{"Network": "good"}, {"Network": "nope"}]})),
        404,
        "network nope not found",
    );
    expect(
        "missing network",
        d.get("/networks/nope"),
        404,
        "network nope not found",
    );
    expect(
        "rm missing network",
        d.delete("/networks/nope"),
        404,
        "network nope not found",
    );
    expect(
        "connect to missing network",
        d.post("/networks/nope/connect", r#"{"Container": "s1"}"#),
        404,
        "network nope not found",
    );
    expect(
        "missing sandbox",
        d.get("/sandboxes/nope"),
        404,
        "No such container: nope",
    );
    expect(
        "rm missing sandbox",
        d.delete("/sandboxes/nope"),
        404,
        "No such container: nope",
    );
    expect(
        "connect a missing sandbox",
        d.post("/networks/good/connect", r#"{"Container": "nope"}"#),
        404,
        "No such container: nope",
    );
    for n in ["bridge", "host", "none"] {
        expect(
            "rm predefined",
            d.delete(&format!("/networks/{n}")),
            403,
            &format!("{n} is a pre-defined network and cannot be removed"),
        );
    }
    // The CLI's view of the same: "Error response from daemon: …", exit status 1.
    let err = d.fails(&["network", "rm", "bridge"], 1);
    assert_eq!(
        err.trim(),
        "Error response from daemon: bridge is a pre-defined network and cannot be removed"
    );
    let err = d.fails(&["network", "create", "-d", "foo", "x"], 1);
    assert!(
        err.contains(r#"Error response from daemon: plugin "foo" not found"#),
        "{err}"
    );
    let err = d.fails(&["network", "create", "--subnet", "10.251.9.0/25", "x"], 1);
    assert!(err.contains("Pool overlaps"), "{err}");
    let err = d.fails(
        &[
            "sandbox",
            "create",
            "--network",
            "good",
            "--ip",
            "10.251.9.5",
        ],
        1,
    );
    assert!(err.contains("Address already in use"), "{err}");
    let err = d.fails(&["sandbox", "inspect", "nope"], 1);
    assert!(err.contains("No such container: nope"), "{err}");

    assert!(state(&d) == before, "a failed call changed the state");
    // Nor did any reach the store: the same after a restart.
    d.restart();
    assert!(
        state(&d) == before,
        "a failed call changed the stored state"
    );
    // No namespace was made for a sandbox that was refused.
    assert_eq!(common::netns_with_mac("02:42:0a:fb:09:"), netns_before);
}

/// Checklist 10: the docker CLI against the daemon (`DOCKER_HOST=unix://…/tapnet.sock`).
#[test]
#[ignore = "needs root"]
fn docker_cli_drives_the_daemon() {
    let Some(docker) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("docker"))
            .find(|f| f.is_file())
    }) else {
        panic!("docker_cli_drives_the_daemon needs the docker CLI on PATH (.ci/run installs it)");
    };
    let d = Daemon::start("docker");
    let config = d.dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let run = |args: &[&str]| {
        let o = output_within(
            Command::new(&docker)
                .args(args)
                .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
                .env("DOCKER_CONFIG", &config)
                .env_remove("DOCKER_CONTEXT")
                .env_remove("DOCKER_API_VERSION")
                .stdin(std::process::Stdio::null()),
            common::CMD_LIMIT,
        );
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "docker {args:?}: {out}{err}");
        out
    };
    let ls = ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    assert_eq!(
        ls,
        "bridge bridge local\nhost host local\nnone null local\n"
    );
    let id = ok(&[
        "network",
        "create",
        "--subnet",
        "10.251.15.0/24",
        "--gateway",
        "10.251.15.254",
        "--label",
        "via=docker",
        "dnet",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let tapnet_ls = ls_json(&d);
    assert!(tapnet_ls.iter().any(|n| n["Name"] == "dnet"));
    let out = ok(&[
        "network",
        "inspect",
        "--format",
        concat!(
            "{{.Id}} {{(index .IPAM.Config 0).Subnet}} ",
            "{{(index .IPAM.Config 0).Gateway}} {{.Labels.via}}"
        ),
        "dnet",
    ]);
    assert_eq!(
        out.trim(),
        format!("{} 10.251.15.0/24 10.251.15.254 docker", id.trim())
    );
    let sb = d.sandbox("dsb", &["bridge"], &[]);
    ok(&["network", "connect", "--ip", "10.251.15.9", "dnet", "dsb"]);
    assert!(addrs(&sb.netns).contains(&("eth1".to_string(), "10.251.15.9/24".to_string())));
    assert_pings(&sb.netns, "10.251.15.254");
    let out = ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
        "dnet",
    ]);
    assert_eq!(out.trim(), "dsb 10.251.15.9/24");
    let (code, _, err) = run(&["network", "rm", "dnet"]);
    assert_eq!(code, 1);
    assert!(err.contains("has active endpoints"), "{err}");
    ok(&["network", "disconnect", "dnet", "dsb"]);
    assert!(!links(&sb.netns).contains(&"eth1".to_string()));
    assert_eq!(ok(&["network", "rm", "dnet"]).trim(), "dnet");
    ok(&["network", "create", "--subnet", "10.251.16.0/24", "dprune"]);
    let out = ok(&["network", "prune", "-f"]);
    assert!(out.contains("Deleted Networks:\ndprune\n"), "{out}");
    let (code, _, err) = run(&["network", "rm", "bridge"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bridge is a pre-defined network and cannot be removed"),
        "{err}"
    );
    let ls = ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls, "bridge\nhost\nnone\n");
}

/// Checklist 7b: the states a crash can leave between a commit and the plumbing, made by
/// hand while the daemon is down, and repaired by the next start: a removed sandbox
/// whose namespace is still there; a half-made namespace (its mount point only); an
/// endpoint whose TAP is missing; a sandbox whose namespace is missing.
#[test]
#[ignore = "needs root"]
fn restart_repairs_interrupted_operations() {
    use tapnet_ctl::daemon::ipam::Ipam;
    use tapnet_ctl::daemon::store::{Change, Store};

    let mut d = Daemon::start("repair");
    d.ok(&["network", "create", "--subnet", "10.251.17.0/24", "rep"]);
    d.ok(&["network", "create", "--subnet", "10.251.18.0/24", "rep2"]);
    let g = d.sandbox("g", &["rep"], &[]);
    let h = d.sandbox("h", &["rep"], &[]);
    d.sandbox("m", &["rep"], &[]);
    d.ok(&["network", "connect", "rep2", "m"]);
    let m = d.sandbox_info("m");
    let n = d.sandbox("n", &["rep"], &[]);
    let peer = d.sandbox("peer", &["rep2"], &[]);
    d.remember_sandboxes_quietly();
    d.kill9();

    // (a) `sandbox rm g` committed, its namespace not deleted yet.
    {
        let store = Store::open(&d.dir.join("tapnet.db")).unwrap();
        let snap = store.load().unwrap();
        let rec = &snap.sandboxes[&g.id];
        let mut ipam: Ipam = serde_json::from_slice(snap.ipam.as_deref().unwrap()).unwrap();
        let mut changes = Vec::new();
        for ep in &rec.endpoints {
            let e = &snap.endpoints[ep];
            let pool = &snap.networks[&e.network_id].ipam[0].pool_id;
            ipam.release_address(pool, e.ipv4.unwrap()).unwrap();
            changes.push(Change::DelEndpoint(ep));
        }
        changes.push(Change::DelSandbox(&g.id));
        changes.push(Change::NetnsGone(&g.netns));
        let bytes = serde_json::to_vec(&ipam).unwrap();
        store.commit(&changes, Some(&bytes)).unwrap();
    }
    assert!(netns_exists(&g.netns));
    // (b) h's namespace half made: the mount point is there, the namespace is not.
    let h_path = format!("/run/netns/{}", h.netns);
    nix::mount::umount2(h_path.as_str(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(std::path::Path::new(&h_path).exists());
    assert!(NetNs::open(&h.netns).is_err());
    // (c) m's eth1 missing (a connect committed but not plugged, or a disconnect
    // unplugged but not committed).
    let o = Command::new("ip")
        .args(["-n", &m.netns, "link", "del", "eth1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // (d) n's namespace missing altogether.
    NetNs::open(&n.netns).unwrap().delete().unwrap();

    d.spawn();
    // (a) gone, its address free.
    assert!(
        !netns_exists(&g.netns),
        "the removed sandbox's namespace stayed"
    );
    let names: Vec<String> = d
        .get("/sandboxes")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(!names.contains(&"g".to_string()));
    assert_eq!(ips_in_use(&d.inspect("network", "rep")), 3 + 3);
    // (b), (c), (d): whole again, and traffic flows.
    for s in [&h, &m, &n] {
        assert!(NetNs::open(&s.netns).is_ok(), "{} has no namespace", s.name);
        let want: Vec<(String, String)> = s
            .nets
            .iter()
            .map(|(_, ip, ifname, _)| (ifname.clone(), format!("{ip}/24")))
            .collect();
        let mut have = addrs(&s.netns);
        have.sort();
        assert_eq!(have, want, "{}", s.name);
        assert_eq!(
            default_route(&s.netns).as_deref(),
            Some("default via 10.251.17.1 dev eth0")
        );
        assert_pings(&s.netns, "10.251.17.1");
    }
    assert_pings(&h.netns, &n.ip("rep"));
    assert_pings(&m.netns, &peer.ip("rep2"));
    assert_pings(&peer.netns, &m.ip("rep2"));
    // g's address goes to the next sandbox.
    let again = d.sandbox("again", &["rep"], &[]);
    assert_eq!(again.ip("rep"), g.ip("rep"));
}
