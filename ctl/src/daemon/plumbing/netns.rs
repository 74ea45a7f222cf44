//! A sandbox's plumbing as root: its named network namespace and one persistent TAP per
//! endpoint inside it, configured over netlink (MAC, MTU, address, routes). Every step
//! is idempotent so the daemon can replay it when it reconciles after a restart.
//!
//! [`configure`] is also what a rootless sandbox's process (`tapnet rootless-init`) runs
//! inside its own namespace.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use tapnet_engine::sys::netlink::{Netlink, NetlinkError};
use tapnet_engine::sys::netns::{NetNs, NetnsError};
use tapnet_engine::sys::tap::{Tap, TapConfig, TapError, create_tap_in};

/// The interface of one endpoint, as configured inside its sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceConfig {
    /// `eth0`, `eth1`, …
    pub ifname: String,
    /// 02:42 + IPv4.
    pub mac: [u8; 6],
    /// Address and prefix length.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// MTU.
    pub mtu: u32,
}

/// What can go wrong while plumbing a sandbox. The cause is the error's source (not
/// part of its text).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Namespace creation, opening or removal failed.
    #[error("sandbox namespace")]
    Netns(#[from] NetnsError),
    /// TAP creation or attachment failed.
    #[error("sandbox interface")]
    Tap(#[from] TapError),
    /// Interface configuration failed.
    #[error("sandbox interface configuration")]
    Netlink(#[from] NetlinkError),
    /// The sandbox's `resolv.conf` could not be written or removed.
    #[error("sandbox resolv.conf {}", path.display())]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Transmit queue length of sandbox TAPs: deep enough for the advertised TCP window
/// (a 1,000-packet queue caps TCP throughput far below what the engine carries).
pub const TXQUEUELEN: u32 = 10_000;

/// Open the sandbox's namespace, creating it (with `lo` up) if it is missing.
pub fn ensure_netns(name: &str) -> Result<NetNs, SandboxError> {
    match NetNs::open(name) {
        Ok(ns) => Ok(ns),
        // A crash between creating the mount point and bind-mounting the namespace onto
        // it leaves an empty file under the sandbox's name: clear it and start over
        // (before, the sandbox could never be restored).
        Err(NetnsError::NotNetns { .. }) => {
            remove_stale_mount_point(name)?;
            new_netns(name)
        }
        Err(NetnsError::NotFound { .. }) => new_netns(name),
        Err(e) => Err(e.into()),
    }
}

fn tap_config(ifname: &str) -> TapConfig {
    TapConfig {
        name: ifname.to_string(),
        persist: true,
        ..Default::default()
    }
}

/// Create a sandbox namespace: `lo` up, IPv6 off. Networks are IPv4-only for now, and
/// an interface with IPv6 on sends duplicate-address detection, router solicitations
/// and MLD reports as it comes up: multicast that the switch floods to every port of
/// the network (with 1,000 sandboxes that kept the worker at 61 % CPU).
fn new_netns(name: &str) -> Result<NetNs, SandboxError> {
    let ns = NetNs::create(name)?;
    ns.run(|| {
        for conf in ["all", "default"] {
            // Absent when the kernel has no IPv6: nothing to turn off then.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
        }
    })?;
    Netlink::open_in(&ns)?.set_up(1)?;
    Ok(ns)
}

/// Create (or re-open, if it persists from before) the endpoint's TAP inside `ns` and
/// configure it. Safe to repeat.
pub fn plug(ns: &NetNs, cfg: &IfaceConfig) -> Result<Tap, SandboxError> {
    let tap = create_tap_in(ns, &tap_config(&cfg.ifname))?;
    configure(&mut Netlink::open_in(ns)?, cfg)?;
    Ok(tap)
}

/// Create the endpoint's TAP in the calling thread's namespace (the daemon's),
/// persistent, with its MAC, MTU and queue length, left down and without an address: a
/// container runtime moves it into its container and configures it there. Persistent so
/// that it outlives the daemon's process: a daemon that starts again finds it in the
/// container ([`find_tap`]) and attaches it again.
pub fn plug_host(cfg: &IfaceConfig) -> Result<Tap, SandboxError> {
    let tap = Tap::create(&tap_config(&cfg.ifname))?;
    let mut nl = Netlink::open()?;
    let idx = nl.link_index(&cfg.ifname)?;
    nl.set_mac(idx, cfg.mac)?;
    nl.set_mtu(idx, cfg.mtu)?;
    nl.set_txqueuelen(idx, TXQUEUELEN)?;
    Ok(tap)
}

/// Give interface `cfg.ifname` (in `nl`'s namespace) its MAC, MTU, queue length and
/// address, and bring it up. Safe to repeat.
pub fn configure(nl: &mut Netlink, cfg: &IfaceConfig) -> Result<(), SandboxError> {
    let idx = nl.link_index(&cfg.ifname)?;
    let link = nl.link(idx)?;
    if link.mac != Some(cfg.mac) {
        nl.set_mac(idx, cfg.mac)?;
    }
    if link.mtu != Some(cfg.mtu) {
        nl.set_mtu(idx, cfg.mtu)?;
    }
    if link.txqueuelen != Some(TXQUEUELEN) {
        nl.set_txqueuelen(idx, TXQUEUELEN)?;
    }
    if let Some((a, len)) = cfg.addr {
        let have = nl.addresses(idx)?;
        if !have.contains(&(IpAddr::V4(a), len)) {
            nl.add_address(idx, IpAddr::V4(a), len)?;
        }
    }
    nl.set_up(idx)?;
    Ok(())
}

/// Remove the endpoint's TAP from `ns` (the engine must have let go of it first).
pub fn unplug(ns: &NetNs, ifname: &str) -> Result<(), SandboxError> {
    let mut nl = Netlink::open_in(ns)?;
    match nl.link_index(ifname) {
        Ok(idx) => Ok(nl.delete_link(idx)?),
        Err(NetlinkError::Kernel {
            errno: nix::errno::Errno::ENODEV,
            ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The name of the TAP in `ns` whose MAC is `mac`, if there is one.
pub fn find_tap(ns: &NetNs, mac: [u8; 6]) -> Result<Option<String>, SandboxError> {
    let links = Netlink::open_in(ns)?.links()?;
    Ok(links
        .into_iter()
        .find(|l| l.mac == Some(mac) && l.kind.as_deref() == Some("tun"))
        .map(|l| l.name))
}

/// Remove TAP `ifname` from the calling thread's namespace (the daemon's), if it is
/// there.
pub fn unplug_host(ifname: &str) -> Result<(), SandboxError> {
    let mut nl = Netlink::open()?;
    match nl.link_by_name(ifname) {
        Ok(l) if l.kind.as_deref() == Some("tun") => Ok(nl.delete_link(l.index)?),
        Ok(_) => Ok(()),
        Err(NetlinkError::Kernel {
            errno: nix::errno::Errno::ENODEV,
            ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The IPv4 addresses of interface `ifname` in `ns`, or `None` if `ns` has no such
/// interface.
pub fn iface_addresses(
    ns: &NetNs,
    ifname: &str,
) -> Result<Option<Vec<(Ipv4Addr, u8)>>, SandboxError> {
    let mut nl = Netlink::open_in(ns)?;
    let idx = match nl.link_index(ifname) {
        Ok(idx) => idx,
        Err(NetlinkError::Kernel {
            errno: nix::errno::Errno::ENODEV,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v4 = nl
        .addresses(idx)?
        .into_iter()
        .filter_map(|(a, len)| match a {
            IpAddr::V4(a) => Some((a, len)),
            IpAddr::V6(_) => None,
        });
    Ok(Some(v4.collect()))
}

/// Make `gateway` via `ifname` the sandbox's default route, or remove it (`None`).
pub fn set_default_route(ns: &NetNs, route: Option<(Ipv4Addr, &str)>) -> Result<(), SandboxError> {
    let mut nl = Netlink::open_in(ns)?;
    nl.delete_default_route()?;
    if let Some((gw, ifname)) = route {
        let idx = nl.link_index(ifname)?;
        nl.add_route(None, Some(IpAddr::V4(gw)), idx)?;
    }
    Ok(())
}

/// Delete the sandbox's namespace (its interfaces go with it).
pub fn remove_netns(name: &str) -> Result<(), SandboxError> {
    match NetNs::open(name) {
        Ok(ns) => Ok(ns.delete()?),
        Err(NetnsError::NotFound { .. }) => Ok(()),
        // A half-made namespace (see `ensure_netns`): only its mount point is left.
        Err(NetnsError::NotNetns { .. }) => remove_stale_mount_point(name),
        Err(e) => Err(e.into()),
    }
}

/// Remove `/run/netns/NAME` when it is not a namespace (an empty mount point).
fn remove_stale_mount_point(name: &str) -> Result<(), SandboxError> {
    let path = std::path::Path::new(tapnet_engine::sys::netns::NETNS_RUN_DIR).join(name);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Delete {
            name: name.to_string(),
            path,
            source,
        }
        .into()),
    }
}

/// Where `ip netns exec` looks for a namespace's own files (`/etc/netns/NAME/…`, bind
/// mounted over `/etc/…`).
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// `/etc/netns/NAME/resolv.conf`.
pub fn resolv_conf_path(name: &str) -> PathBuf {
    Path::new(NETNS_ETC_DIR).join(name).join("resolv.conf")
}

/// Write namespace `name`'s `resolv.conf` in place (truncate and write, never a rename:
/// a bind mount of the file in a running sandbox sees the new text). A file that holds
/// `text` already is left alone.
pub fn write_resolv_conf(name: &str, text: &str) -> Result<(), SandboxError> {
    let path = resolv_conf_path(name);
    let err = |source| SandboxError::ResolvConf {
        path: path.clone(),
        source,
    };
    if std::fs::read(&path).is_ok_and(|have| have == text.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// Remove namespace `name`'s `resolv.conf`, and its directory under `/etc/netns` once
/// empty. What is gone already is no error.
pub fn remove_resolv_conf(name: &str) -> Result<(), SandboxError> {
    let path = resolv_conf_path(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(SandboxError::ResolvConf { path, source }),
    }
    if let Some(dir) = path.parent() {
        // Other files of the namespace's (put there by someone else) keep it.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}
