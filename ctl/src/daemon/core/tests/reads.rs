//! Reads during a write: answered at once, from the state before it or after it, never
//! from half of it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Rig, attach};
use crate::daemon::core::{Daemon, PoolUsage};
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
        let during = rx
            .recv_timeout(Duration::from_secs(3))
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
