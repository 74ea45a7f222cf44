//! Managers on the in-process router: one, three and five of them, leaders killed,
//! managers restarted from their redb files, a minority left alone. Every wait has a
//! generous bound and none depends on speed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

pub(super) const WAIT: Duration = Duration::from_secs(30);

/// A scratch directory removed on drop.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tapnet-raft-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub(super) fn dir(&self, id: NodeId) -> PathBuf {
        self.0.join(format!("m{id}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn config() -> ClusterConfig {
    ClusterConfig {
        snapshot_every: 5,
        keep_after_snapshot: 0,
        heartbeat: Duration::from_millis(100),
        election_timeout: (Duration::from_millis(600), Duration::from_millis(1200)),
        write_timeout: WAIT,
    }
}

pub(super) fn create(name: &str, subnet: Option<&str>) -> Command {
    Command::CreateNetwork(NetworkSpec {
        id: new_network_id(),
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        attachable: false,
        labels: BTreeMap::new(),
    })
}

pub(super) fn allocate(network: &str, endpoint: &str, address: Option<Ipv4Addr>) -> Command {
    Command::Allocate {
        network: network.into(),
        endpoint: endpoint.into(),
        address,
    }
}

/// Poll `f` until it holds, at most [`WAIT`].
pub(super) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    scratch: Scratch,
    router: Router,
    managers: BTreeMap<NodeId, Manager>,
}

impl Cluster {
    async fn new(name: &str, n: u64) -> Self {
        let scratch = Scratch::new(name);
        let router = Router::new();
        let mut managers = BTreeMap::new();
        for id in 1..=n {
            let m = Manager::start(id, &scratch.dir(id), router.clone(), config())
                .await
                .unwrap();
            managers.insert(id, m);
        }
        let ids: Vec<(NodeId, String)> = managers.keys().map(|&i| (i, String::new())).collect();
        managers[&1].initialize(&ids).await.unwrap();
        let c = Self {
            scratch,
            router,
            managers,
        };
        c.leader().await;
        c
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

    async fn kill(&mut self, id: NodeId) {
        let m = self.managers.remove(&id).unwrap();
        m.shutdown().await.unwrap();
        assert!(!self.router.is_reachable(id));
    }

    async fn restart(&mut self, id: NodeId) {
        let m = Manager::start(id, &self.scratch.dir(id), self.router.clone(), config())
            .await
            .unwrap();
        self.managers.insert(id, m);
    }

    /// Every live manager has applied `want`.
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
async fn one_manager_creates_allocates_releases_removes() {
    let mut c = Cluster::new("one", 1).await;
    let m = &c.managers[&1];
    let Answer::Network(n) = m.propose(create("web", None)).await.unwrap() else {
        panic!("no network answered");
    };
    assert_eq!(
        (n.vni, n.subnet.to_string().as_str()),
        (4096, "10.0.0.0/24")
    );
    let e = m.propose(create("web", None)).await.unwrap_err();
    assert_eq!(e.to_string(), "network with name web already exists");
    let e = m
        .propose(create("db", Some("10.0.0.128/25")))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Pool overlaps with other one on this address space"
    );
    let a = m.propose(allocate("web", "ep1", None)).await.unwrap();
    assert_eq!(a, Answer::Address(Ipv4Addr::new(10, 0, 0, 2)));
    let e = m
        .propose(allocate("web", "ep2", Some(Ipv4Addr::new(10, 0, 0, 2))))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Address already in use");
    let e = m
        .propose(Command::RemoveNetwork {
            network: "web".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        ClusterError::Refused(StateError::ActiveEndpoints { .. })
    ));
    m.propose(Command::Release {
        network: "web".into(),
        endpoint: "ep1".into(),
    })
    .await
    .unwrap();
    m.propose(Command::SetRole {
        node: 1,
        role: Role::Manager,
    })
    .await
    .unwrap();
    m.propose(Command::RemoveNetwork {
        network: "web".into(),
    })
    .await
    .unwrap();
    let state = m.state();
    assert!(state.networks.is_empty());
    assert_eq!(state.nodes[&1].role, Role::Manager);
    // Enough writes for snapshots, then a restart from the file resumes the same state.
    for i in 0..7 {
        m.propose(create(&format!("n{i}"), None)).await.unwrap();
    }
    let before = m.state();
    c.kill(1).await;
    c.restart(1).await;
    c.leader().await;
    c.converge(&before).await;
    let m = &c.managers[&1];
    eventually("a snapshot", || m.metrics().snapshot.is_some()).await;
    let Answer::Network(n) = m.propose(create("after", None)).await.unwrap() else {
        panic!("no network answered");
    };
    assert_eq!(n.vni, 4096 + 7, "VNIs continue after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_see_writes_made_through_the_leader_and_forwarded() {
    let c = Cluster::new("three", 3).await;
    let leader = c.leader().await;
    c.managers[&leader]
        .propose(create("a", None))
        .await
        .unwrap();
    // A follower forwards to the leader.
    let f = c.any_follower(leader);
    let a = f.propose(allocate("a", "ep", None)).await.unwrap();
    assert_eq!(a, Answer::Address(Ipv4Addr::new(10, 0, 0, 2)));
    let e = f.propose(create("a", None)).await.unwrap_err();
    assert_eq!(e.to_string(), "network with name a already exists");
    let want = c.managers[&leader].state();
    assert_eq!(want.networks.len(), 1);
    c.converge(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_nothing_committed_is_lost() {
    let mut c = Cluster::new("leader", 3).await;
    let old = c.leader().await;
    for i in 0..3 {
        c.managers[&old]
            .propose(create(&format!("n{i}"), None))
            .await
            .unwrap();
    }
    let before = c.managers[&old].state();
    c.kill(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    // Everything committed before is there on the new leader, and writes go on. The
    // new leader holds every committed entry in its log but may apply them only after
    // its first commit in the new term: wait for the apply, not for luck.
    let m = &c.managers[&new];
    eventually("the new leader to apply what was committed before", || {
        let now = m.state();
        before
            .networks
            .iter()
            .all(|(id, n)| now.networks.get(id) == Some(n))
    })
    .await;
    c.any_follower(new)
        .propose(create("after", None))
        .await
        .unwrap();
    let want = c.managers[&new].state();
    assert_eq!(want.networks.len(), 4);
    c.converge(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_catches_up_through_a_snapshot() {
    let mut c = Cluster::new("restart", 3).await;
    let leader = c.leader().await;
    let gone = c.any_follower(leader).id();
    c.managers[&leader]
        .propose(create("first", None))
        .await
        .unwrap();
    c.converge(&c.managers[&leader].state()).await;
    c.kill(gone).await;
    let behind = {
        // What the stopped manager had: its file is all it has.
        c.managers[&leader].applied_index().unwrap_or(0)
    };
    for i in 0..12 {
        c.managers[&leader]
            .propose(allocate("first", &format!("ep{i}"), None))
            .await
            .unwrap();
    }
    // Snapshots are built in the background: wait for one past what the stopped
    // manager had.
    eventually(
        "the leader to take a snapshot past the stopped manager",
        || {
            let snap = c.managers[&leader].metrics().snapshot.map(|l| l.index);
            snap.is_some_and(|s| s > behind)
        },
    )
    .await;
    c.restart(gone).await;
    let want = c.managers[&leader].state();
    c.converge(&want).await;
    eventually(
        "the restarted manager to hold a snapshot past what it had",
        || {
            let got = c.managers[&gone].metrics().snapshot.map(|l| l.index);
            got.is_some_and(|s| s > behind)
        },
    )
    .await;
    // And it takes part in new writes.
    c.managers[&gone]
        .propose(create("second", None))
        .await
        .unwrap();
    c.converge(&c.managers[&leader].state()).await;
    assert_eq!(c.managers[&gone].state().networks.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_managers_lose_two_and_go_on() {
    let mut c = Cluster::new("five", 5).await;
    let leader = c.leader().await;
    c.managers[&leader]
        .propose(create("a", None))
        .await
        .unwrap();
    let other = c.any_follower(leader).id();
    c.kill(leader).await;
    c.kill(other).await;
    let now = c.leader().await;
    assert!(![leader, other].contains(&now));
    c.any_follower(now)
        .propose(create("b", None))
        .await
        .unwrap();
    let want = c.managers[&now].state();
    assert_eq!(want.networks.len(), 2);
    c.converge(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_refuses_writes_instead_of_hanging() {
    let mut c = Cluster::new("minority", 3).await;
    let leader = c.leader().await;
    c.managers[&leader]
        .propose(create("a", None))
        .await
        .unwrap();
    // Leave the leader alone: it cannot commit. (The follower-alone case is below.)
    let ids: Vec<NodeId> = c
        .managers
        .keys()
        .copied()
        .filter(|&i| i != leader)
        .collect();
    for id in ids {
        c.kill(id).await;
    }
    let mut short = config();
    short.write_timeout = Duration::from_secs(3);
    c.managers.get_mut(&leader).unwrap().config = short.clone();
    let start = Instant::now();
    let e = c.managers[&leader]
        .propose(create("b", None))
        .await
        .unwrap_err();
    assert!(start.elapsed() < WAIT, "refused in time");
    assert!(
        matches!(e, ClusterError::NoQuorum { .. } | ClusterError::NoLeader),
        "{e}"
    );
    assert!(e.to_string().contains("majority"), "{e}");

    // A follower alone: no leader to take the write.
    let mut c = Cluster::new("minority-f", 3).await;
    let leader = c.leader().await;
    let alone = c.any_follower(leader).id();
    let ids: Vec<NodeId> = c.managers.keys().copied().filter(|&i| i != alone).collect();
    for id in ids {
        c.kill(id).await;
    }
    c.managers.get_mut(&alone).unwrap().config = short;
    let start = Instant::now();
    let e = c.managers[&alone]
        .propose(create("b", None))
        .await
        .unwrap_err();
    assert!(start.elapsed() < WAIT, "refused in time");
    assert!(
        matches!(
            e,
            ClusterError::NoLeader | ClusterError::Unreachable(_) | ClusterError::NoQuorum { .. }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_is_added_as_learner_then_voter() {
    let mut c = Cluster::new("add", 1).await;
    c.managers[&1].propose(create("a", None)).await.unwrap();
    let m2 = Manager::start(2, &c.scratch.dir(2), c.router.clone(), config())
        .await
        .unwrap();
    c.managers.insert(2, m2);
    let e = c.managers[&2].add_manager(3, "").await.unwrap_err();
    assert!(
        matches!(e, ClusterError::NoLeader | ClusterError::NotLeader { .. }),
        "{e}"
    );
    c.managers[&1].add_manager(2, "").await.unwrap();
    c.converge(&c.managers[&1].state()).await;
    let voters: Vec<NodeId> = c.managers[&1]
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2]);
}
