//! Reads during a write: answered at once, from the state before it or after it, never
//! from half of it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Rig, attach};
use crate::daemon::core::{Daemon, PoolUsage, View, netns_name};
use crate::daemon::model::{EndpointRecord, PortRecord, SandboxRecord};
use crate::daemon::plumbing::{Hold, Op};

/// Releases a held plumbing call however the test ends.
struct Release(Hold);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What the reads show of a sandbox `sb` on networks `bridge` and `a`.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    sandboxes: usize,
    sandbox: bool,
    on_bridge: usize,
    on_a: usize,
    bridge_pool: PoolUsage,
    a_pool: PoolUsage,
    attached: Vec<bool>,
}

fn seen(d: &Daemon, endpoints: &[String]) -> Seen {
    let pool = |net: &str| {
        let (n, _) = d.network(net).unwrap();
        d.pool_usage(&n.ipam[0].pool_id)
    };
    Seen {
        sandboxes: d.sandboxes().len(),
        sandbox: d.sandbox("sb").is_ok(),
        on_bridge: d.network("bridge").unwrap().1.len(),
        on_a: d.network("a").unwrap().1.len(),
        bridge_pool: pool("bridge"),
        a_pool: pool("a"),
        attached: endpoints.iter().map(|e| d.endpoint_attached(e)).collect(),
    }
}

#[test]
fn a_read_sees_a_sandbox_create_whole_or_not_at_all() {
    let rig = Rig::new();
    rig.create_net("a", "10.50.0.0/24");
    let before = seen(rig.d(), &[]);
    // The last step of a create: by then its records, addresses and both endpoints are
    // in the state, and both interfaces in the datapath.
    let hold = Release(rig.p().hold(Op::SetDefaultRoute));
    let d = rig.d();
    std::thread::scope(|scope| {
        let writer = scope
            .spawn(|| d.create_sandbox(Some("sb".into()), None, attach(&["bridge", "a"]), &[]));
        assert!(
            hold.0
                .wait_entered(Instant::now() + Duration::from_secs(10)),
            "the create never reached the plumbing"
        );
        let endpoints: Vec<String> = rig.p().attached().into_keys().collect();
        assert_eq!(endpoints.len(), 2, "both interfaces are plugged by now");
        let (tx, rx) = mpsc::channel();
        let eps = endpoints.clone();
        scope.spawn(move || {
            let _ = tx.send(seen(d, &eps));
        });
        // Far less than forever (the hold), enough for a loaded machine.
        let during = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the reads were not answered while a sandbox create was held");
        assert_eq!(
            during,
            Seen {
                attached: vec![false, false],
                ..before
            },
            "a read saw part of a write"
        );
        hold.0.release();
        let sb = writer.join().unwrap().unwrap();
        let after = seen(d, &endpoints);
        assert_eq!(
            after,
            Seen {
                sandboxes: before.sandboxes + 1,
                sandbox: true,
                on_bridge: before.on_bridge + 1,
                on_a: before.on_a + 1,
                bridge_pool: PoolUsage {
                    in_use: before.bridge_pool.in_use + 1,
                    available: before.bridge_pool.available - 1,
                },
                a_pool: PoolUsage {
                    in_use: before.a_pool.in_use + 1,
                    available: before.a_pool.available - 1,
                },
                attached: vec![true, true],
            }
        );
        assert_eq!(sb.endpoints.len(), 2);
    });
}

/// What publishing a view costs with 1,000 sandboxes (one endpoint and one published
/// port each): the copy each change makes under the state lock as it ends, and freeing
/// the view it replaces. Printed (run with `--nocapture`), not asserted: timings on a
/// shared machine vary too much to bound.
#[test]
fn a_view_of_a_thousand_sandboxes() {
    const SANDBOXES: u32 = 1000;
    let rig = Rig::new();
    let proto = rig.sandbox("sb0", &[]);
    let d = rig.d();
    let mut st = d.lock();
    let ep = st.endpoints[&proto.endpoints[0]].clone();
    for i in 1..SANDBOXES {
        let id = format!("{i:064x}");
        let ep_id = format!("{:064x}", i + SANDBOXES);
        st.endpoints.insert(
            ep_id.clone(),
            EndpointRecord {
                id: ep_id.clone(),
                sandbox_id: id.clone(),
                ipv4: Some(std::net::Ipv4Addr::from(0xac11_0000 + 2 + i)),
                ..ep.clone()
            },
        );
        st.attached.insert(ep_id.clone());
        st.sandboxes.insert(
            id.clone(),
            SandboxRecord {
                id: id.clone(),
                name: format!("sb{i}"),
                netns: netns_name(&id),
                hostname: id[..12].to_string(),
                endpoints: vec![ep_id],
                ports: vec![PortRecord {
                    proto: "tcp".into(),
                    container_port: 80,
                    host_ip: "0.0.0.0".parse().unwrap(),
                    host_port: 20_000 + i as u16,
                }],
                ..proto.clone()
            },
        );
    }
    let mut made = Vec::new();
    let mut freed = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let v = View::of(&st);
        made.push(t.elapsed());
        assert_eq!(v.sandboxes.len(), SANDBOXES as usize);
        let t = Instant::now();
        drop(v);
        freed.push(t.elapsed());
    }
    made.sort_unstable();
    freed.sort_unstable();
    println!(
        "view of {SANDBOXES} sandboxes: made in {:?} (median of 21, fastest {:?}), \
         freed in {:?}",
        made[10], made[0], freed[10]
    );
    // The change ends: readers see all of it.
    drop(st);
    assert_eq!(d.sandboxes().len(), SANDBOXES as usize);
    assert_eq!(d.sandbox("sb999").unwrap().1.len(), 1);
}
