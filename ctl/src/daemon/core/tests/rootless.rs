//! Rootless sandboxes: planned by the daemon, plumbed by their process, adopted by fd,
//! reaped when their process is gone.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use tapnet_nat::portspec::{PortMapping, Proto};

use super::*;
use crate::daemon::plumbing::Op;

fn rootless(r: &Rig, name: &str, pid: u32) -> Result<SandboxRecord, DaemonError> {
    r.d().create_rootless_sandbox(
        Some(name.into()),
        None,
        attach(&["pets", "bridge"]),
        &[],
        pid,
    )
}

fn rig() -> Rig {
    let r = Rig::with(MemoryPlumbing::new().rootless());
    r.create_net("pets", "10.1.0.0/24");
    r
}

#[test]
fn the_daemon_plans_and_the_process_plumbs() {
    let r = rig();
    assert_eq!(
        api(rootless(&r, "job", 4242).unwrap_err()),
        (400, "process 4242 is not running".into())
    );
    let owner = r.p().start_process(100);
    let sb = rootless(&r, "job", 100).unwrap();
    assert_eq!(sb.rootless, Some(owner));
    assert!(sb.netns.is_empty());
    assert_eq!(r.d().netns_path(&sb), "/proc/100/ns/net");
    // No namespace and no interface of the daemon's making.
    assert!(r.p().namespaces().is_empty());
    assert!(r.p().attached().is_empty());
    let want = r.d().rootless_interfaces("job").unwrap();
    let names: Vec<(&str, &str, &str, u8, u32)> = want
        .interfaces
        .iter()
        .map(|i| {
            (
                i.name.as_str(),
                i.mac_address.as_str(),
                i.ip_address.as_str(),
                i.ip_prefix_len,
                i.mtu,
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("eth0", "02:42:0a:01:00:02", "10.1.0.2", 24, 1500),
            ("eth1", "02:42:ac:11:00:02", "172.17.0.2", 16, 1500)
        ]
    );
    // Ties go to the network whose name sorts first: bridge.
    assert_eq!(
        (want.gateway.as_str(), want.gateway_interface.as_str()),
        ("172.17.0.1", "eth1")
    );
    // Its process sends the TAPs; the daemon attaches them and records the sender.
    let keeper = r.p().start_process(101);
    let fds = vec![r.p().tap("eth1").unwrap(), r.p().tap("eth0").unwrap()];
    let sb = r
        .d()
        .adopt_taps("job", vec!["eth1".into(), "eth0".into()], fds, 101)
        .unwrap();
    assert_eq!(sb.rootless, Some(keeper));
    assert_eq!(r.p().attached().len(), 2);
    assert_eq!(
        api(r
            .d()
            .adopt_taps(
                "job",
                vec!["eth0".into()],
                vec![r.p().tap("eth0").unwrap()],
                101
            )
            .unwrap_err()),
        (409, "sandbox job already has its interfaces".into())
    );
    // Removing it closes its TAPs (and so its interfaces) and frees its addresses.
    r.d().remove_sandbox("job").unwrap();
    assert!(r.p().attached().is_empty());
}

#[test]
fn adopt_checks_every_fd_and_changes_nothing_when_one_is_wrong() {
    let r = rig();
    r.p().start_process(100);
    rootless(&r, "job", 100).unwrap();
    let tap = |n: &str| r.p().tap(n).unwrap();
    let adopt = |names: &[&str], fds: Vec<OwnedFd>| {
        api(r
            .d()
            .adopt_taps(
                "job",
                names.iter().map(|s| s.to_string()).collect(),
                fds,
                100,
            )
            .unwrap_err())
    };
    assert_eq!(
        adopt(&["eth0", "eth1"], vec![tap("eth0")]),
        (
            400,
            "2 interface names but 1 file descriptors came with the request: send one TAP fd (SCM_RIGHTS) per name"
                .into()
        )
    );
    assert_eq!(
        adopt(&["eth0", "eth9"], vec![tap("eth0"), tap("eth9")]),
        (400, "no TAP for interface eth1 of sandbox job".into())
    );
    assert_eq!(
        adopt(&["eth0", "eth0"], vec![tap("eth0"), tap("eth0")]),
        (400, "no TAP for interface eth1 of sandbox job".into())
    );
    assert_eq!(
        adopt(&["eth0", "eth1"], vec![tap("eth0"), tap("eth7")]),
        (400, "the fd sent for eth1 is the TAP eth7".into())
    );
    let (status, text) = adopt(
        &["eth0", "eth1"],
        vec![
            tap("eth0"),
            std::fs::File::open("/dev/null").unwrap().into(),
        ],
    );
    assert_eq!(status, 400);
    assert!(text.starts_with("the fd sent for eth1: "), "{text}");
    assert_eq!(
        adopt(
            &["eth0", "eth1", "eth2"],
            vec![tap("eth0"), tap("eth1"), tap("eth2")]
        ),
        (400, "sandbox job has no interface eth2".into())
    );
    assert_eq!(
        api(r
            .d()
            .adopt_taps(
                "job",
                vec!["eth0".into(), "eth1".into()],
                vec![tap("eth0"), tap("eth1")],
                7
            )
            .unwrap_err()),
        (400, "process 7 is not running".into())
    );
    // The datapath refuses the second TAP: the first is taken out again.
    r.p().fail(Op::Adopt);
    assert!(
        r.d()
            .adopt_taps(
                "job",
                vec!["eth0".into(), "eth1".into()],
                vec![tap("eth0"), tap("eth1")],
                100
            )
            .is_err()
    );
    assert!(r.p().attached().is_empty());
    assert_eq!(r.d().sandbox("job").unwrap().0.rootless.unwrap().pid, 100);
    // Now right.
    r.d()
        .adopt_taps(
            "job",
            vec!["eth0".into(), "eth1".into()],
            vec![tap("eth0"), tap("eth1")],
            100,
        )
        .unwrap();
    assert_eq!(r.p().attached().len(), 2);
}

#[test]
fn rootless_sandboxes_take_no_connect_and_root_ones_no_adopt() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    r.p().start_process(100);
    rootless(&r, "job", 100).unwrap();
    r.sandbox("web", &[]);
    assert_eq!(
        api(r.d().connect("pets", "job", AttachSpec::default()).map(drop).unwrap_err()),
        (
            403,
            "sandbox job is rootless: its interfaces are made by its process when it starts; give every network to `tapnet run --network`"
                .into()
        )
    );
    assert_eq!(
        api(r.d().rootless_interfaces("web").unwrap_err()),
        (
            400,
            "sandbox web is not rootless: the daemon made its interfaces".into()
        )
    );
    assert_eq!(
        api(r.d().adopt_taps("web", vec![], vec![], 100).unwrap_err()),
        (
            400,
            "sandbox web is not rootless: the daemon made its interfaces".into()
        )
    );
}

#[test]
fn sandboxes_whose_process_is_gone_are_reaped() {
    let r = rig();
    r.p().start_process(100);
    r.p().start_process(200);
    let ports = [PortMapping {
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_ports: Some((8080, 8080)),
        container_port: 80,
        proto: Proto::Tcp,
    }];
    let a = r
        .d()
        .create_rootless_sandbox(Some("a".into()), None, attach(&["pets"]), &ports, 100)
        .unwrap();
    // Published at once, toward its address (the relay reaches it once the TAP is in).
    assert_eq!(r.p().published(&a.id).len(), 1);
    r.p().end_process(100);
    // The next rootless creation sweeps it: name, address and port are free again.
    let b = r
        .d()
        .create_rootless_sandbox(Some("a".into()), None, attach(&["pets"]), &ports, 200)
        .unwrap();
    assert_eq!(r.d().sandboxes().len(), 1);
    assert_eq!(r.endpoints("a")[0].0.ipv4, Some(ip("10.1.0.2")));
    assert_eq!(b.ports.len(), 1);
    // A reused PID is not the same process.
    r.p().end_process(200);
    r.p().start_process(200);
    r.p().start_process(300);
    r.d()
        .create_rootless_sandbox(Some("c".into()), None, attach(&["pets"]), &[], 300)
        .unwrap();
    // By name: `sandbox("a")` would also find a sandbox whose id starts with `a`.
    assert!(r.d().sandboxes().iter().all(|(s, _)| s.name != "a"));
}

/// A rootless sandbox `name` owned by `pid`, publishing `127.0.0.1:port` to port 80.
fn rootless_publishing(r: &Rig, name: &str, pid: u32, port: u16) -> SandboxRecord {
    let ports = [PortMapping {
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_ports: Some((port, port)),
        container_port: 80,
        proto: Proto::Tcp,
    }];
    r.d()
        .create_rootless_sandbox(Some(name.into()), None, attach(&["pets"]), &ports, pid)
        .unwrap()
}

#[test]
fn a_reap_pass_removes_sandboxes_whose_process_exited() {
    let r = rig();
    r.p().start_process(100);
    r.p().start_process(101);
    let a = rootless_publishing(&r, "web", 100, 8080);
    rootless_publishing(&r, "sql", 101, 8081);
    assert_eq!(r.endpoints("web")[0].0.ipv4, Some(ip("10.1.0.2")));
    // A pass with every process alive removes nothing.
    assert_eq!(r.d().reap_rootless_now(), 0);
    r.p().end_process(100);
    // Without waiting for another rootless sandbox or a restart.
    assert_eq!(r.d().reap_rootless_now(), 1);
    assert!(r.d().sandbox("web").is_err());
    assert!(r.p().published(&a.id).is_empty(), "its port is closed");
    assert!(r.d().sandbox("sql").is_ok());
    assert_eq!(r.d().stats().rootless_reaped, 1);
    // Its address and host port are free again: the next sandbox takes both.
    r.p().start_process(102);
    rootless_publishing(&r, "new", 102, 8080);
    assert_eq!(r.endpoints("new")[0].0.ipv4, Some(ip("10.1.0.2")));
}

#[test]
fn the_reaper_thread_removes_them_within_its_interval() {
    let dir = std::env::temp_dir().join(format!("tapnet-reaper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let p = Arc::new(MemoryPlumbing::new().rootless());
    let d = Arc::new(open(&dir, &p));
    let reaper = crate::daemon::core::start_rootless_reaper(&d, Duration::from_millis(20))
        .expect("reaper thread");
    p.start_process(100);
    d.create_rootless_sandbox(Some("web".into()), None, attach(&["bridge"]), &[], 100)
        .unwrap();
    p.end_process(100);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stats().rootless_reaped == 0 {
        assert!(Instant::now() < deadline, "not reaped within 10 s");
        std::thread::yield_now();
    }
    assert!(d.sandbox("web").is_err());
    // Dropping the reaper stops its thread; the daemon is then the test's alone.
    drop(reaper);
    assert_eq!(Arc::strong_count(&d), 1);
}

/// TAPs a rootless sandbox's process sends are bound like the daemon's own.
#[test]
fn adopted_taps_are_bound_to_their_mac_and_address() {
    let r = rig();
    r.p().start_process(100);
    rootless(&r, "job", 100).unwrap();
    let fds = vec![r.p().tap("eth0").unwrap(), r.p().tap("eth1").unwrap()];
    r.d()
        .adopt_taps("job", vec!["eth0".into(), "eth1".into()], fds, 100)
        .unwrap();
    for (e, _) in r.endpoints("job") {
        let b = r.p().binding(&e.id).expect("bound");
        assert_eq!(b.mac.to_string(), e.mac);
        assert_eq!(b.addrs, Some(vec![std::net::IpAddr::V4(e.ipv4.unwrap())]));
    }
}
