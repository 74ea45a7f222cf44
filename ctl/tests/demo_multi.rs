//! `tapnet demo --multi-host` as a user runs it (as root: nodes in namespaces): it
//! builds the three-node swarm, checks the overlay deployment, and removes everything.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs root"]
fn multi_host_demo_builds_checks_and_removes() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs the multi-host demo as root: run it as root"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapnet"))
        .args(["demo", "--multi-host"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The demo tags its namespaces with its PID (`tn-demo-h1-<tag>`).
    let tag = format!("-{}", child.id() % 100_000);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("the multi-host demo ran for more than 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {text}\n{err}");
    for want in [
        "Leader",
        "ok    client (node 3",
        "ok    web (node 2) -> db (node 1) by name",
        "ok    stranger (network other) cannot reach web",
        "removed:",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    let left = Command::new("ip").args(["netns", "ls"]).output().unwrap();
    let ours = String::from_utf8_lossy(&left.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("tn-demo-")
                && l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.ends_with(&tag))
        })
        .count();
    assert_eq!(ours, 0, "namespaces left behind");
}
