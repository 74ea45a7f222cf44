//! End to end: the `tapnet` binary as a CNI plugin, run the way a container runtime
//! runs it (`CNI_*` in the environment, the plugin configuration on stdin, the result
//! or error object on stdout), against a real daemon, into network namespaces the test
//! makes itself as a runtime would (`ip netns add`).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{CMD_LIMIT, Daemon, addrs, in_ns, in_ns_ok, links, output_within};
use serde_json::{Value, json};
use tapnet_engine::sys::netns::NetNs;

/// A runtime's network namespace (`ip netns add`), deleted on drop.
struct RuntimeNs {
    name: String,
}

impl RuntimeNs {
    fn new(tag: &str) -> RuntimeNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tncni-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let o = output_within(Command::new("ip").args(["netns", "add", &name]), CMD_LIMIT);
        assert!(o.status.success(), "ip netns add {name}: {o:?}");
        in_ns_ok(&name, &["ip", "link", "set", "lo", "up"]);
        RuntimeNs { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn delete(&self) {
        let _ = output_within(
            Command::new("ip").args(["netns", "delete", &self.name]),
            CMD_LIMIT,
        );
    }
}

impl Drop for RuntimeNs {
    fn drop(&mut self) {
        self.delete();
    }
}

/// One run of the plugin.
#[derive(Debug)]
struct Plugin {
    code: i32,
    out: String,
    err: String,
}

impl Plugin {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("plugin output is not JSON ({e}): {self:?}"))
    }

    fn ok(self) -> Plugin {
        assert_eq!(self.code, 0, "plugin failed: {}{}", self.out, self.err);
        self
    }

    /// It failed with a CNI error object of `code`.
    fn error(&self, code: u64) -> Value {
        assert_ne!(self.code, 0, "plugin succeeded, it must not: {self:?}");
        let e = self.json();
        assert_eq!(e["code"], json!(code), "{self:?}");
        assert!(e["msg"].is_string() && e["cniVersion"].is_string(), "{e}");
        e
    }
}

/// The test's runtime: a plugin configuration (as a conflist's one plugin, with the
/// runtime's `cniVersion` and `name`), and a place for stdin files.
struct Runtime {
    dir: PathBuf,
    socket: PathBuf,
}

impl Runtime {
    fn conf(&self, network: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": network,
            "type": "tapnet",
            "socket": self.socket,
        })
    }

    /// Run the plugin with `CNI_COMMAND=cmd`, the attachment's variables (those given)
    /// and `conf` on stdin.
    fn run(&self, cmd: &str, att: Option<(&str, &str, &str)>, conf: &Value) -> Plugin {
        static N: AtomicU32 = AtomicU32::new(0);
        let stdin = self
            .dir
            .join(format!("cni-stdin-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&stdin, conf.to_string()).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_tapnet"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", cmd)
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::from(std::fs::File::open(&stdin).unwrap()));
        if let Some((cid, netns, ifname)) = att {
            c.env("CNI_CONTAINERID", cid).env("CNI_IFNAME", ifname).env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAME=pod-{cid}"),
            );
            if !netns.is_empty() {
                c.env("CNI_NETNS", netns);
            }
        }
        let o = output_within(&mut c, CMD_LIMIT);
        let _ = std::fs::remove_file(&stdin);
        Plugin {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn add(&self, network: &str, cid: &str, ns: &RuntimeNs) -> Plugin {
        self.run("ADD", Some((cid, &ns.path(), "eth0")), &self.conf(network))
    }

    fn del(&self, network: &str, cid: &str, netns: &str) -> Plugin {
        self.run("DEL", Some((cid, netns, "eth0")), &self.conf(network))
    }

    fn check(&self, network: &str, cid: &str, ns: &RuntimeNs, prev: &Value) -> Plugin {
        let mut conf = self.conf(network);
        conf["prevResult"] = prev.clone();
        self.run("CHECK", Some((cid, &ns.path(), "eth0")), &conf)
    }
}

/// `msg` over connection `c`, to the first connection `listener` accepts, which
/// answers it reversed; checks the answer, returns the peer the listener saw.
fn reversed_through(listener: TcpListener, mut c: TcpStream, msg: &str) -> SocketAddr {
    let srv = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(&got).unwrap();
        peer
    });
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(msg.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    c.read_to_string(&mut back).unwrap();
    let peer = srv.join().unwrap();
    assert_eq!(back, msg.chars().rev().collect::<String>());
    peer
}

/// TCP from `client` to `server_ip:port` inside `server`, both ways, from this process.
fn tcp_echo(client: &RuntimeNs, server: &RuntimeNs, server_ip: &str) {
    let addr = (server_ip.parse::<Ipv4Addr>().unwrap(), 5301);
    let listener = NetNs::open(&server.name)
        .unwrap()
        .run(|| TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let c = NetNs::open(&client.name)
        .unwrap()
        .run(|| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {server_ip} from {}: {e}", client.name));
    reversed_through(listener, c, "tapnet over cni");
}

/// Whether a TCP connection from `client` to `ip` inside `server` reaches a listener
/// there within 2 s. (Whatever the connecting side sees: the network's gateway relays
/// connections to addresses off the network toward the host.)
fn tcp_reaches(client: &RuntimeNs, server: &RuntimeNs, ip: &str) -> bool {
    let addr = (ip.parse::<Ipv4Addr>().unwrap(), 5302);
    let listener = NetNs::open(&server.name)
        .unwrap()
        .run(|| TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let _ = NetNs::open(&client.name)
        .unwrap()
        .run(|| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    listener.accept().is_ok()
}

/// `ping` inside `ns`, if the host has one (`ping` or busybox's).
fn ping(ns: &RuntimeNs, ip: &str) -> Option<bool> {
    let has = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let cmd: &[&str] = if has("ping") {
        &["ping"]
    } else if has("busybox") {
        &["busybox", "ping"]
    } else {
        return None;
    };
    let mut args = cmd.to_vec();
    args.extend(["-c", "2", "-W", "2", ip]);
    Some(in_ns(&ns.name, &args).status.success())
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// The containers (sandbox names) `tapnet network inspect` shows on `net`.
fn on_network(d: &Daemon, net: &str) -> Vec<String> {
    let v = d.inspect("network", net);
    let mut names: Vec<String> = v["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|c| c["Name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
#[ignore = "needs root"]
fn the_plugin_attaches_containers_as_a_runtime_asks() {
    let mut d = Daemon::start("cni");
    let rt = Runtime {
        dir: d.dir.clone(),
        socket: d.socket.clone(),
    };
    d.ok(&["network", "create", "--subnet", "10.231.1.0/24", "cni-a"]);
    d.ok(&["network", "create", "--subnet", "10.231.2.0/24", "cni-b"]);
    let (ns1, ns2, ns3) = (
        RuntimeNs::new("one"),
        RuntimeNs::new("two"),
        RuntimeNs::new("three"),
    );

    // VERSION.
    let v = rt
        .run("VERSION", None, &json!({"cniVersion": "1.1.0"}))
        .ok()
        .json();
    assert_eq!(
        v,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );

    // ADD: the spec's result, and the interface as it says.
    let r1 = rt.add("cni-a", "c1", &ns1).ok().json();
    assert_eq!(
        r1,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:42:0a:e7:01:02", "sandbox": ns1.path()}],
            "ips": [{"address": "10.231.1.2/24", "gateway": "10.231.1.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.231.1.1"}],
            "dns": {"nameservers": ["10.231.1.1"]},
        })
    );
    assert_eq!(
        addrs(&ns1.name),
        vec![("eth0".into(), "10.231.1.2/24".into())]
    );
    let route = in_ns_ok(&ns1.name, &["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.231.1.1 dev eth0"), "{route}");
    let r2 = rt.add("cni-a", "c2", &ns2).ok().json();
    let r3 = rt.add("cni-b", "c3", &ns3).ok().json();
    let (ip1, ip2, ip3) = (ip_of(&r1), ip_of(&r2), ip_of(&r3));
    assert_eq!((ip2.as_str(), ip3.as_str()), ("10.231.1.3", "10.231.2.2"));
    // Named after the container (CNI_ARGS' K8S_POD_NAME), on the network.
    assert_eq!(on_network(&d, "cni-a"), vec!["pod-c1", "pod-c2"]);

    // Traffic on one network, none across networks.
    tcp_echo(&ns1, &ns2, &ip2);
    tcp_echo(&ns2, &ns1, &ip1);
    if let Some(ok) = ping(&ns1, &ip2) {
        assert!(ok, "{ip2} does not answer ping from {}", ns1.name);
        assert_eq!(ping(&ns1, &ip3), Some(false), "ping crosses networks");
    }
    assert!(tcp_reaches(&ns1, &ns2, &ip2));
    assert!(!tcp_reaches(&ns1, &ns3, &ip3), "TCP crosses networks");
    assert!(!tcp_reaches(&ns3, &ns1, &ip1), "TCP crosses networks");

    // CHECK with ADD's result: no output.
    let c = rt.check("cni-a", "c1", &ns1, &r1).ok();
    assert!(c.out.trim().is_empty(), "{c:?}");
    // CHECK finds a result that is not the attachment's.
    let mut wrong = r1.clone();
    wrong["ips"][0]["address"] = json!("10.231.1.99/24");
    rt.check("cni-a", "c1", &ns1, &wrong).error(102);

    // ADD twice fails cleanly: an error object, nothing changed.
    let again = rt.add("cni-a", "c1", &ns1);
    let e = again.error(101);
    assert!(
        e["details"].as_str().unwrap().contains("DEL it first"),
        "{e}"
    );
    assert_eq!(links(&ns1.name).len(), 2, "{:?}", links(&ns1.name));
    assert_eq!(
        addrs(&ns1.name),
        vec![("eth0".into(), "10.231.1.2/24".into())]
    );
    assert_eq!(on_network(&d, "cni-a"), vec!["pod-c1", "pod-c2"]);
    // An ADD without its variables, with a version the plugin does not speak, or to a
    // network that is not there.
    rt.run("ADD", Some(("c9", "", "eth0")), &rt.conf("cni-a"))
        .error(4);
    let mut old = rt.conf("cni-a");
    old["cniVersion"] = json!("0.3.1");
    rt.run("ADD", Some(("c9", &ns3.path(), "eth1")), &old)
        .error(1);
    rt.add("no-such-net", "c9", &ns3).error(7);

    // DEL, DEL again, DEL of a container never added: all succeed.
    for _ in 0..2 {
        let out = rt.del("cni-a", "c2", &ns2.path()).ok();
        assert!(out.out.trim().is_empty(), "{out:?}");
    }
    rt.del("cni-a", "never-added", "").ok();
    assert!(!links(&ns2.name).contains(&"eth0".to_string()));
    assert_eq!(on_network(&d, "cni-a"), vec!["pod-c1"]);
    let ins = d.inspect("network", "cni-a").to_string();
    assert!(!ins.contains(&format!("\"{ip2}/24\"")), "{ins}");
    // CHECK of what was deleted: container unknown.
    rt.check("cni-a", "c2", &ns2, &r2).error(3);
    // Its address is free again: the next container gets it.
    let r4 = rt.add("cni-a", "c4", &ns2).ok().json();
    assert_eq!(ip_of(&r4), ip2);
    tcp_echo(&ns1, &ns2, &ip2);

    // STATUS and GC (1.1.0).
    let mut conf = rt.conf("cni-a");
    conf["cniVersion"] = json!("1.1.0");
    rt.run("STATUS", None, &conf).ok();
    conf["name"] = json!("no-such-net");
    rt.run("STATUS", None, &conf).error(50);
    let mut gc = rt.conf("cni-b");
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    rt.run("GC", None, &gc).ok();
    assert!(on_network(&d, "cni-b").is_empty());
    assert!(!links(&ns3.name).contains(&"eth0".to_string()));

    // A restart: the attachments are plugged again; one whose namespace went with its
    // container is removed.
    ns2.delete();
    d.restart();
    rt.check("cni-a", "c1", &ns1, &r1).ok();
    assert_eq!(on_network(&d, "cni-a"), vec!["pod-c1"]);
    let r5 = rt.add("cni-b", "c5", &ns3).ok().json();
    assert_eq!(ip_of(&r5), ip3);
    // The daemon gone: the runtime is told to try again later.
    rt.del("cni-a", "c1", &ns1.path()).ok();
    rt.del("cni-b", "c5", &ns3.path()).ok();
    assert!(d.stop(Duration::from_secs(10)));
    rt.add("cni-a", "c1", &ns1).error(11);
    rt.run("STATUS", None, &conf).error(50);
}

/// A port on 127.0.0.1 that nothing holds now.
fn free_loopback_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One connection to 127.0.0.1:`host_port` from the host, answered by a listener on
/// port 8080 inside `ns` (every address there, on network `cni-p`): what it sent,
/// reversed.
fn through_published_port(ns: &RuntimeNs, host_port: u16) {
    let listener = NetNs::open(&ns.name)
        .unwrap()
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
        .unwrap()
        .unwrap();
    let addr = (Ipv4Addr::LOCALHOST, host_port).into();
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{host_port}: {e}"));
    let peer = reversed_through(listener, c, "published by cni");
    // A loopback client appears as the network's gateway, as with tapnet's own -p.
    assert_eq!(peer.ip().to_string(), "10.231.3.1", "{peer}");
}

#[test]
#[ignore = "needs root"]
fn port_mappings_are_published_while_the_attachment_lives() {
    let mut d = Daemon::start("cni-ports");
    let rt = Runtime {
        dir: d.dir.clone(),
        socket: d.socket.clone(),
    };
    d.ok(&["network", "create", "--subnet", "10.231.3.0/24", "cni-p"]);
    let (ns1, ns2) = (RuntimeNs::new("pa"), RuntimeNs::new("pb"));
    let port = free_loopback_port();
    let with_ports = |mappings: Value| {
        let mut conf = rt.conf("cni-p");
        conf["capabilities"] = json!({"portMappings": true});
        conf["runtimeConfig"] = json!({ "portMappings": mappings });
        conf
    };
    let web = with_ports(json!([
        {"hostPort": port, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}
    ]));
    let r1 = rt
        .run("ADD", Some(("p1", &ns1.path(), "eth0")), &web)
        .ok()
        .json();
    through_published_port(&ns1, port);
    // Shown as the container's published port.
    let sb = d.inspect("sandbox", "pod-p1");
    assert_eq!(
        sb["Ports"]["8080/tcp"],
        json!([{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]),
        "{sb}"
    );

    // The same host port for another container: an error object with Docker's text,
    // and no attachment made.
    let e = rt
        .run("ADD", Some(("p2", &ns2.path(), "eth0")), &web)
        .error(100);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("port is already allocated"),
        "{e}"
    );
    assert!(!links(&ns2.name).contains(&"eth0".to_string()));
    assert_eq!(on_network(&d, "cni-p"), vec!["pod-p1"]);
    // A mapping that is no port: code 7, naming it.
    let bad = with_ports(json!([{"hostPort": 0, "containerPort": 8080}]));
    let e = rt
        .run("ADD", Some(("p3", &ns2.path(), "eth0")), &bad)
        .error(7);
    assert!(e["details"].as_str().unwrap().contains("hostPort"), "{e}");
    assert_eq!(on_network(&d, "cni-p"), vec!["pod-p1"]);

    // Bound again when the daemon restarts (CHECK looks too).
    d.restart();
    through_published_port(&ns1, port);
    let mut check = with_ports(json!([]));
    check["prevResult"] = r1;
    rt.run("CHECK", Some(("p1", &ns1.path(), "eth0")), &check)
        .ok();

    // DEL closes it: the host port is free.
    rt.del("cni-p", "p1", &ns1.path()).ok();
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("127.0.0.1:{port} still held after DEL: {e}"));
}
