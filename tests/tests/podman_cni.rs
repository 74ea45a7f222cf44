//! Real podman containers on tapnet networks through the CNI plugin: a `tapnet daemon`
//! of the test's, podman on a private configuration (`tapnet_tests::containers::Podman`,
//! CNI backend) whose plugin directory holds `tapnet` (a link to the binary) and whose
//! configuration directory a conflist per tapnet network. Two containers on one network
//! ping and talk TCP; one on another network cannot reach them; a `tapnet run` sandbox
//! on the same network reaches them; tapnet shows the containers under their names;
//! `podman network connect` and `disconnect` add and remove a running container's
//! attachment to another network; `podman rm -f` takes them out of tapnet. (The plugin's CNI conventions, ADD twice,
//! DEL twice, DEL of an unknown container, are `ctl/tests/e2e_cni.rs`'s.)
//!
//! Root only (`#[ignore = "needs root"]`); without podman it says so and passes, but
//! fails under CI, which installs it.

use std::net::Ipv4Addr;

use serde_json::json;
use tapnet_tests::containers::{Podman, TapnetDaemon, podman_bin};
use tapnet_tests::multihost::{root_or_skip, tapnet_bin};

const IMAGE: &str = "tapnet-busybox:cni";

/// A server that answers every TCP connection on `port` with `text`, and ends at once on
/// SIGTERM.
fn server(port: u16, text: &str) -> String {
    format!("trap 'exit 0' TERM; while :; do echo {text} | nc -l -p {port} & wait $!; done")
}

fn have_podman(test: &str) -> bool {
    if podman_bin().exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs podman, which CI installs"
    );
    eprintln!("{test}: skipped, podman is not installed");
    false
}

/// Write the conflist of tapnet network `name` for podman, talking to `tapnet`.
fn conflist(p: &Podman, tapnet: &TapnetDaemon, name: &str) {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{ "type": "tapnet", "socket": tapnet.socket() }],
    });
    std::fs::write(
        p.cni_conf_dir().join(format!("{name}.conflist")),
        conf.to_string(),
    )
    .unwrap();
}

fn ip_of(p: &Podman, container: &str, net: &str) -> Ipv4Addr {
    let f = format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}");
    let out = p.podman_ok(&["inspect", "-f", &f, container]).unwrap();
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{container}'s address on {net}: {out:?}: {e}"))
}

#[test]
#[ignore = "needs root"]
fn podman_containers_on_tapnet_networks() {
    let test = "podman_containers_on_tapnet_networks";
    if !root_or_skip(test) || !have_podman(test) {
        return;
    }
    let tapnet = TapnetDaemon::start("cni", false);
    tapnet.ok(&["network", "create", "--subnet", "10.203.0.0/24", "pets"]);
    tapnet.ok(&["network", "create", "--subnet", "10.204.0.0/24", "other"]);
    let p = Podman::new("cni").expect("podman");
    std::os::unix::fs::symlink(tapnet_bin(), p.cni_bin_dir().join("tapnet")).unwrap();
    conflist(&p, &tapnet, "pets");
    conflist(&p, &tapnet, "other");
    p.import(IMAGE).expect("image imports");
    let nets = p.podman_ok(&["network", "ls"]).unwrap();
    assert!(nets.contains("pets") && nets.contains("other"), "{nets}");

    p.podman_ok(&[
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
    .unwrap_or_else(|e| panic!("podman run: {e}\n{}", tapnet.log()));
    let db = ip_of(&p, "db", "pets");
    assert_eq!(db.octets()[..3], [10, 203, 0]);
    // tapnet shows the container under its name.
    let inspect = tapnet.ok(&["network", "inspect", "pets"]);
    assert!(
        inspect.contains("\"db\"") && inspect.contains(&db.to_string()),
        "{inspect}"
    );

    // Another container on pets: ping and TCP; the embedded DNS at the gateway answers
    // db's name.
    let out = p
        .podman_ok(&[
            "run",
            "--rm",
            "--network",
            "pets",
            IMAGE,
            "sh",
            "-c",
            &format!("ping -c2 -W2 {db} && nc {db} 7000 </dev/null && nslookup db 10.203.0.1"),
        ])
        .unwrap();
    assert!(
        out.contains("2 packets received") && out.contains("hello-from-db"),
        "{out}"
    );
    assert!(out.contains(&db.to_string()), "db by name: {out}");
    // One on other does not reach it.
    let o = p.podman(&[
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
    // A tapnet sandbox on the same network does.
    let o = tapnet.run(&[
        "run",
        "--network",
        "pets",
        "--",
        "busybox",
        "sh",
        "-c",
        &format!("busybox nc {db} 7000 </dev/null"),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("hello-from-db"),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // podman network connect on the running container: a second attachment (eth1) on
    // other, which other's containers reach; disconnect takes it out of tapnet.
    p.podman_ok(&["network", "connect", "other", "db"])
        .unwrap_or_else(|e| panic!("podman network connect: {e}\n{}", tapnet.log()));
    let db_other = ip_of(&p, "db", "other");
    assert_eq!(db_other.octets()[..3], [10, 204, 0]);
    assert_eq!(tapnet.sandboxes().len(), 2, "{:?}", tapnet.sandboxes());
    let reach_other = |expect: bool| {
        let o = p.podman(&[
            "run",
            "--rm",
            "--network",
            "other",
            IMAGE,
            "sh",
            "-c",
            &format!("nc -w 2 {db_other} 7000 </dev/null"),
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            text.contains("hello-from-db"),
            expect,
            "db at {db_other} on other: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    reach_other(true);
    p.podman_ok(&["network", "disconnect", "other", "db"])
        .unwrap_or_else(|e| panic!("podman network disconnect: {e}\n{}", tapnet.log()));
    assert_eq!(tapnet.sandboxes().len(), 1, "{:?}", tapnet.sandboxes());
    let inspect = tapnet.ok(&["network", "inspect", "other"]);
    assert!(!inspect.contains(&db_other.to_string()), "{inspect}");
    reach_other(false);

    // podman rm -f: the attachment goes (DEL), and its address is free again.
    p.podman_ok(&["rm", "-f", "db"]).unwrap();
    assert!(tapnet.sandboxes().is_empty(), "{:?}", tapnet.sandboxes());
    let inspect = tapnet.ok(&["network", "inspect", "pets"]);
    assert!(!inspect.contains(&db.to_string()), "{inspect}");
}
