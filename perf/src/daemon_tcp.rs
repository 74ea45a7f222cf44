//! `daemon-tcp`: `tap-tcp` through a network made by the daemon. A daemon in this
//! process creates a user-defined bridge network and two sandboxes on it through its
//! API; iperf3 runs in the sandboxes' namespaces, one stream and two, against veth +
//! Linux bridge in the same run. Unlike `tap-tcp`'s bare engine, the datapath is the
//! daemon's: persistent TAPs set up by the daemon, its gateway port in the domain, its
//! static MACs.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use tapnet_engine::Engine;
use tapnet_engine::sys::netns::NetNs;

use crate::daemon_rig::{DaemonRig, in_private_netns_dir, sandbox_netns};
use crate::opts::Opts;
use crate::proc::ensure_iperf3;
use crate::report::{Measurement, Reporter};
use crate::sys;
use crate::tap_tcp::compare;
use crate::topo::{Datapath, KernelBridge};

const SCENARIO: &str = "daemon-tcp";
const SUBNET: &str = "10.126.0.0/24";

/// Two sandboxes on one network of an in-process daemon.
struct DaemonPair {
    // The namespaces' files close before the rig removes the sandboxes.
    a: NetNs,
    b: NetNs,
    addr_b: Ipv4Addr,
    offloads: bool,
    rig: DaemonRig,
}

impl DaemonPair {
    fn create(opts: &Opts) -> Result<DaemonPair> {
        let rig = DaemonRig::start("tcp", opts.engine_config()?)?;
        let net = rig.create_network("perf-tcp", SUBNET)?;
        let sa = rig.create_sandbox("perf-tcp-a", &net)?;
        let sb = rig.create_sandbox("perf-tcp-b", &net)?;
        let addr_b = sb
            .networks
            .values()
            .next()
            .context("sandbox b has no endpoint")?
            .ip_address
            .parse()
            .context("sandbox b's address")?;
        let (a, b) = (sandbox_netns(&sa)?, sandbox_netns(&sb)?);
        let st = rig.engine().stats();
        let offloads = st
            .ports
            .iter()
            .filter(|p| p.info.kind == tapnet_engine::port::PortKind::Tap)
            .all(|p| p.info.offloads);
        Ok(DaemonPair {
            a,
            b,
            addr_b,
            offloads,
            rig,
        })
    }
}

impl Datapath for DaemonPair {
    fn label(&self) -> &'static str {
        "tapnet-daemon"
    }
    fn a(&self) -> &NetNs {
        &self.a
    }
    fn b(&self) -> &NetNs {
        &self.b
    }
    fn ifnames(&self) -> (&'static str, &'static str) {
        ("eth0", "eth0")
    }
    fn addr_b(&self) -> Ipv4Addr {
        self.addr_b
    }
    fn engine(&self) -> Option<&Engine> {
        Some(self.rig.engine())
    }
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    in_private_netns_dir(|| {
        eprintln!(
            "daemon-tcp: kernel bridge, and a daemon (mapping {}) with network perf-tcp and two sandboxes",
            opts.mapping
        );
        let kernel = KernelBridge::create("dtcp-")?;
        sys::reset_peak_rss();
        let tapnet = DaemonPair::create(opts)?;
        let offloads = tapnet.offloads;
        compare(
            opts,
            rep,
            SCENARIO,
            &iperf,
            &kernel,
            &tapnet,
            &|m: Measurement| {
                m.detail("tap_offloads", offloads)
                    .detail(
                        "tap_txqueuelen",
                        tapnet_ctl::daemon::plumbing::netns::TXQUEUELEN,
                    )
                    .detail("subnet", SUBNET)
            },
        )
    })
}
