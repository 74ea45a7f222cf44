//! `tapnet node ls|inspect|rm|promote|demote`, as `docker node`: Docker's columns, its
//! `--pretty` layout and its texts.

use anyhow::bail;
use tapnet_api::{Node, SystemInfo};

use crate::cli::args::{InspectArgs, NodeCmd, NodeInspectArgs, NodeLsArgs, NodeRmArgs};
use crate::cli::client::{Client, ClientError, path_segment, query_value};
use crate::cli::format::{self, go_time, natural_cmp};
use crate::cli::network::{filters_json, inspect_objects};

pub(crate) fn run(client: &Client, cmd: NodeCmd) -> anyhow::Result<u8> {
    match cmd {
        NodeCmd::Ls(a) => ls(client, &a),
        NodeCmd::Inspect(a) => inspect(client, a),
        NodeCmd::Rm(a) => rm(client, &a),
        NodeCmd::Promote(a) => set_role(client, &a.names, "manager"),
        NodeCmd::Demote(a) => set_role(client, &a.names, "worker"),
    }
}

/// docker's `PrettyPrint`: the first letter upper case, the rest lower case.
fn pretty(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// docker's `node.Reference`: `self` is this node's ID from `/info`.
fn reference(client: &Client, name: &str) -> anyhow::Result<String> {
    if name != "self" {
        return Ok(name.to_string());
    }
    let info: SystemInfo = client.block_on(client.get("/info"))?;
    if info.swarm.node_id.is_empty() {
        // The node list's error says why (not a manager, not in a swarm).
        client.block_on(client.get::<Vec<Node>>("/nodes"))?;
        bail!("node ID not found in /info");
    }
    Ok(info.swarm.node_id)
}

/// Columns of `docker node ls`.
const LS_HEADER: [&str; 6] = [
    "ID",
    "HOSTNAME",
    "STATUS",
    "AVAILABILITY",
    "MANAGER STATUS",
    "ENGINE VERSION",
];

/// One row of `node ls`: the ID marked `*` on this node, the state, availability and
/// reachability as docker capitalises them (a leader says `Leader`).
pub(crate) fn ls_row(n: &Node, self_id: &str) -> Vec<String> {
    let mark = if n.id == self_id { "*" } else { " " };
    let manager = match &n.manager_status {
        Some(m) if m.leader => "Leader".to_string(),
        Some(m) => pretty(&m.reachability),
        None => String::new(),
    };
    vec![
        format!("{} {mark}", n.id),
        n.description.hostname.clone(),
        pretty(&n.status.state),
        pretty(&n.spec.availability),
        manager,
        n.description.engine.engine_version.clone(),
    ]
}

/// The `node ls` listing, nodes in natural order of their host names.
pub(crate) fn ls_text(nodes: &mut [Node], self_id: &str, quiet: bool) -> String {
    nodes.sort_by(|a, b| natural_cmp(&a.description.hostname, &b.description.hostname));
    if quiet {
        return nodes.iter().map(|n| format!("{}\n", n.id)).collect();
    }
    let rows: Vec<Vec<String>> = nodes.iter().map(|n| ls_row(n, self_id)).collect();
    format::table(&LS_HEADER, &rows)
}

fn ls(client: &Client, a: &NodeLsArgs) -> anyhow::Result<u8> {
    let path = match filters_json(&a.filter)? {
        Some(f) => format!("/nodes?filters={}", query_value(&f)),
        None => "/nodes".to_string(),
    };
    let mut nodes: Vec<Node> = client.block_on(client.get(&path))?;
    let self_id = if a.quiet {
        String::new()
    } else {
        let info: SystemInfo = client.block_on(client.get("/info"))?;
        info.swarm.node_id
    };
    print!("{}", ls_text(&mut nodes, &self_id, a.quiet));
    Ok(0)
}

fn inspect(client: &Client, a: NodeInspectArgs) -> anyhow::Result<u8> {
    let names = a
        .names
        .iter()
        .map(|n| reference(client, n))
        .collect::<anyhow::Result<Vec<String>>>()?;
    if !a.pretty {
        let args = InspectArgs {
            format: a.format,
            names,
        };
        return inspect_objects(client, "nodes", &args);
    }
    let mut errors = Vec::new();
    let mut texts = Vec::new();
    for name in &names {
        let path = format!("/nodes/{}", path_segment(name));
        match client.block_on(client.get::<Node>(&path)) {
            Ok(n) => texts.push(pretty_text(&n)),
            Err(e @ ClientError::Daemon { .. }) => errors.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    print!("{}", texts.concat());
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(u8::from(!errors.is_empty()))
}

/// docker's `units.BytesSize`: binary units, four significant digits (`7.704GiB`).
pub(crate) fn bytes_size(n: i64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut v = n.max(0) as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    let int_digits = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as usize) + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// `node inspect --pretty`: docker's template, tabs and all.
pub(crate) fn pretty_text(n: &Node) -> String {
    let mut out = String::new();
    let mut put = |s: &str| out.push_str(s);
    let labels = |put: &mut dyn FnMut(&str), m: &std::collections::BTreeMap<String, String>| {
        for (k, v) in m {
            if v.is_empty() {
                put(&format!("\n - {k}"));
            } else {
                put(&format!("\n - {k}={v}"));
            }
        }
    };
    put(&format!("ID:\t\t\t{}", n.id));
    if !n.spec.name.is_empty() {
        put(&format!("\nName:\t\t\t{}", n.spec.name));
    }
    if !n.spec.labels.is_empty() {
        put("\nLabels:");
        labels(&mut put, &n.spec.labels);
    }
    put(&format!(
        "\nHostname:              \t{}",
        n.description.hostname
    ));
    put(&format!(
        "\nJoined at:             \t{}",
        pretty(&go_time(&zero_time(&n.created_at)))
    ));
    put(&format!(
        "\nStatus:\n State:\t\t\t{}",
        pretty(&n.status.state)
    ));
    if !n.status.message.is_empty() {
        put(&format!(
            "\n Message:              \t{}",
            pretty(&n.status.message)
        ));
    }
    put(&format!(
        "\n Availability:         \t{}",
        pretty(&n.spec.availability)
    ));
    if !n.status.addr.is_empty() {
        put(&format!("\n Address:\t\t{}", n.status.addr));
    }
    if let Some(m) = &n.manager_status {
        put(&format!(
            "\nManager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n Leader:\t\t{}",
            m.addr,
            pretty(&m.reachability),
            if m.leader { "Yes" } else { "No" }
        ));
    }
    let p = &n.description.platform;
    put(&format!(
        "\nPlatform:\n Operating System:\t{}\n Architecture:\t\t{}",
        p.os, p.architecture
    ));
    let r = &n.description.resources;
    let memory = if r.memory_bytes == 0 {
        String::new()
    } else {
        bytes_size(r.memory_bytes)
    };
    put(&format!(
        "\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{memory}",
        r.nano_cpus / 1_000_000_000
    ));
    put(&format!(
        "\nEngine Version:\t\t{}",
        n.description.engine.engine_version
    ));
    if !n.description.engine.labels.is_empty() {
        put("\nEngine Labels:");
        labels(&mut put, &n.description.engine.labels);
    }
    out.push('\n');
    out
}

/// An unset time is Go's zero time, as docker shows it.
fn zero_time(t: &str) -> String {
    if t.is_empty() {
        tapnet_api::ZERO_TIME.to_string()
    } else {
        t.to_string()
    }
}

fn rm(client: &Client, a: &NodeRmArgs) -> anyhow::Result<u8> {
    let mut errors = Vec::new();
    for name in &a.names {
        let path = format!("/nodes/{}?force={}", path_segment(name), a.force);
        match client.block_on(client.delete(&path)) {
            Ok(()) => println!("{name}"),
            Err(e @ ClientError::Daemon { .. }) => errors.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(u8::from(!errors.is_empty()))
}

/// What `promote` (`role` manager) or `demote` (worker) says of `name`: `Ok` once
/// changed, `Err` if it already had the role (and nothing is sent).
pub(crate) fn role_text(name: &str, role: &str, had: &str) -> Result<String, String> {
    match (role, had == role) {
        ("manager", true) => Err(format!("Node {name} is already a manager.")),
        (_, true) => Err(format!("Node {name} is already a worker.")),
        ("manager", false) => Ok(format!("Node {name} promoted to a manager in the swarm.")),
        (_, false) => Ok(format!("Manager {name} demoted in the swarm.")),
    }
}

/// docker's `updateNodes`: read each node, set its role, send the spec at the version
/// read; the first error stops.
fn set_role(client: &Client, names: &[String], role: &str) -> anyhow::Result<u8> {
    for name in names {
        let node: Node = client.block_on(client.get(&format!("/nodes/{}", path_segment(name))))?;
        match role_text(name, role, &node.spec.role) {
            Err(already) => println!("{already}"),
            Ok(done) => {
                let mut spec = node.spec.clone();
                spec.role = role.to_string();
                let path = format!(
                    "/nodes/{}/update?version={}",
                    path_segment(&node.id),
                    node.version.index
                );
                client.block_on(client.post_unit(&path, &spec))?;
                println!("{done}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapnet_api::ManagerStatus;

    fn node(id: &str, host: &str, manager: Option<(bool, &str)>) -> Node {
        let mut n = Node {
            id: id.into(),
            manager_status: manager.map(|(leader, r)| ManagerStatus {
                leader,
                reachability: r.into(),
                addr: "10.0.0.1:2377".into(),
            }),
            ..Node::default()
        };
        n.description.hostname = host.into();
        n.description.engine.engine_version = "0.1.0".into();
        n.status.state = "ready".into();
        n.spec.availability = "active".into();
        n.spec.role = if manager.is_some() {
            "manager"
        } else {
            "worker"
        }
        .into();
        n
    }

    #[test]
    fn ls_as_docker_prints_it() {
        let mut nodes = vec![
            node("w2xxxxxxxxxxxxxxxxxxxxxxx", "node10", None),
            node(
                "m1xxxxxxxxxxxxxxxxxxxxxxx",
                "node1",
                Some((true, "reachable")),
            ),
            node(
                "m2xxxxxxxxxxxxxxxxxxxxxxx",
                "node2",
                Some((false, "unreachable")),
            ),
        ];
        let t = ls_text(&mut nodes, "m1xxxxxxxxxxxxxxxxxxxxxxx", false);
        assert_eq!(
            t,
            "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
             m1xxxxxxxxxxxxxxxxxxxxxxx *   node1      Ready     Active         Leader           0.1.0\n\
             m2xxxxxxxxxxxxxxxxxxxxxxx     node2      Ready     Active         Unreachable      0.1.0\n\
             w2xxxxxxxxxxxxxxxxxxxxxxx     node10     Ready     Active                          0.1.0\n"
        );
        let q = ls_text(&mut nodes, "", true);
        assert_eq!(
            q,
            "m1xxxxxxxxxxxxxxxxxxxxxxx\nm2xxxxxxxxxxxxxxxxxxxxxxx\nw2xxxxxxxxxxxxxxxxxxxxxxx\n"
        );
    }

    #[test]
    fn pretty_inspect_layout() {
        let mut n = node("m1", "node1", Some((true, "reachable")));
        n.created_at = "2026-01-01T00:00:01.5Z".into();
        n.status.addr = "10.0.0.1".into();
        n.description.platform.os = "linux".into();
        n.description.platform.architecture = "x86_64".into();
        n.description.resources.nano_cpus = 4_000_000_000;
        n.description.resources.memory_bytes = 8_271_892_480;
        assert_eq!(
            pretty_text(&n),
            "ID:\t\t\tm1\n\
             Hostname:              \tnode1\n\
             Joined at:             \t2026-01-01 00:00:01.5 +0000 utc\n\
             Status:\n \
             State:\t\t\tReady\n \
             Availability:         \tActive\n \
             Address:\t\t10.0.0.1\n\
             Manager Status:\n \
             Address:\t\t10.0.0.1:2377\n \
             Raft Status:\t\tReachable\n \
             Leader:\t\tYes\n\
             Platform:\n \
             Operating System:\tlinux\n \
             Architecture:\t\tx86_64\n\
             Resources:\n \
             CPUs:\t\t\t4\n \
             Memory:\t\t7.704GiB\n\
             Engine Version:\t\t0.1.0\n"
        );
        let mut w = node("w1", "node2", None);
        w.spec.labels.insert("zone".into(), "a".into());
        w.spec.labels.insert("ssd".into(), String::new());
        let t = pretty_text(&w);
        assert!(t.contains("\nLabels:\n - ssd\n - zone=a\nHostname:"), "{t}");
        assert!(
            t.contains("Joined at:             \t0001-01-01 00:00:00 +0000 utc\n"),
            "{t}"
        );
        assert!(t.contains(" Memory:\t\t\nEngine Version:"), "{t}");
        assert!(!t.contains("Manager Status"), "{t}");
    }

    #[test]
    fn sizes_as_docker_units() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1023), "1023B");
        assert_eq!(bytes_size(1024), "1KiB");
        assert_eq!(bytes_size(1536), "1.5KiB");
        assert_eq!(bytes_size(8_271_892_480), "7.704GiB");
    }

    #[test]
    fn promote_and_demote_texts() {
        assert_eq!(
            role_text("w1", "manager", "worker"),
            Ok("Node w1 promoted to a manager in the swarm.".into())
        );
        assert_eq!(
            role_text("m1", "worker", "manager"),
            Ok("Manager m1 demoted in the swarm.".into())
        );
        assert_eq!(
            role_text("m1", "manager", "manager"),
            Err("Node m1 is already a manager.".into())
        );
        assert_eq!(
            role_text("w1", "worker", "worker"),
            Err("Node w1 is already a worker.".into())
        );
    }
}
