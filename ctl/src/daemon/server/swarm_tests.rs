//! The swarm and node routes and `GET /info` over a real Unix socket, with a fake
//! [`SwarmControl`] that records what it is asked, and without any swarm (503).

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tapnet_api::{
    JoinTokens, ManagerStatus, Node, NodeSpec, Swarm, SwarmInfo, SwarmInitRequest, SwarmJoinRequest,
};

use super::swarm::NOT_A_MANAGER;
use super::tests::{Server, header, msg};
use super::{ApiError, SwarmControl};

/// A swarm of two nodes, `m1` (this one, the leader) and `w1`, recording every call.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn all(&self) -> Vec<Node> {
        let mut m = Node {
            id: "m1aaaaaaaaaaaaaaaaaaaaaaa".into(),
            spec: NodeSpec {
                role: "manager".into(),
                availability: "active".into(),
                ..NodeSpec::default()
            },
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: "reachable".into(),
                addr: "10.0.0.1:2377".into(),
            }),
            ..Node::default()
        };
        m.description.hostname = "alpha".into();
        let mut w = Node {
            id: "w1bbbbbbbbbbbbbbbbbbbbbbb".into(),
            spec: NodeSpec {
                role: "worker".into(),
                availability: "active".into(),
                ..NodeSpec::default()
            },
            ..Node::default()
        };
        w.description.hostname = "beta".into();
        vec![m, w]
    }
}

impl SwarmControl for Fake {
    fn init(&self, req: SwarmInitRequest) -> Result<String, ApiError> {
        self.log(format!("init {} {}", req.listen_addr, req.data_path_port));
        Ok("m1aaaaaaaaaaaaaaaaaaaaaaa".into())
    }

    fn join(&self, req: SwarmJoinRequest) -> Result<(), ApiError> {
        self.log(format!("join {:?} {}", req.remote_addrs, req.join_token));
        if req.join_token.is_empty() {
            return Err(ApiError::bad_request("invalid join token"));
        }
        Ok(())
    }

    fn leave(&self, force: bool) -> Result<(), ApiError> {
        self.log(format!("leave {force}"));
        Ok(())
    }

    fn inspect(&self) -> Result<Swarm, ApiError> {
        let mut s = Swarm {
            join_tokens: JoinTokens {
                worker: "SWMTKN-1-w".into(),
                manager: "SWMTKN-1-m".into(),
            },
            ..Swarm::default()
        };
        s.cluster.id = "cluster1".into();
        s.cluster.data_path_port = 4789;
        Ok(s)
    }

    fn nodes(&self) -> Result<Vec<Node>, ApiError> {
        Ok(self.all())
    }

    fn node(&self, id: &str) -> Result<Node, ApiError> {
        let id = if id == "self" { "m1" } else { id };
        self.all()
            .into_iter()
            .find(|n| n.id.starts_with(id) || n.description.hostname == id)
            .ok_or_else(|| ApiError::not_found(format!("node {id} not found")))
    }

    fn node_remove(&self, id: &str, force: bool) -> Result<(), ApiError> {
        self.log(format!("rm {id} {force}"));
        Ok(())
    }

    fn node_update(&self, id: &str, spec: NodeSpec) -> Result<(), ApiError> {
        self.log(format!("update {id} {}", spec.role));
        Ok(())
    }

    fn info(&self) -> SwarmInfo {
        SwarmInfo {
            node_id: "m1aaaaaaaaaaaaaaaaaaaaaaa".into(),
            node_addr: "10.0.0.1".into(),
            local_node_state: "active".into(),
            control_available: true,
            nodes: 2,
            managers: 1,
            ..SwarmInfo::default()
        }
    }
}

fn with_fake() -> (Server, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let s = Server::start_swarm(Some(fake.clone()));
    (s, fake)
}

fn ping_swarm(s: &Server) -> String {
    let (status, h, _) = s.raw("GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    header(&h, "swarm").unwrap_or("<none>").to_string()
}

#[test]
fn without_a_swarm_the_routes_answer_503_and_info_says_inactive() {
    let s = Server::start_swarm(None);
    for (method, path, body) in [
        ("GET", "/swarm", None),
        ("GET", "/nodes", None),
        ("GET", "/v1.47/nodes/self", None),
        ("DELETE", "/nodes/x", None),
        (
            "POST",
            "/nodes/x/update?version=1",
            Some(json!({"Role": "manager"})),
        ),
        (
            "POST",
            "/swarm/init",
            Some(json!({"ListenAddr": "0.0.0.0:2377"})),
        ),
        ("POST", "/swarm/join", Some(json!({"JoinToken": "t"}))),
    ] {
        let (status, v) = s.json(method, path, body);
        assert_eq!(msg(status, &v), (503, NOT_A_MANAGER), "{method} {path}");
    }
    let (status, v) = s.json("POST", "/swarm/leave", None);
    assert_eq!(msg(status, &v), (503, "This node is not part of a swarm"));
    let (status, v) = s.json("GET", "/info", None);
    assert_eq!(status, 200);
    assert_eq!(v["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(v["Swarm"]["ControlAvailable"], false);
    assert_eq!(v["Swarm"]["NodeID"], "");
    assert_eq!(v["OSType"], "linux");
    assert!(v["Name"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
    assert!(v["NCPU"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(ping_swarm(&s), "inactive");
}

#[test]
fn init_join_and_leave() {
    let (s, fake) = with_fake();
    let (status, text) = s.call(
        "POST",
        "/v1.47/swarm/init",
        Some(r#"{"ListenAddr":"0.0.0.0:2377","DataPathPort":4790,"Spec":{"Raft":{}}}"#),
    );
    assert_eq!(
        (status, text.as_str()),
        (200, "\"m1aaaaaaaaaaaaaaaaaaaaaaa\"\n")
    );
    let (status, v) = s.json(
        "POST",
        "/swarm/join",
        Some(json!({"RemoteAddrs": ["10.0.0.1:2377"], "JoinToken": "SWMTKN-1-w"})),
    );
    assert_eq!((status, v), (200, Value::Null));
    let (status, v) = s.json("POST", "/swarm/join", Some(json!({"RemoteAddrs": null})));
    assert_eq!(msg(status, &v), (400, "invalid join token"));
    let (status, _) = s.json("POST", "/swarm/join", Some(json!(["not", "an", "object"])));
    assert_eq!(status, 400);
    assert_eq!(s.json("POST", "/swarm/leave?force=1", None).0, 200);
    assert_eq!(s.json("POST", "/swarm/leave", None).0, 200);
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [
            "init 0.0.0.0:2377 4790",
            "join [\"10.0.0.1:2377\"] SWMTKN-1-w",
            "join [] ",
            "leave true",
            "leave false",
        ]
    );
}

#[test]
fn swarm_inspect_and_info_have_dockers_shape() {
    let (s, _fake) = with_fake();
    let (status, v) = s.json("GET", "/swarm", None);
    assert_eq!(status, 200);
    assert_eq!(v["ID"], "cluster1");
    assert_eq!(v["DataPathPort"], 4789);
    assert_eq!(
        v["JoinTokens"],
        json!({"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"})
    );
    let (status, v) = s.json("GET", "/v1.44/info", None);
    assert_eq!(status, 200);
    assert_eq!(v["Swarm"]["NodeID"], "m1aaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(v["Swarm"]["ControlAvailable"], true);
    assert_eq!(v["Swarm"]["Nodes"], 2);
    assert_eq!(ping_swarm(&s), "active/manager");
}

#[test]
fn nodes_list_inspect_filter_remove_and_update() {
    let (s, fake) = with_fake();
    let (status, v) = s.json("GET", "/nodes", None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["m1aaaaaaaaaaaaaaaaaaaaaaa", "w1bbbbbbbbbbbbbbbbbbbbbbb"]
    );
    assert_eq!(v[0]["ManagerStatus"]["Leader"], true);
    assert!(v[1].get("ManagerStatus").is_none());
    let (status, v) = s.json(
        "GET",
        "/nodes?filters=%7B%22role%22%3A%7B%22worker%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Description"]["Hostname"], "beta");
    let (status, v) = s.json(
        "GET",
        "/nodes?filters=%7B%22role%22%3A%5B%22boss%22%5D%7D",
        None,
    );
    assert_eq!(msg(status, &v), (400, "Invalid role 'boss'"));
    let (status, v) = s.json(
        "GET",
        "/nodes?filters=%7B%22color%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(msg(status, &v), (400, "invalid filter 'color'"));

    let (status, v) = s.json("GET", "/nodes/self", None);
    assert_eq!((status, v["Spec"]["Role"].as_str()), (200, Some("manager")));
    let (status, v) = s.json("GET", "/nodes/nope", None);
    assert_eq!(msg(status, &v), (404, "node nope not found"));

    let (status, text) = s.call("DELETE", "/nodes/w1?force=true", None);
    assert_eq!((status, text.as_str()), (200, ""));
    assert_eq!(s.call("DELETE", "/v1.47/nodes/w1", None).0, 200);
    let (status, _) = s.json(
        "POST",
        "/nodes/w1/update?version=7",
        Some(json!({"Role": "manager", "Availability": "active", "Labels": null})),
    );
    assert_eq!(status, 200);
    let (status, v) = s.json("POST", "/nodes/w1/update", Some(json!({"Role": "manager"})));
    assert_eq!(
        msg(status, &v),
        (
            400,
            "invalid node version '': strconv.ParseUint: parsing \"\": invalid syntax"
        )
    );
    let (status, _) = s.json("POST", "/nodes/w1/update?version=x", Some(json!({})));
    assert_eq!(status, 400);
    assert_eq!(
        *fake.calls.lock().unwrap(),
        ["rm w1 true", "rm w1 false", "update w1 manager"]
    );
}

#[test]
fn docker_cli_drives_the_swarm_routes() {
    let Some(bin) = super::tests::find_docker() else {
        panic!("docker_cli_drives_the_swarm_routes needs the docker CLI on PATH");
    };
    let (s, fake) = with_fake();
    let config = s.dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let ok = |args: &[&str]| {
        let (code, out, err) = super::tests::docker(&bin, &s, &config, args);
        assert_eq!(code, 0, "docker {args:?}: {out}{err}");
        out
    };
    assert_eq!(
        ok(&["swarm", "init", "--advertise-addr", "10.0.0.1"]),
        "Swarm initialized: current node (m1aaaaaaaaaaaaaaaaaaaaaaa) is now a manager.\n\n\
         To add a worker to this swarm, run the following command:\n\n    \
         docker swarm join --token SWMTKN-1-w 10.0.0.1:2377\n\n\
         To add a manager to this swarm, run 'docker swarm join-token manager' and follow the \
         instructions.\n"
    );
    let out = ok(&["node", "ls"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(
            "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   \
             ENGINE VERSION"
        )
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("m1aaaaaaaaaaaaaaaaaaaaaaa *   alpha")),
        "{out}"
    );
    assert_eq!(
        ok(&["swarm", "join-token", "-q", "manager"]),
        "SWMTKN-1-m\n"
    );
    let out = ok(&["node", "inspect", "--pretty", "self"]);
    assert!(
        out.starts_with("ID:\t\t\tm1aaaaaaaaaaaaaaaaaaaaaaa\n"),
        "{out}"
    );
    assert!(out.contains("\n Leader:\t\tYes\n"), "{out}");
    let out = ok(&["node", "inspect", "self"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Spec"]["Role"], "manager");
    assert_eq!(
        ok(&["node", "promote", "w1"]),
        "Node w1 promoted to a manager in the swarm.\n"
    );
    assert_eq!(
        ok(&["node", "demote", "m1"]),
        "Manager m1 demoted in the swarm.\n"
    );
    assert_eq!(ok(&["node", "rm", "--force", "w1"]), "w1\n");
    assert_eq!(ok(&["swarm", "leave", "--force"]), "Node left the swarm.\n");
    assert_eq!(
        ok(&["swarm", "join", "--token", "SWMTKN-1-w", "10.0.0.1:2377"]),
        "This node joined a swarm as a manager.\n"
    );
    let out = ok(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ]);
    assert_eq!(out, "active true\n");
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [
            "init 0.0.0.0:2377 0",
            "update w1bbbbbbbbbbbbbbbbbbbbbbb manager",
            "update m1aaaaaaaaaaaaaaaaaaaaaaa worker",
            "rm w1 true",
            "leave true",
            "join [\"10.0.0.1:2377\"] SWMTKN-1-w",
        ]
    );

    // Without a swarm, docker's own error.
    let s = Server::start_swarm(None);
    let (code, _, err) = super::tests::docker(&bin, &s, &config, &["node", "ls"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!("Error response from daemon: {NOT_A_MANAGER}")
    );
}
