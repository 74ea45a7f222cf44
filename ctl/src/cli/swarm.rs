//! `tapnet swarm init|join|join-token|leave`, as `docker swarm`: Docker's requests and
//! texts, with `tapnet swarm join` in the commands printed for other nodes to run.

use anyhow::bail;
use tapnet_api::{Node, Swarm, SwarmInfo, SwarmInitRequest, SwarmJoinRequest, SystemInfo};

use crate::cli::args::{JoinTokenArgs, SwarmCmd, SwarmInitArgs, SwarmJoinArgs};
use crate::cli::client::{Client, path_segment};

/// The management port a listen address without one gets.
const DEFAULT_PORT: u16 = 2377;

pub(crate) fn run(client: &Client, cmd: SwarmCmd) -> anyhow::Result<u8> {
    match cmd {
        SwarmCmd::Init(a) => init(client, &a),
        SwarmCmd::Join(a) => join(client, &a),
        SwarmCmd::JoinToken(a) => join_token(client, &a),
        SwarmCmd::Leave(a) => {
            let path = format!("/swarm/leave?force={}", a.force);
            client.block_on(client.post_unit(&path, &serde_json::json!({})))?;
            println!("Node left the swarm.");
            Ok(0)
        }
    }
}

/// A listen address as the docker CLI's `NodeAddrOption` completes it: the host
/// defaults to `0.0.0.0` and the port to 2377 (`eth0` → `eth0:2377`, `:4000` →
/// `0.0.0.0:4000`); a bare IPv6 address gets brackets.
pub(crate) fn listen_addr(value: &str) -> anyhow::Result<String> {
    let v = value.trim();
    let v = v.strip_prefix("tcp://").unwrap_or(v);
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let Some((h, tail)) = rest.split_once(']') else {
            bail!("invalid listen address {value:?}: missing ']'");
        };
        let port = match tail.strip_prefix(':') {
            Some(p) => p,
            None if tail.is_empty() => "",
            None => bail!("invalid listen address {value:?}"),
        };
        (format!("[{h}]"), port)
    } else if v.matches(':').count() > 1 {
        (format!("[{v}]"), "")
    } else {
        match v.split_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (v.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "0.0.0.0".to_string()
    } else {
        host
    };
    let port = if port.is_empty() {
        DEFAULT_PORT
    } else {
        port.parse()
            .map_err(|_| anyhow::anyhow!("invalid port {port:?} in listen address {value:?}"))?
    };
    Ok(format!("{host}:{port}"))
}

/// The request `docker swarm init` would send for these flags.
pub(crate) fn init_request(a: &SwarmInitArgs) -> anyhow::Result<SwarmInitRequest> {
    Ok(SwarmInitRequest {
        listen_addr: listen_addr(&a.listen_addr)?,
        advertise_addr: a.advertise_addr.clone().unwrap_or_default(),
        data_path_addr: a.data_path_addr.clone().unwrap_or_default(),
        data_path_port: a.data_path_port,
        force_new_cluster: a.force_new_cluster,
        availability: a.availability.clone(),
        ..SwarmInitRequest::default()
    })
}

/// The request `docker swarm join` would send for these flags.
pub(crate) fn join_request(a: &SwarmJoinArgs) -> anyhow::Result<SwarmJoinRequest> {
    Ok(SwarmJoinRequest {
        listen_addr: listen_addr(&a.listen_addr)?,
        advertise_addr: a.advertise_addr.clone().unwrap_or_default(),
        data_path_addr: a.data_path_addr.clone().unwrap_or_default(),
        remote_addrs: vec![a.remote.clone()],
        join_token: a.token.clone(),
        availability: a.availability.clone(),
    })
}

fn init(client: &Client, a: &SwarmInitArgs) -> anyhow::Result<u8> {
    let req = init_request(a)?;
    let id: String = client.block_on(client.post("/swarm/init", &req))?;
    print!("Swarm initialized: current node ({id}) is now a manager.\n\n");
    print_join_command(client, &id, true, false)?;
    println!(
        "To add a manager to this swarm, run 'tapnet swarm join-token manager' and follow the \
         instructions."
    );
    Ok(0)
}

fn join(client: &Client, a: &SwarmJoinArgs) -> anyhow::Result<u8> {
    let req = join_request(a)?;
    client.block_on(client.post_unit("/swarm/join", &req))?;
    let info: SystemInfo = client.block_on(client.get("/info"))?;
    println!("{}", joined(&info.swarm));
    Ok(0)
}

/// What `swarm join` says once joined: a manager has control available.
pub(crate) fn joined(info: &SwarmInfo) -> &'static str {
    if info.control_available {
        "This node joined a swarm as a manager."
    } else {
        "This node joined a swarm as a worker."
    }
}

fn join_token(client: &Client, a: &JoinTokenArgs) -> anyhow::Result<u8> {
    let (worker, manager) = match a.role.as_str() {
        "worker" => (true, false),
        "manager" => (false, true),
        other => bail!("unknown role {other}"),
    };
    let sw: Swarm = client.block_on(client.get("/swarm"))?;
    if a.quiet {
        let t = &sw.join_tokens;
        println!("{}", if worker { &t.worker } else { &t.manager });
        return Ok(0);
    }
    let info: SystemInfo = client.block_on(client.get("/info"))?;
    print_join_command(client, &info.swarm.node_id, worker, manager)?;
    Ok(0)
}

/// docker's `printJoinCommand`: the commands that join another node to this node's
/// swarm, when this node is a manager.
fn print_join_command(
    client: &Client,
    node_id: &str,
    worker: bool,
    manager: bool,
) -> anyhow::Result<()> {
    let node: Node = client.block_on(client.get(&format!("/nodes/{}", path_segment(node_id))))?;
    let sw: Swarm = client.block_on(client.get("/swarm"))?;
    if node.manager_status.is_none() {
        return Ok(());
    }
    let info: SystemInfo = client.block_on(client.get("/info"))?;
    let addr = manager_addr(&node, &info.swarm);
    print!("{}", join_commands(&sw, &addr, worker, manager));
    Ok(())
}

/// Where other nodes reach this manager: its `ManagerStatus.Addr` (as docker prints),
/// else its entry in `RemoteManagers`, else its node address on port 2377.
pub(crate) fn manager_addr(node: &Node, info: &SwarmInfo) -> String {
    if let Some(a) = node.manager_status.as_ref().filter(|m| !m.addr.is_empty()) {
        return a.addr.clone();
    }
    if let Some(p) = info
        .remote_managers
        .iter()
        .find(|p| p.node_id == node.id && !p.addr.is_empty())
    {
        return p.addr.clone();
    }
    format!("{}:{DEFAULT_PORT}", info.node_addr)
}

/// The text of `printJoinCommand` for the chosen tokens.
pub(crate) fn join_commands(sw: &Swarm, addr: &str, worker: bool, manager: bool) -> String {
    let mut out = String::new();
    let mut one = |who: &str, token: &str| {
        out.push_str(&format!(
            "To add a {who} to this swarm, run the following command:\n\n    \
             tapnet swarm join --token {token} {addr}\n\n"
        ));
    };
    if worker {
        one("worker", &sw.join_tokens.worker);
    }
    if manager {
        one("manager", &sw.join_tokens.manager);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapnet_api::{JoinTokens, ManagerStatus, Peer};

    #[test]
    fn listen_addresses_are_completed_as_docker_does() {
        for (given, want) in [
            ("0.0.0.0:2377", "0.0.0.0:2377"),
            ("10.0.0.2", "10.0.0.2:2377"),
            (":4000", "0.0.0.0:4000"),
            ("eth0", "eth0:2377"),
            ("tcp://10.0.0.2:2400", "10.0.0.2:2400"),
            ("[::1]:2400", "[::1]:2400"),
            ("[::1]", "[::1]:2377"),
            ("fd00::1", "[fd00::1]:2377"),
        ] {
            assert_eq!(listen_addr(given).unwrap(), want, "{given}");
        }
        assert!(listen_addr("10.0.0.2:x").is_err());
        assert!(listen_addr("[::1").is_err());
    }

    #[test]
    fn requests_carry_dockers_fields() {
        let a = SwarmInitArgs {
            advertise_addr: Some("10.0.0.1".into()),
            listen_addr: "10.0.0.1".into(),
            data_path_addr: None,
            data_path_port: 4790,
            force_new_cluster: false,
            availability: "active".into(),
        };
        let r = init_request(&a).unwrap();
        assert_eq!(
            (
                r.listen_addr.as_str(),
                r.advertise_addr.as_str(),
                r.data_path_port
            ),
            ("10.0.0.1:2377", "10.0.0.1", 4790)
        );
        let a = SwarmJoinArgs {
            token: "SWMTKN-1-x".into(),
            advertise_addr: None,
            listen_addr: "0.0.0.0:2377".into(),
            data_path_addr: None,
            availability: "active".into(),
            remote: "10.0.0.1:2377".into(),
        };
        let r = join_request(&a).unwrap();
        assert_eq!(r.remote_addrs, ["10.0.0.1:2377"]);
        assert_eq!(r.join_token, "SWMTKN-1-x");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["JoinToken"], "SWMTKN-1-x");
        assert_eq!(v["ListenAddr"], "0.0.0.0:2377");
    }

    #[test]
    fn join_texts() {
        let sw = Swarm {
            join_tokens: JoinTokens {
                worker: "SWMTKN-1-w".into(),
                manager: "SWMTKN-1-m".into(),
            },
            ..Swarm::default()
        };
        assert_eq!(
            join_commands(&sw, "10.0.0.1:2377", true, false),
            "To add a worker to this swarm, run the following command:\n\n    \
             tapnet swarm join --token SWMTKN-1-w 10.0.0.1:2377\n\n"
        );
        let both = join_commands(&sw, "a:1", true, true);
        assert!(both.contains("--token SWMTKN-1-m a:1\n\n"), "{both}");
        assert!(both.starts_with("To add a worker"), "{both}");
        let mut info = SwarmInfo {
            control_available: true,
            ..SwarmInfo::default()
        };
        assert_eq!(joined(&info), "This node joined a swarm as a manager.");
        info.control_available = false;
        assert_eq!(joined(&info), "This node joined a swarm as a worker.");
    }

    #[test]
    fn the_managers_address_comes_from_its_node_then_info() {
        let mut node = Node {
            id: "n1".into(),
            manager_status: Some(ManagerStatus {
                addr: "10.0.0.1:2377".into(),
                ..ManagerStatus::default()
            }),
            ..Node::default()
        };
        let mut info = SwarmInfo {
            node_id: "n1".into(),
            node_addr: "10.0.0.9".into(),
            ..SwarmInfo::default()
        };
        assert_eq!(manager_addr(&node, &info), "10.0.0.1:2377");
        node.manager_status = Some(ManagerStatus::default());
        assert_eq!(manager_addr(&node, &info), "10.0.0.9:2377");
        info.remote_managers.push(Peer {
            node_id: "n1".into(),
            addr: "10.0.0.5:2400".into(),
        });
        assert_eq!(manager_addr(&node, &info), "10.0.0.5:2400");
    }
}
