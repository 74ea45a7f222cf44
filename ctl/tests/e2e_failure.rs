//! End to end: a datapath thread of the real `tapnet daemon` panics (the fault-injection
//! test hook `TAPNET_FAULT`), the daemon notices, says so, removes its socket and exits
//! with status 70 so a supervisor restarts it; the restarted daemon restores every
//! network and sandbox from its store, and traffic flows again.
//!
//! Root only (namespaces, TAPs): `#[ignore = "needs root"]`. Subnets 10.248.<n>.0/24.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, assert_pings, output_within};

/// Run `tapnet daemon` on `d`'s state with fault `fault` armed; its exit status and
/// output. The daemon must end by itself within the limit (else it is killed by PID
/// and the test fails).
fn run_with_fault(d: &Daemon, fault: &str) -> (Option<i32>, String) {
    let o = output_within(
        Command::new(env!("CARGO_BIN_EXE_tapnet"))
            .arg("--state-dir")
            .arg(&d.dir)
            .arg("daemon")
            .env("TAPNET_FAULT", fault)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    let log = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code(), log)
}

fn network_names(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = d
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root"]
fn a_panicking_datapath_thread_ends_the_daemon_and_a_restart_restores_it() {
    let cases = [
        ("panic-worker:switch", "datapath worker tapnet-w0 panicked"),
        ("panic-worker:rx", "datapath worker tapnet-w0 panicked"),
        (
            "panic-hostnet",
            "host networking thread tapnet-host panicked",
        ),
    ];
    for (i, (fault, what)) in cases.into_iter().enumerate() {
        let mut d = Daemon::start("failure");
        let subnet = format!("10.248.{}.0/24", i + 1);
        let gateway = format!("10.248.{}.1", i + 1);
        d.ok(&["network", "create", "--subnet", &subnet, "kept"]);
        let a = d.sandbox("a", &["kept"], &[]);
        let b = d.sandbox("b", &["kept"], &[]);
        assert_pings(&a.netns, &b.ip("kept"));
        let before = network_names(&d);
        assert!(d.stop(Duration::from_secs(10)), "{}", d.log());

        let (code, log) = run_with_fault(&d, fault);
        assert_eq!(code, Some(70), "{fault}: {log}");
        let line = format!(
            "tapnet daemon: {what}: fault injected by a test; exiting with status 70 so a \
             supervisor restarts it"
        );
        assert!(log.contains(&line), "{fault}: no {line:?} in:\n{log}");
        assert!(!d.socket.exists(), "{fault}: the socket was left behind");

        // What a supervisor does: start it again. The state is restored.
        d.spawn();
        assert_eq!(network_names(&d), before, "{fault}");
        assert_eq!(d.sandbox_info("a").ip("kept"), a.ip("kept"), "{fault}");
        assert_pings(&a.netns, &b.ip("kept"));
        assert_pings(&b.netns, &gateway);
    }
}
