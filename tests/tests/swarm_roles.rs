//! Roles change with Docker's commands: a worker promoted runs Raft and answers
//! manager commands; demoted again, it refuses them. Root only, as the other swarm
//! tests (`cargo test -p tapnet-tests --test swarm_roles -- --include-ignored`).

use std::time::Duration;

use tapnet_tests::multihost::{Cluster, eventually, root_or_skip};

const CONVERGE: Duration = Duration::from_secs(30);

#[test]
#[ignore = "needs root"]
fn promote_then_demote_a_worker() {
    if !root_or_skip("promote_then_demote_a_worker") {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2) = (c.host(1), c.host(2));
    h1.ok(&["swarm", "init", "--advertise-addr", &h1.addr.to_string()]);
    let token = h1.ok(&["swarm", "join-token", "-q", "worker"]);
    for h in &c.hosts()[1..] {
        h.ok(&[
            "swarm",
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            &h.addr.to_string(),
            &format!("{}:2377", h1.addr),
        ]);
    }
    let (code, _, err) = h2.tapnet(&["node", "ls"]);
    assert_ne!(code, 0, "a worker refuses node ls");
    assert!(err.contains("not a swarm manager"), "{err}");
    let out = h1.ok(&["node", "promote", &h2.name]);
    assert!(out.contains("promoted to a manager"), "{out}");
    eventually("host 2 answers node ls", CONVERGE, || {
        let (code, out, err) = h2.tapnet(&["node", "ls"]);
        (code == 0 && out.lines().count() == 4)
            .then_some(())
            .ok_or(format!("{code}: {out}{err}"))
    });
    eventually("host 2 is a reachable manager", CONVERGE, || {
        let out = h1.ok(&["node", "ls"]);
        out.lines()
            .any(|l| l.contains(&h2.name) && l.contains("Reachable"))
            .then_some(())
            .ok_or(out)
    });
    // A write through the promoted manager.
    h2.ok(&["network", "create", "-d", "overlay", "made-on-2"]);
    eventually("host 1 lists it", CONVERGE, || {
        let out = h1.ok(&["network", "ls"]);
        out.contains("made-on-2").then_some(()).ok_or(out)
    });
    let out = h1.ok(&["node", "demote", &h2.name]);
    assert!(out.contains("demoted"), "{out}");
    eventually("host 2 refuses node ls again", CONVERGE, || {
        let (code, out, err) = h2.tapnet(&["node", "ls"]);
        (code != 0 && err.contains("not a swarm manager"))
            .then_some(())
            .ok_or(format!("{code}: {out}{err}"))
    });
    let out = h1.ok(&["node", "ls"]);
    let line = out
        .lines()
        .find(|l| l.contains(&h2.name))
        .unwrap_or_default();
    assert!(!line.contains("Reachable"), "{out}");
    let (code, _, err) = h1.tapnet(&["node", "demote", &h1.name]);
    assert_ne!(code, 0, "the last manager is not demoted");
    assert!(err.contains("last manager"), "{err}");
}
