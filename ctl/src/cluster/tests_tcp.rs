//! Managers over the management port on loopback (127.0.0.1, ports the kernel picks):
//! election and replication, writes forwarded by followers, a leader shut down and
//! restarted, membership changes; and the port itself: credentials, bad, oversized and
//! truncated frames, random bytes. Every wait is bounded and none depends on speed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::rpc::{CallError, Client};
use super::tests::{Scratch, WAIT, allocate, config, create, eventually};
use super::wire::{self, Failure, Hello, Request, Response};
use super::*;

const SECRET: &str = "cluster-secret";
const WORKER_TOKEN: &str = "join-worker";
const SHORT: Duration = Duration::from_secs(5);

fn accept() -> Accept {
    Arc::new(|c: &str| match c {
        SECRET => Some(Access::Member),
        WORKER_TOKEN => Some(Access::Join(Role::Worker)),
        _ => None,
    })
}

/// Answers `access:body`.
fn echo() -> AppHandler {
    Arc::new(|access, body| {
        Box::pin(async move {
            let mut out = format!("{access:?}:").into_bytes();
            out.extend(body);
            out
        })
    })
}

/// One node's management port and, while it runs, its manager.
struct Node {
    addr: SocketAddr,
    slot: RaftSlot,
    stats: Arc<RpcStats>,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Serve on `addr` (port 0: a fresh one).
    async fn up(addr: SocketAddr) -> Node {
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                // The previous server's socket may take a moment to go.
                Err(e) => {
                    assert!(start.elapsed() < WAIT, "bind {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let addr = listener.local_addr().unwrap();
        let slot = RaftSlot::new();
        let stats = Arc::new(RpcStats::new());
        let server = tokio::spawn(serve(
            listener,
            accept(),
            slot.clone(),
            echo(),
            stats.clone(),
        ));
        Node {
            addr,
            slot,
            stats,
            server,
        }
    }

    fn net(&self) -> TcpNet {
        TcpNet::new(SECRET).with_slot(self.slot.clone())
    }
}

struct TcpCluster {
    scratch: Scratch,
    nodes: BTreeMap<NodeId, Node>,
    managers: BTreeMap<NodeId, Manager>,
}

impl TcpCluster {
    async fn new(name: &str, n: u64) -> Self {
        let scratch = Scratch::new(name);
        let mut c = Self {
            scratch,
            nodes: BTreeMap::new(),
            managers: BTreeMap::new(),
        };
        for id in 1..=n {
            let node = Node::up("127.0.0.1:0".parse().unwrap()).await;
            c.nodes.insert(id, node);
            c.start(id).await;
        }
        let members: Vec<(NodeId, String)> = c
            .nodes
            .iter()
            .map(|(&id, n)| (id, n.addr.to_string()))
            .collect();
        c.managers[&1].initialize(&members).await.unwrap();
        c.leader().await;
        c
    }

    async fn start(&mut self, id: NodeId) {
        let net = self.nodes[&id].net();
        let m = Manager::start(id, &self.scratch.dir(id), net, config())
            .await
            .unwrap();
        self.managers.insert(id, m);
    }

    /// The leader all live managers agree on.
    async fn leader(&self) -> NodeId {
        let mut agreed = None;
        eventually("a leader all live managers agree on", || {
            let leaders: Vec<_> = self.managers.values().map(Manager::leader).collect();
            agreed = leaders[0].filter(|l| {
                self.managers.contains_key(l) && leaders.iter().all(|x| *x == Some(*l))
            });
            agreed.is_some()
        })
        .await;
        agreed.unwrap_or_default()
    }

    /// Stop the manager and its management port.
    async fn kill(&mut self, id: NodeId) {
        let m = self.managers.remove(&id).unwrap();
        m.shutdown().await.unwrap();
        assert!(self.nodes[&id].slot.get().is_none(), "the slot is emptied");
        let node = self.nodes.get_mut(&id).unwrap();
        node.server.abort();
        let _ = (&mut node.server).await;
    }

    /// The port again on the same address, and the manager from its directory.
    async fn restart(&mut self, id: NodeId) {
        let addr = self.nodes[&id].addr;
        self.nodes.insert(id, Node::up(addr).await);
        self.start(id).await;
    }

    async fn converge(&self, want: &ClusterState) {
        eventually("every manager to apply the same state", || {
            self.managers.values().all(|m| m.state() == *want)
        })
        .await;
    }

    fn any_follower(&self, leader: NodeId) -> &Manager {
        self.managers.values().find(|m| m.id() != leader).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_over_tcp_elect_replicate_and_forward() {
    let c = TcpCluster::new("tcp-three", 3).await;
    let leader = c.leader().await;
    let leader_addr = c.nodes[&leader].addr.to_string();
    for m in c.managers.values() {
        assert_eq!(m.is_leader(), m.id() == leader);
        assert_eq!(m.leader_addr().as_deref(), Some(leader_addr.as_str()));
        let want: Vec<(NodeId, String)> = c
            .nodes
            .iter()
            .map(|(&id, n)| (id, n.addr.to_string()))
            .collect();
        assert_eq!(m.voters(), want);
    }
    c.managers[&leader]
        .propose(create("a", None))
        .await
        .unwrap();
    // A follower forwards to the leader over TCP; refusals come back with Docker's text.
    let f = c.any_follower(leader);
    let a = f.propose(allocate("a", "ep", None)).await.unwrap();
    assert_eq!(a, Answer::Address("10.0.0.2".parse().unwrap()));
    let e = f.propose(create("a", None)).await.unwrap_err();
    assert_eq!(e.to_string(), "network with name a already exists");
    f.propose(Command::Init { data_path_port: 0 })
        .await
        .unwrap();
    let want = c.managers[&leader].state();
    assert_eq!(want.networks.len(), 1);
    assert_eq!(want.data_path_port, DEFAULT_DATA_PATH_PORT);
    c.converge(&want).await;
    let served: u64 = c.nodes.values().map(|n| n.stats.counts().requests).sum();
    assert!(served > 0);
    assert!(c.nodes.values().all(|n| {
        let k = n.stats.counts();
        k.refused + k.bad_hello + k.oversized + k.truncated + k.malformed + k.forbidden == 0
    }));

    // Membership: a follower leaves, the two left still commit.
    let gone = f.id();
    let e = f.remove_manager(leader).await.unwrap_err();
    assert!(matches!(e, ClusterError::NotLeader { .. }), "{e}");
    c.managers[&leader].remove_manager(gone).await.unwrap();
    let ids: Vec<NodeId> = c.managers[&leader]
        .voters()
        .into_iter()
        .map(|v| v.0)
        .collect();
    assert!(!ids.contains(&gone) && ids.len() == 2, "{ids:?}");
    c.managers[&leader]
        .propose(create("b", None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_leader_shut_down_others_go_on_and_a_restart_catches_up() {
    let mut c = TcpCluster::new("tcp-leader", 3).await;
    let old = c.leader().await;
    c.managers[&old]
        .propose(create("first", None))
        .await
        .unwrap();
    c.converge(&c.managers[&old].state()).await;
    c.kill(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    // Writes go on, through a follower too, past a snapshot (every 5 entries here).
    c.any_follower(new)
        .propose(create("second", None))
        .await
        .unwrap();
    for i in 0..8 {
        c.managers[&new]
            .propose(allocate("first", &format!("ep{i}"), None))
            .await
            .unwrap();
    }
    eventually("the new leader to take a snapshot", || {
        c.managers[&new].metrics().snapshot.is_some()
    })
    .await;
    // The old leader comes back on its address and catches up.
    c.restart(old).await;
    let want = c.managers[&new].state();
    c.converge(&want).await;
    assert_eq!(want.networks.len(), 2);
    c.managers[&old]
        .propose(create("third", None))
        .await
        .unwrap();
    c.converge(&c.managers[&new].state()).await;
    assert_eq!(c.managers[&old].state().networks.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_manager_is_added_with_its_address() {
    let mut c = TcpCluster::new("tcp-add", 1).await;
    c.managers[&1].propose(create("a", None)).await.unwrap();
    let node = Node::up("127.0.0.1:0".parse().unwrap()).await;
    let addr = node.addr.to_string();
    c.nodes.insert(2, node);
    c.start(2).await;
    c.managers[&1].add_manager(2, &addr).await.unwrap();
    c.converge(&c.managers[&1].state()).await;
    assert_eq!(c.managers[&1].voters()[1], (2, addr));
    // The new manager forwards to the first one.
    c.leader().await;
    let f = c.any_follower(1);
    f.propose(create("b", None)).await.unwrap();
    c.converge(&c.managers[&1].state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_decide_what_a_connection_may_do() {
    let n = Node::up("127.0.0.1:0".parse().unwrap()).await;
    // App messages: members and join tokens.
    let a = call_app(n.addr, SECRET, b"hi".to_vec(), SHORT)
        .await
        .unwrap();
    assert_eq!(a, b"Member:hi");
    let a = call_app(n.addr, WORKER_TOKEN, b"join".to_vec(), SHORT)
        .await
        .unwrap();
    assert_eq!(a, b"Join(Worker):join");
    // A wrong credential is refused, with a clear error, and counted.
    let e = call_app(n.addr, "wrong", b"x".to_vec(), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Denied(_)), "{e}");
    assert!(e.to_string().contains("refused the credential"), "{e}");
    assert_eq!(n.stats.counts().refused, 1);
    // A join token may not speak Raft.
    let mut cl = Client::connect(&n.addr.to_string(), WORKER_TOKEN, SHORT)
        .await
        .unwrap();
    let e = cl
        .call(&Request::ClientWrite(create("x", None)), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        CallError::Failed {
            failure: Failure::Forbidden,
            ..
        }
    ));
    assert_eq!(n.stats.counts().forbidden, 1);
    // A member's Raft request on a node that is no manager: an error, the connection stays.
    let mut cl = Client::connect(&n.addr.to_string(), SECRET, SHORT)
        .await
        .unwrap();
    let e = cl
        .call(&Request::ClientWrite(create("x", None)), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        CallError::Failed {
            failure: Failure::NoRaft,
            ..
        }
    ));
    let r = cl.call(&Request::App(b"again".to_vec()), SHORT).await;
    assert!(matches!(r, Ok(Response::App(b)) if b == b"Member:again"));
    // Nothing answers a closed port within the timeout.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = call_app(closed, SECRET, vec![], SHORT).await.unwrap_err();
    assert!(matches!(e, ClusterError::Rpc(_)), "{e}");
}

/// Send `bytes` on a new connection, then half-close and read until the server closes.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

fn hello(credential: &str) -> Vec<u8> {
    wire::encode(&Hello {
        magic: wire::MAGIC,
        version: wire::VERSION,
        credential: credential.into(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_dropped_and_counted_and_the_server_goes_on() {
    let n = Node::up("127.0.0.1:0".parse().unwrap()).await;
    let counts = || n.stats.counts();
    // Before the hello: an oversized frame, a truncated one, one that is no hello.
    let big = u32::try_from(MAX_HELLO + 1).unwrap().to_be_bytes();
    send_raw(n.addr, &big).await;
    assert_eq!(counts().oversized, 1);
    send_raw(n.addr, &[0, 0, 0, 100, 1, 2, 3]).await;
    send_raw(n.addr, &[0, 0]).await;
    assert_eq!(counts().truncated, 2);
    send_raw(n.addr, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    let mut wrong_magic = hello(SECRET);
    wrong_magic[4] ^= 0xff;
    send_raw(n.addr, &wrong_magic).await;
    let mut wrong_version = hello(SECRET);
    let at = 4 + 4;
    wrong_version[at] = wrong_version[at].wrapping_add(1);
    send_raw(n.addr, &wrong_version).await;
    assert_eq!(counts().bad_hello, 3);
    // After the hello: a member's frame over 64 MiB, a join token's over 1 MiB, garbage,
    // a truncated request.
    let mut m = hello(SECRET);
    m.extend(u32::try_from(MAX_MEMBER_FRAME + 1).unwrap().to_be_bytes());
    send_raw(n.addr, &m).await;
    let mut j = hello(WORKER_TOKEN);
    j.extend(u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes());
    send_raw(n.addr, &j).await;
    assert_eq!(counts().oversized, 3);
    let mut g = hello(SECRET);
    g.extend([0, 0, 0, 4, 0xee, 0xee, 0xee, 0xee]);
    send_raw(n.addr, &g).await;
    assert_eq!(counts().malformed, 1);
    let mut t = hello(SECRET);
    let req = wire::encode(&Request::App(vec![7; 100])).unwrap();
    t.extend(&req[..50]);
    send_raw(n.addr, &t).await;
    assert_eq!(counts().truncated, 3);
    // A refused hello is answered before the close.
    let answer = send_raw(n.addr, &hello("nope")).await;
    assert!(!answer.is_empty());
    assert_eq!(counts().refused, 1);
    // And the port still serves.
    let a = call_app(n.addr, SECRET, b"ok".to_vec(), SHORT)
        .await
        .unwrap();
    assert_eq!(a, b"Member:ok");
    assert_eq!(counts().requests, 1);
    assert_eq!(counts().forbidden, 0);
}

fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Vec<u8>, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match wire::read_frame(&mut r, max, SHORT, SHORT).await {
                Ok(b) => out.push(Ok(b)),
                Err(wire::FrameError::Closed) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes through the frame reader and every decoder: errors, never a panic.
    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for frame in read_all(&bytes, MAX_HELLO).into_iter().flatten() {
            let _ = wire::decode_hello(&frame);
            let _ = wire::decode::<Request>(&frame);
            let _ = wire::decode::<Response>(&frame);
        }
        let _ = wire::decode_hello(&bytes);
        let _ = wire::decode::<Request>(&bytes);
    }

    /// A hello survives the trip; any cut of it is truncated, never a different hello.
    #[test]
    fn hellos_round_trip_and_cuts_are_truncated(credential in ".{0,64}", cut in 0usize..200) {
        let frame = hello(&credential);
        let got = read_all(&frame, MAX_HELLO);
        prop_assert_eq!(got.len(), 1);
        let body = got[0].clone().unwrap();
        prop_assert_eq!(wire::decode_hello(&body).unwrap().credential, credential);
        let cut = cut % frame.len();
        let got = read_all(&frame[..cut], MAX_HELLO);
        if cut == 0 {
            prop_assert!(got.is_empty());
        } else {
            prop_assert_eq!(got, vec![Err("truncated frame".to_string())]);
        }
    }
}
