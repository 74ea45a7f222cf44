//! Real Docker containers on tapnet networks: a `tapnet daemon --docker-plugin` and a
//! private dockerd (`tapnet_tests::containers::Dockerd`) that finds the plugin through
//! a spec file of the test's own name. Containers on one tapnet network ping and talk
//! TCP by name; one on another network cannot reach them; a `tapnet run` sandbox on the
//! same network reaches them; `-p 127.0.0.1:PORT:CTRPORT` answers from the host;
//! connect and disconnect on a running container; tapnet's daemon restarted under
//! running containers; `docker rm -f`; dockerd restarted with a container on a tapnet
//! network. After each step tapnet's own view (sandboxes,
//! interfaces, addresses, ports) is checked against what Docker has.
//!
//! Root only (`#[ignore = "needs root"]`); without dockerd installed it says so and
//! passes, but fails under CI, which installs it.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapnet_tests::containers::{Dockerd, TapnetDaemon, busybox_image, dockerd_bin};
use tapnet_tests::multihost::root_or_skip;

const IMAGE: &str = "tapnet-busybox:plugin";
/// A server that answers every TCP connection on `port` with `text`, and ends at once on
/// SIGTERM.
fn server(port: u16, text: &str) -> String {
    // `wait` lets the trap run at once; a foreground nc would hold it back until the
    // next connection, and every stop would wait for Docker's timeout.
    format!("trap 'exit 0' TERM; while :; do echo {text} | nc -l -p {port} & wait $!; done")
}

/// Interfaces named `tn…` (Docker endpoints' TAPs before Docker moves them) in this
/// namespace.
fn host_taps() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("tn"))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a TCP connection to `addr` reads until the server closes, tried for up to 10 s.
fn read_from(addr: (Ipv4Addr, u16)) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing from {addr:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A new container on `pets` pings `db` and reads from it, by name (Docker's DNS).
fn pets_reach_db(d: &Dockerd, tapnet: &TapnetDaemon) {
    let out = d
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "pets",
            IMAGE,
            "sh",
            "-c",
            "ping -c2 -W2 db && nc db 7000 </dev/null",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", tapnet.log()));
    assert!(
        out.contains("2 packets received") && out.contains("hello-from-db"),
        "{out}"
    );
}

fn ip_of(d: &Dockerd, container: &str, net: &str) -> Ipv4Addr {
    let f = format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}");
    d.docker_ok(&["inspect", "-f", &f, container])
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{container}'s address on {net}: {e}"))
}

fn have_dockerd(test: &str) -> bool {
    if dockerd_bin().exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs dockerd, which CI installs"
    );
    eprintln!("{test}: skipped, dockerd is not installed");
    false
}

#[test]
#[ignore = "needs root"]
fn docker_containers_on_tapnet_networks() {
    let test = "docker_containers_on_tapnet_networks";
    if !root_or_skip(test) || !have_dockerd(test) {
        return;
    }
    let mut tapnet = TapnetDaemon::start("e2e", true);
    let plugin = format!("tapnet-e2e-{}", std::process::id());
    let _spec = Dockerd::plugin_spec(
        &plugin,
        &format!("unix://{}", tapnet.plugin_socket().display()),
    );
    let mut d = Dockerd::start("plugin").expect("dockerd starts");
    busybox_image(&d, IMAGE).expect("image imports");
    let create = |name: &str, subnet: &str| {
        d.docker_ok(&[
            "network",
            "create",
            "-d",
            &plugin,
            "--ipam-driver",
            &plugin,
            "--subnet",
            subnet,
            "-o",
            &format!("tapnet.name={name}"),
            name,
        ])
        .unwrap_or_else(|e| panic!("network create {name}: {e}\n{}", tapnet.log()))
    };
    let pets = create("pets", "10.201.0.0/24");
    create("other", "10.202.0.0/24");
    // One network, one id on both sides.
    let inspect: Value = serde_json::from_str(&tapnet.ok(&["network", "inspect", "pets"])).unwrap();
    assert_eq!(inspect[0]["Id"].as_str(), Some(pets.trim()));

    // Two containers on `pets`: ping and TCP by name (Docker's DNS), and a third on
    // `other` that reaches neither.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "pets",
        IMAGE,
        "sh",
        "-c",
        &server(7000, "hello-from-db"),
    ])
    .unwrap();
    let db = ip_of(&d, "db", "pets");
    assert_eq!(db.octets()[..3], [10, 201, 0]);
    pets_reach_db(&d, &tapnet);
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "other",
        IMAGE,
        "sh",
        "-c",
        &format!("ping -c2 -W1 {db}"),
    ]);
    assert!(
        !o.status.success(),
        "a container on another network reached db"
    );

    // A tapnet sandbox on the same network.
    let o = tapnet.run(&[
        "run",
        "--network",
        "pets",
        "--",
        "busybox",
        "sh",
        "-c",
        &format!("busybox ping -c1 -W2 {db} && busybox nc {db} 7000 </dev/null"),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("hello-from-db"),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // -p through the network: the host reaches the container.
    let port = free_port();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "pets",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        IMAGE,
        "sh",
        "-c",
        &server(8080, "hello-from-web"),
    ])
    .unwrap();
    assert!(read_from((Ipv4Addr::LOCALHOST, port)).contains("hello-from-web"));

    // Connect and disconnect a running container.
    d.docker_ok(&["network", "connect", "other", "web"])
        .unwrap();
    let addrs = d.docker_ok(&["exec", "web", "ip", "-4", "addr"]).unwrap();
    assert!(addrs.contains("10.202.0."), "{addrs}");
    assert!(read_from((Ipv4Addr::LOCALHOST, port)).contains("hello-from-web"));
    d.docker_ok(&["network", "disconnect", "other", "web"])
        .unwrap();
    let addrs = d.docker_ok(&["exec", "web", "ip", "-4", "addr"]).unwrap();
    assert!(!addrs.contains("10.202.0."), "{addrs}");
    // tapnet sees db and web, each with one endpoint on pets, and no TAP is left in the
    // host's namespace (Docker moved them all).
    let names = |t: &TapnetDaemon| -> Vec<String> {
        t.sandboxes()
            .iter()
            .map(|s| s["Name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&tapnet).len(), 2, "{:?}", tapnet.sandboxes());
    assert!(host_taps().is_empty(), "{:?}", host_taps());

    // tapnet's daemon restarted under running containers: it finds their interfaces
    // in the containers again, so db answers a new container by name and web's
    // published port answers from the host, with nothing left over on the host.
    tapnet.restart();
    pets_reach_db(&d, &tapnet);
    assert!(read_from((Ipv4Addr::LOCALHOST, port)).contains("hello-from-web"));
    assert_eq!(names(&tapnet).len(), 2, "{:?}", tapnet.sandboxes());
    assert!(host_taps().is_empty(), "{:?}", host_taps());

    // docker rm -f: its endpoint, address and port go.
    let web = ip_of(&d, "web", "pets");
    d.docker_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(names(&tapnet).len(), 1);
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the published port is free again");
    let net = tapnet.ok(&["network", "inspect", "pets"]);
    assert!(!net.contains(&web.to_string()), "{net}");

    // dockerd restarted with db on pets: Docker stops it (its endpoint goes), and it
    // comes back on the network when started.
    d.restart().expect("dockerd restarts");
    assert!(names(&tapnet).is_empty(), "{:?}", tapnet.sandboxes());
    d.docker_ok(&["start", "db"]).unwrap();
    let out = d
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "pets",
            IMAGE,
            "sh",
            "-c",
            "nc db 7000 </dev/null",
        ])
        .unwrap();
    assert!(out.contains("hello-from-db"), "{out}");

    // Everything removed through Docker leaves nothing in tapnet: no sandbox, no
    // network, no TAP, and the subnets are free for tapnet's own networks.
    d.docker_ok(&["rm", "-f", "db"]).unwrap();
    d.docker_ok(&["network", "rm", "pets", "other"]).unwrap();
    assert!(tapnet.sandboxes().is_empty());
    let nets = tapnet.ok(&["network", "ls"]);
    assert!(!nets.contains("pets") && !nets.contains("other"), "{nets}");
    assert!(host_taps().is_empty(), "{:?}", host_taps());
    tapnet.ok(&["network", "create", "--subnet", "10.201.0.0/24", "again"]);
    tapnet.ok(&["network", "rm", "again"]);
    drop(d);
}
