//! The swarm end to end: daemons standing for hosts (a namespace each, on a bridge:
//! [`tapnet_tests::multihost`]) form a swarm with Docker's commands, and sandboxes on
//! different hosts meet on overlay networks.
//!
//! Root only (namespaces, TAP devices): each test is `#[ignore = "needs root"]`, and,
//! run without root anyway, says so and passes (fails under CI, which runs as root). Run
//! them with `cargo test -p tapnet-tests --test swarm -- --include-ignored`.
//!
//! What converges (membership, gossip, elections) is polled for up to [`CONVERGE`].

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::Value;
use tapnet_engine::sys::netns::NetNs;
use tapnet_tests::e2e::{CHUNK, reach, tcp};
use tapnet_tests::multihost::{self, Cluster, Host, eventually, root_or_skip};

/// How long the swarm may take to agree on a change.
const CONVERGE: Duration = Duration::from_secs(30);

/// The swarm's management port.
const PORT: u16 = 2377;

// ----- helpers -----

/// A swarm on `n` fresh hosts: host 1 initializes it, hosts 2 to `managers` join as
/// managers, the others as workers; returns once host 1 lists every node Ready.
fn swarm(n: usize, managers: usize) -> Cluster {
    form_swarm(Cluster::new(n), managers)
}

/// The arguments that place `h`'s swarm ports: its advertise address, and on a cluster
/// without links (loopback addresses, one port space) its management listener on that
/// address rather than on every address.
fn placed(c: &Cluster, h: &Host) -> Vec<String> {
    let mut args = vec!["--advertise-addr".to_string(), h.addr.to_string()];
    if !c.has_links() {
        args.extend(["--listen-addr".to_string(), format!("{}:{PORT}", h.addr)]);
    }
    args
}

/// Hosts of `c` form a swarm as [`swarm`] says.
fn form_swarm(c: Cluster, managers: usize) -> Cluster {
    let h1 = c.host(1);
    let mut init = vec!["swarm".to_string(), "init".to_string()];
    init.extend(placed(&c, h1));
    let out = h1.ok(&init.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.contains("Swarm initialized"),
        "swarm init says so: {out}"
    );
    let worker = token(h1, "worker");
    let manager = token(h1, "manager");
    assert_ne!(worker, manager, "the two join tokens differ");
    let leader = format!("{}:{PORT}", h1.addr);
    for h in &c.hosts()[1..] {
        let t = if h.index <= managers {
            &manager
        } else {
            &worker
        };
        let mut join = vec![
            "swarm".to_string(),
            "join".to_string(),
            "--token".to_string(),
            t.clone(),
        ];
        join.extend(placed(&c, h));
        join.push(leader.clone());
        let out = h.ok(&join.iter().map(String::as_str).collect::<Vec<_>>());
        let role = if h.index <= managers {
            "manager"
        } else {
            "worker"
        };
        assert!(
            out.contains(&format!("This node joined a swarm as a {role}")),
            "{}: swarm join says so: {out}",
            h.name
        );
    }
    eventually("every node Ready", CONVERGE, || {
        ready_nodes(h1, c.hosts()).map(|_| ())
    });
    c
}

/// `swarm join-token -q ROLE` on `h`.
fn token(h: &Host, role: &str) -> String {
    let t = h
        .ok(&["swarm", "join-token", "-q", role])
        .trim()
        .to_string();
    assert!(
        !t.is_empty() && !t.contains(char::is_whitespace),
        "a join token: {t:?}"
    );
    t
}

/// The rows of `node ls` on `h` (header left out), split on whitespace, the self mark
/// `*` dropped.
fn node_rows(h: &Host) -> Result<Vec<Vec<String>>, String> {
    let (code, out, err) = h.tapnet(&["node", "ls"]);
    if code != 0 {
        return Err(format!("node ls: {err}"));
    }
    Ok(out
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "*")
                .map(str::to_string)
                .collect()
        })
        .collect())
}

/// Ok when `node ls` on `h` lists exactly the hosts `all`, each Ready.
fn ready_nodes(h: &Host, all: &[Host]) -> Result<(), String> {
    let rows = node_rows(h)?;
    if rows.len() != all.len() {
        return Err(format!("{} nodes listed: {rows:?}", rows.len()));
    }
    for host in all {
        let ready = rows
            .iter()
            .any(|r| r.contains(&host.name) && r.iter().any(|w| w == "Ready"));
        if !ready {
            return Err(format!("{} is not Ready: {rows:?}", host.name));
        }
    }
    Ok(())
}

/// The status (`Ready`, `Down`, …) `node ls` on `h` shows for `host`.
fn node_status(h: &Host, host: &Host) -> Result<String, String> {
    let rows = node_rows(h)?;
    let row = rows
        .iter()
        .find(|r| r.contains(&host.name))
        .ok_or_else(|| format!("{} not listed: {rows:?}", host.name))?;
    // ID HOSTNAME STATUS ...
    row.get(2)
        .cloned()
        .ok_or_else(|| format!("no status: {row:?}"))
}

/// `network create -d overlay --attachable NAME` on `h`.
fn overlay(h: &Host, name: &str) {
    let id = h.ok(&["network", "create", "-d", "overlay", "--attachable", name]);
    assert!(!id.trim().is_empty(), "network create prints the id");
}

/// Ok when `network ls` on `h` lists `net` as an overlay of scope swarm.
fn lists_overlay(h: &Host, net: &str) -> Result<(), String> {
    let (code, out, err) = h.tapnet(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    if code != 0 {
        return Err(format!("network ls: {err}"));
    }
    let want = format!("{net} overlay swarm");
    if out.lines().any(|l| l.trim() == want) {
        Ok(())
    } else {
        Err(format!("{}: no {want:?} in {out:?}", h.name))
    }
}

/// `sandbox create --name NAME --network NET` on `h`; its address on `net`.
fn sandbox(h: &Host, name: &str, net: &str) -> Ipv4Addr {
    let id = h.ok(&["sandbox", "create", "--name", name, "--network", net]);
    assert_eq!(id.trim().len(), 64, "sandbox create prints the id: {id:?}");
    h.sandbox(name).ip(net)
}

/// The namespace of sandbox `name` on `h`.
fn ns_of(h: &Host, name: &str) -> NetNs {
    let netns = h.sandbox(name).netns;
    NetNs::open(&netns).unwrap_or_else(|e| panic!("open {netns}: {e}"))
}

/// What `network inspect NET` on `h` shows of the network's members: the names of the
/// endpoints under `Containers` and, of each entry under `Peers` (Docker's list of the
/// nodes on a swarm network), its `Name` and its `IP`.
fn endpoints_seen(h: &Host, net: &str) -> Vec<String> {
    let (code, out, err) = h.tapnet(&["network", "inspect", net]);
    assert_eq!(code, 0, "{}: network inspect {net}: {err}", h.name);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let v = &v[0];
    let mut seen = Vec::new();
    if let Some(m) = v["Containers"].as_object() {
        seen.extend(
            m.values()
                .filter_map(|e| e["Name"].as_str())
                .map(str::to_string),
        );
    }
    if let Some(peers) = v["Peers"].as_array() {
        for p in peers {
            for key in ["Name", "IP"] {
                if let Some(s) = p[key].as_str() {
                    seen.push(s.to_string());
                }
            }
        }
    }
    seen
}

/// Whether `h`'s view of `net` holds sandbox `sandbox` of host `of`: the sandbox by name,
/// or its node as a peer.
fn sees(h: &Host, net: &str, of: &Host, sandbox: &str) -> bool {
    let seen = endpoints_seen(h, net);
    let ip = of.addr.to_string();
    seen.iter()
        .any(|s| *s == sandbox || *s == ip || *s == of.name)
}

/// `getent hosts NAME` inside sandbox `sb` of `h`: the first address.
fn resolve(h: &Host, sb: &str, name: &str) -> Option<Ipv4Addr> {
    let o = h.exec_in_sandbox(sb, &["getent", "hosts", name]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
}

/// Ok when `to` answers one ping from sandbox `sb` of `h`.
fn ping_from(h: &Host, sb: &str, to: Ipv4Addr) -> Result<(), String> {
    let o = h.exec_in_sandbox(
        sb,
        &["ping", "-n", "-q", "-c", "1", "-W", "1", &to.to_string()],
    );
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{to} does not answer {sb} on {}", h.name))
    }
}

// ----- the harness itself -----

/// The underlay and the daemons: three hosts ping each other over the bridge, and each
/// daemon answers the CLI.
#[test]
#[ignore = "needs root"]
fn underlay_and_daemons_come_up() {
    if !root_or_skip("underlay_and_daemons_come_up") {
        return;
    }
    let c = Cluster::new(3);
    for a in c.hosts() {
        for b in c.hosts() {
            if a.index != b.index {
                assert!(
                    eventually_pings(a, b.addr),
                    "{} does not reach {} over the underlay",
                    a.name,
                    b.name
                );
            }
        }
        let out = a.ok(&["network", "ls", "--format", "{{.Name}}"]);
        for builtin in ["bridge", "host", "none"] {
            assert!(
                out.lines().any(|l| l == builtin),
                "{}: network ls lists {builtin}: {out}",
                a.name
            );
        }
        // The daemon runs in its host's namespace, under the host's name.
        let pid = a.pid().expect("the daemon runs");
        let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).unwrap();
        let host_ns = a.netns().expect("a namespace").path().to_str().unwrap();
        assert_eq!(
            ino(&format!("/proc/{pid}/ns/net")),
            ino(host_ns),
            "{}: the daemon's namespace",
            a.name
        );
        let uts = format!("--uts=/proc/{pid}/ns/uts");
        let o = multihost::output_within(
            std::process::Command::new("nsenter").args([uts.as_str(), "hostname"]),
            multihost::CMD_LIMIT,
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), a.name);
    }
    // A link cut and restored.
    let (h1, h2) = (c.host(1), c.host(2));
    h2.link(false);
    assert!(!h1.pings(h2.addr), "the cut link still carries");
    h2.link(true);
    assert!(eventually_pings(h1, h2.addr), "the restored link carries");
    // A daemon killed and restarted on the same state.
    h2.ok(&["network", "create", "kept"]);
    h2.kill9();
    assert!(!h2.running());
    h2.restart();
    let out = h2.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        out.lines().any(|l| l == "kept"),
        "kept after a restart: {out}"
    );
}

/// What the cluster made goes with it: sandboxes' namespaces (also of a killed daemon),
/// the hosts' and the wire's namespaces, the state directories.
#[test]
#[ignore = "needs root"]
fn cluster_cleans_up() {
    if !root_or_skip("cluster_cleans_up") {
        return;
    }
    let c = Cluster::new(2);
    let (h1, h2) = (c.host(1), c.host(2));
    h1.ok(&["network", "create", "--subnet", "10.251.7.0/24", "n"]);
    let a = sandbox(h1, "a", "n");
    let b = sandbox(h1, "b", "n");
    let o = h1.exec_in_sandbox("a", &["ping", "-c", "1", "-W", "5", &b.to_string()]);
    assert!(o.status.success(), "a pings b on a bridge network");
    let o = h1.exec_in_sandbox("b", &["ip", "-o", "-4", "addr"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("10.251.7."));
    h2.ok(&["network", "create", "m"]);
    sandbox(h2, "c", "m");
    let mut names: Vec<String> = vec![h1.sandbox("a").netns, h1.sandbox("b").netns];
    names.push(h2.sandbox("c").netns);
    names.extend(c.hosts().iter().map(|h| h.name.clone()));
    names.push(c.wire_netns().expect("a wire").to_string());
    let dirs: Vec<_> = c.hosts().iter().map(|h| h.dir.clone()).collect();
    // Host 2's daemon dies first: its sandbox's namespace is found in its database.
    h2.kill9();
    assert_ne!(a, b);
    drop(c);
    for n in names {
        assert!(
            !std::path::Path::new("/run/netns").join(&n).exists(),
            "{n} is left"
        );
    }
    for d in dirs {
        if std::env::var_os("TAPNET_E2E_KEEP").is_none() {
            assert!(!d.exists(), "{d:?} is left");
        }
    }
}

/// The loopback variant: daemons side by side in the test's namespace, each answering
/// its own CLI.
#[test]
#[ignore = "needs root"]
fn loopback_daemons_come_up() {
    if !root_or_skip("loopback_daemons_come_up") {
        return;
    }
    let c = Cluster::loopback(2);
    assert!(!c.has_links() && c.wire_netns().is_none());
    c.host(1).ok(&["network", "create", "only-on-1"]);
    for h in c.hosts() {
        assert_eq!(h.addr, Ipv4Addr::new(127, 0, 0, h.index as u8));
        assert!(h.pings(h.addr));
        let out = h.ok(&["network", "ls", "--format", "{{.Name}}"]);
        assert_eq!(
            out.lines().any(|l| l == "only-on-1"),
            h.index == 1,
            "{}: each daemon has its own state: {out}",
            h.name
        );
    }
}

/// Whether `to` answers ping from `h`'s namespace within 10 s.
fn eventually_pings(h: &Host, to: Ipv4Addr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if h.pings(to) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
    }
}

// ----- the swarm -----

/// init, join-token, join as manager and as worker; `node ls` everywhere a manager is.
#[test]
#[ignore = "needs root"]
fn swarm_forms() {
    if !root_or_skip("swarm_forms") {
        return;
    }
    let c = swarm(3, 2);
    for k in [1, 2] {
        eventually("node ls on a manager", CONVERGE, || {
            ready_nodes(c.host(k), c.hosts())
        });
    }
    // A worker cannot list nodes, as Docker's.
    let (code, _, err) = c.host(3).tapnet(&["node", "ls"]);
    assert_ne!(code, 0, "node ls on a worker must fail");
    assert!(err.contains("not a swarm manager"), "{err}");
}

/// An overlay network created on a manager is listed on every node, scope swarm.
#[test]
#[ignore = "needs root"]
fn overlay_network_is_listed_everywhere() {
    if !root_or_skip("overlay_network_is_listed_everywhere") {
        return;
    }
    let c = swarm(3, 1);
    overlay(c.host(1), "ov1");
    for h in c.hosts() {
        eventually("the overlay listed", CONVERGE, || lists_overlay(h, "ov1"));
    }
}

/// Sandboxes on two hosts meet on an overlay: ping, TCP, names; another overlay's do not.
#[test]
#[ignore = "needs root"]
fn overlay_connects_sandboxes_across_hosts() {
    if !root_or_skip("overlay_connects_sandboxes_across_hosts") {
        return;
    }
    let c = swarm(3, 1);
    let (h1, h3) = (c.host(1), c.host(3));
    overlay(h1, "ov1");
    overlay(h1, "ov2");
    eventually("ov1 on host 3", CONVERGE, || lists_overlay(h3, "ov1"));
    eventually("ov2 on host 3", CONVERGE, || lists_overlay(h3, "ov2"));
    let a = sandbox(h1, "a", "ov1");
    let b = sandbox(h3, "b", "ov1");
    let a_ns = ns_of(h1, "a");
    let b_ns = ns_of(h3, "b");
    assert!(reach(&a_ns, b, 2, &[]), "a on host 1 reaches b on host 3");
    let (sent, got) = tcp(&a_ns, &b_ns, b, 64 * CHUNK);
    assert_eq!(sent, got, "the TCP transfer arrives intact");
    eventually("b resolved from a", CONVERGE, || {
        match resolve(h1, "a", "b") {
            Some(ip) if ip == b => Ok(()),
            other => Err(format!("b resolves to {other:?}, not {b}")),
        }
    });
    eventually("a resolved from b", CONVERGE, || {
        match resolve(h3, "b", "a") {
            Some(ip) if ip == a => Ok(()),
            other => Err(format!("a resolves to {other:?}, not {a}")),
        }
    });
    // Another overlay: its sandboxes meet each other, not ov1's.
    sandbox(h1, "c", "ov2");
    let d = sandbox(h3, "d", "ov2");
    let c_ns = ns_of(h1, "c");
    assert!(reach(&c_ns, d, 2, &[]), "c reaches d on ov2");
    assert!(ping_from(h1, "c", b).is_err(), "c on ov2 reaches b on ov1");
    assert_eq!(
        resolve(h1, "c", "b"),
        None,
        "c resolves b of another network"
    );
}

/// A worker killed (SIGKILL) leaves the others' view of the network; restarted, its
/// sandbox is back.
#[test]
#[ignore = "needs root"]
fn killed_worker_leaves_and_comes_back() {
    if !root_or_skip("killed_worker_leaves_and_comes_back") {
        return;
    }
    let c = swarm(3, 1);
    let (h1, h3) = (c.host(1), c.host(3));
    overlay(h1, "ov1");
    eventually("ov1 on host 3", CONVERGE, || lists_overlay(h3, "ov1"));
    sandbox(h1, "a", "ov1");
    let b = sandbox(h3, "b", "ov1");
    let a_ns = ns_of(h1, "a");
    assert!(reach(&a_ns, b, 2, &[]), "a reaches b");
    eventually("host 1 sees b", CONVERGE, || {
        sees(h1, "ov1", h3, "b")
            .then_some(())
            .ok_or_else(|| format!("{:?}", endpoints_seen(h1, "ov1")))
    });
    h3.kill9();
    eventually("b gone from host 1's view", CONVERGE, || {
        (!sees(h1, "ov1", h3, "b"))
            .then_some(())
            .ok_or_else(|| format!("{:?}", endpoints_seen(h1, "ov1")))
    });
    eventually("host 3 Down", CONVERGE, || match node_status(h1, h3)? {
        s if s == "Ready" => Err("still Ready".into()),
        _ => Ok(()),
    });
    h3.restart();
    assert_eq!(h3.sandbox("b").ip("ov1"), b, "b keeps its address");
    eventually("every node Ready again", CONVERGE, || {
        ready_nodes(h1, c.hosts())
    });
    eventually("host 1 sees b again", CONVERGE, || {
        sees(h1, "ov1", h3, "b")
            .then_some(())
            .ok_or_else(|| format!("{:?}", endpoints_seen(h1, "ov1")))
    });
    assert!(reach(&a_ns, b, 2, &[]), "a reaches b again");
}

/// The leader killed: the other managers elect one, a network is created through one of
/// them, and the networks made before are still there.
#[test]
#[ignore = "needs root"]
fn leader_killed_the_managers_go_on() {
    if !root_or_skip("leader_killed_the_managers_go_on") {
        return;
    }
    let c = swarm(3, 3);
    let (h1, h2, h3) = (c.host(1), c.host(2), c.host(3));
    overlay(h1, "before");
    eventually("before on host 2", CONVERGE, || lists_overlay(h2, "before"));
    h1.kill9();
    // A try that timed out may still have been applied: then the network is listed.
    eventually("network create through host 2", CONVERGE, || {
        let (code, _, err) = h2.tapnet(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "after",
        ]);
        if code == 0 {
            Ok(())
        } else {
            lists_overlay(h2, "after").map_err(|e| format!("{err}; {e}"))
        }
    });
    for h in [h2, h3] {
        for net in ["before", "after"] {
            eventually("listed after the election", CONVERGE, || {
                lists_overlay(h, net)
            });
        }
    }
    // The old leader comes back as a follower and catches up.
    h1.restart();
    eventually("the old leader lists the new network", CONVERGE, || {
        lists_overlay(h1, "after")
    });
}

/// One node's link down: its sandbox unreachable and the node not Ready; up again: both
/// back.
#[test]
#[ignore = "needs root"]
fn link_down_and_up() {
    if !root_or_skip("link_down_and_up") {
        return;
    }
    let c = swarm(3, 1);
    let (h1, h3) = (c.host(1), c.host(3));
    overlay(h1, "ov1");
    eventually("ov1 on host 3", CONVERGE, || lists_overlay(h3, "ov1"));
    sandbox(h1, "a", "ov1");
    let b = sandbox(h3, "b", "ov1");
    let a_ns = ns_of(h1, "a");
    assert!(reach(&a_ns, b, 2, &[]), "a reaches b");
    h3.link(false);
    assert!(ping_from(h1, "a", b).is_err(), "b answers over a cut link");
    eventually("host 3 not Ready", CONVERGE, || {
        match node_status(h1, h3)? {
            s if s == "Ready" => Err("still Ready".into()),
            _ => Ok(()),
        }
    });
    h3.link(true);
    eventually("every node Ready again", CONVERGE, || {
        ready_nodes(h1, c.hosts())
    });
    eventually("a reaches b again", CONVERGE, || ping_from(h1, "a", b));
}

/// A join with a wrong token is refused with an error, and the swarm is unchanged.
#[test]
#[ignore = "needs root"]
fn join_with_a_wrong_token_is_refused() {
    if !root_or_skip("join_with_a_wrong_token_is_refused") {
        return;
    }
    let c = Cluster::new(2);
    let (h1, h2) = (c.host(1), c.host(2));
    h1.ok(&["swarm", "init", "--advertise-addr", &h1.addr.to_string()]);
    let good = token(h1, "worker");
    // Same shape, another secret: the last part (Docker's `SWMTKN-1-<ca>-<secret>`)
    // changed, or the whole token if it has no parts.
    let (head, secret) = good.rsplit_once('-').unwrap_or(("", good.as_str()));
    let flipped: String = secret
        .chars()
        .map(|ch| if ch == 'a' { 'b' } else { 'a' })
        .collect();
    let bad = if head.is_empty() {
        flipped
    } else {
        format!("{head}-{flipped}")
    };
    let leader = format!("{}:{PORT}", h1.addr);
    for t in [bad.as_str(), "SWMTKN-1-nonsense"] {
        let (code, out, err) = h2.tapnet(&[
            "swarm",
            "join",
            "--token",
            t,
            "--advertise-addr",
            &h2.addr.to_string(),
            &leader,
        ]);
        assert_ne!(code, 0, "a join with token {t} must fail: {out}");
        assert!(
            err.to_lowercase().contains("token"),
            "the error speaks of the token: {err}"
        );
    }
    let rows = node_rows(h1).expect("node ls");
    assert_eq!(rows.len(), 1, "only the first node: {rows:?}");
    // The refused node is in no swarm and can still join with the right token.
    h2.ok(&[
        "swarm",
        "join",
        "--token",
        &good,
        "--advertise-addr",
        &h2.addr.to_string(),
        &leader,
    ]);
    eventually("both nodes Ready", CONVERGE, || ready_nodes(h1, c.hosts()));
}

/// Rootless: three unprivileged daemons on 127.0.0.1-3 (one namespace of the test's)
/// form a swarm; a rootless sandbox on node 1 serves TCP on an attachable overlay, and
/// one on node 3 reaches it by address and by name.
#[test]
#[ignore = "needs root"]
fn rootless_swarm_on_loopback() {
    if !root_or_skip("rootless_swarm_on_loopback") {
        return;
    }
    let c = form_swarm(Cluster::rootless_loopback(3), 1);
    let (h1, h3) = (c.host(1), c.host(3));
    for h in c.hosts() {
        assert!(h.is_rootless());
        let pid = h.pid().expect("the daemon runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string();
        assert_ne!(uid, "0", "{}: the daemon runs without root", h.name);
    }
    overlay(h1, "ov");
    eventually("ov on host 3", CONVERGE, || lists_overlay(h3, "ov"));
    let bin = h1.bin().display().to_string();
    let a = h1.run_detached(
        "a",
        &[
            "--network",
            "ov",
            "--",
            &bin,
            "demo-server",
            "db",
            "--listen",
            "0.0.0.0:7000",
        ],
    );
    let a_ip = a.ip("ov");
    let want = "dog, 7 years, likes the beach";
    assert_eq!(ask_db(h3, "ov", &a_ip.to_string()), Ok(want.to_string()));
    eventually("a by name from host 3", CONVERGE, || {
        match ask_db(h3, "ov", "a")? {
            got if got == want => Ok(()),
            got => Err(format!("a answered {got:?}")),
        }
    });
}

/// A TCP request (`max`) from a new rootless sandbox on `h`'s network `net` to the
/// demo's db server at `to` (an address or a name) port 7000: the line it answers.
/// Bash's /dev/tcp, a few tries while the server starts listening.
fn ask_db(h: &Host, net: &str, to: &str) -> Result<String, String> {
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do \
           if exec 3<>/dev/tcp/{to}/7000; then echo max >&3; read -t 3 line <&3; echo \"$line\"; exit 0; fi; \
           sleep 0.3; \
         done 2>/dev/null; exit 1"
    );
    let (code, out, err) = h.tapnet(&[
        "run",
        "--network",
        net,
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ]);
    if code == 0 {
        Ok(out.trim().to_string())
    } else {
        Err(format!(
            "{}: {to}:7000 from {net}: {code}: {out}{err}",
            h.name
        ))
    }
}
