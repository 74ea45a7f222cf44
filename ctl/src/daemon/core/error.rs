//! The core's errors: one variant per way an operation fails, each with Docker's text
//! where Docker has one. Which HTTP status each becomes is the API server's business
//! (`server::error`); a cause is the error's source, never part of its text, so a chain
//! prints each cause once.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::super::ipam::IpamError;
use super::super::plumbing::PlumbingError;
use super::super::store::StoreError;

/// Why a daemon operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    // ----- what the user asked for is malformed or not possible (400) -----
    /// A driver option that the bridge driver does not know.
    #[error("unknown option {key:?} for driver bridge; known options: {known}")]
    UnknownOption {
        /// The option.
        key: String,
        /// The options the driver knows, comma-separated.
        known: String,
    },
    /// A boolean driver option with another value.
    #[error("invalid value {value:?} for option {key}: expected true or false")]
    InvalidBool {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// `com.docker.network.driver.mtu` out of range.
    #[error("invalid MTU {value:?} in option {key}: must be between 68 and 65535")]
    InvalidMtu {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// `host_binding_ipv4` that is no IP address (Docker's text).
    #[error("failed to parse {key} value: {value} (nil ip)")]
    InvalidHostBinding {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// An address given in text that is no IPv4 address.
    #[error("invalid {what} {value:?}: not an IPv4 address")]
    InvalidIpv4 {
        /// What the address is for.
        what: &'static str,
        /// The text.
        value: String,
    },
    /// `network create` without a name.
    #[error("network name must not be empty")]
    EmptyNetworkName,
    /// An overlay network asked with what tapnet's overlay driver does not do.
    #[error("overlay networks: {0}")]
    OverlayUnsupported(String),
    /// A network driver tapnet knows but does not have yet.
    #[error(
        "driver {0:?} is not available in this version of tapnet (bridge, host, null and overlay are)"
    )]
    DriverUnavailable(String),
    /// IPv6 asked for.
    #[error("IPv6 networks are not available in this version of tapnet")]
    Ipv6Unavailable,
    /// More than one pool for a bridge network.
    #[error("only one IPv4 subnet per network is supported")]
    OneSubnetOnly,
    /// A network id prefix that matches several networks.
    #[error("network {name} is ambiguous ({matches} matches found based on ID prefix)")]
    AmbiguousNetwork {
        /// What was asked for.
        name: String,
        /// How many networks it matches.
        matches: usize,
    },
    /// A sandbox id prefix that matches several sandboxes (Docker's text).
    #[error("multiple IDs found with provided prefix: {0}")]
    AmbiguousSandbox(String),
    /// `--ip` on a predefined network (Docker's text).
    #[error("user specified IP address is supported on user defined networks only")]
    StaticIpOnPredefined,
    /// `--ip` outside the network's subnet (Docker's text).
    #[error("no configured subnet contains IP address {0}")]
    NoSubnetContains(Ipv4Addr),
    /// `--ip` on a network without address management (host, none).
    #[error("network {0} has no IPAM: it takes no --ip")]
    NoIpam(String),
    /// A sandbox name Docker would refuse (Docker's text).
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidSandboxName(String),
    /// The same network twice in one sandbox creation.
    #[error("network {0} given twice")]
    NetworkGivenTwice(String),
    /// A sandbox asked to join the host network.
    #[error(
        "a sandbox cannot join the host network: run the command in the host's namespace instead (tapnet run --network host)"
    )]
    HostNetworkSandbox,
    /// The none network with others.
    #[error("conflicting options: the none network cannot be combined with other networks")]
    NoneCombined,
    /// Ports to publish, but no network to reach them through.
    #[error(
        "cannot publish ports of {0}: it has no network with external access (publishing needs a bridge network that is not internal)"
    )]
    NoExternalNetwork(String),
    /// A rootless sandbox's owner does not run.
    #[error("process {0} is not running")]
    ProcessNotRunning(u32),
    /// A rootless operation on a sandbox the daemon plumbed itself.
    #[error("sandbox {0} is not rootless: the daemon made its interfaces")]
    NotRootless(String),
    /// Adopt: as many names as fds are needed.
    #[error(
        "{names} interface names but {fds} file descriptors came with the request: send one TAP fd (SCM_RIGHTS) per name"
    )]
    FdCount {
        /// Names in the request.
        names: usize,
        /// Fds that came with it.
        fds: usize,
    },
    /// Adopt: an interface of the sandbox without a TAP.
    #[error("no TAP for interface {ifname} of sandbox {sandbox}")]
    NoTapFor {
        /// The interface.
        ifname: String,
        /// The sandbox.
        sandbox: String,
    },
    /// Adopt: one interface named twice.
    #[error("interface {0} given twice")]
    InterfaceGivenTwice(String),
    /// Adopt: the fd is not a TAP the daemon can use.
    #[error("the fd sent for {ifname}")]
    BadTap {
        /// The interface it was sent for.
        ifname: String,
        /// Why it cannot be used.
        #[source]
        source: PlumbingError,
    },
    /// Adopt: the fd is another interface's TAP.
    #[error("the fd sent for {ifname} is the TAP {actual}")]
    WrongTap {
        /// The interface it was sent for.
        ifname: String,
        /// The TAP it is.
        actual: String,
    },
    /// Adopt: a name the sandbox has no interface for.
    #[error("sandbox {sandbox} has no interface {ifname}")]
    NoSuchInterface {
        /// The sandbox.
        sandbox: String,
        /// The name.
        ifname: String,
    },
    /// A CNI call with a container id, interface name or namespace the CNI spec does
    /// not allow.
    #[error("invalid {what} {value:?}: {rule}")]
    CniParameter {
        /// `CNI_CONTAINERID`, `CNI_IFNAME` or `CNI_NETNS`.
        what: &'static str,
        /// What was given.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
    /// `CNI_NETNS` names no network namespace.
    #[error("CNI_NETNS {0} is not a network namespace (is the container running?)")]
    CniNoNamespace(String),

    // ----- forbidden (403) -----
    /// A CNI container on a network whose driver cannot take one.
    #[error(
        "network {network} (driver {driver}) cannot take CNI containers: bridge and overlay networks can"
    )]
    CniDriver {
        /// The network's name.
        network: String,
        /// Its driver.
        driver: String,
    },
    /// A second host or null network (Docker's text).
    #[error("only one instance of \"{0}\" network is allowed")]
    OnlyOneInstance(String),
    /// `--ingress` without a swarm.
    #[error("ingress networks need swarm mode, which tapnet does not have yet")]
    IngressNeedsSwarm,
    /// Removing `bridge`, `host` or `none` (Docker's text).
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedNetwork(String),
    /// Removing a network in use (Docker's text).
    #[error(
        "error while removing network: network {network} has active endpoints (name:\"{sandbox}\" id:\"{sandbox_id}\")"
    )]
    ActiveEndpoints {
        /// The network's name.
        network: String,
        /// A sandbox on it.
        sandbox: String,
        /// That sandbox's short id.
        sandbox_id: String,
    },
    /// `network connect` of a rootless sandbox.
    #[error(
        "sandbox {0} is rootless: its interfaces are made by its process when it starts; give every network to `tapnet run --network`"
    )]
    RootlessConnect(String),
    /// A sandbox that stands for another runtime's container, changed through tapnet.
    #[error("sandbox {name} is a container of {runtime}: connect, disconnect and remove it there")]
    ExternalSandbox {
        /// The sandbox's name.
        name: String,
        /// Who owns it.
        runtime: &'static str,
    },
    /// A network id given twice.
    #[error("network with id {0} already exists")]
    NetworkIdTaken(String),
    /// An id from Docker's engine that is not 64 hex characters.
    #[error("invalid id {0:?}: Docker's ids are 64 hexadecimal characters")]
    BadDockerId(String),
    /// A Docker endpoint created twice.
    #[error("endpoint {0} already exists")]
    EndpointExists(String),
    /// A Docker endpoint joined twice.
    #[error("endpoint {0} is already joined to a container")]
    EndpointJoined(String),
    /// A Docker endpoint tapnet does not know.
    #[error("endpoint {0} not found")]
    NoDockerEndpoint(String),
    /// An IPAM pool tapnet's IPAM plugin does not hold.
    #[error("pool {0} not found")]
    NoPool(String),
    /// An IPAM pool released while a network uses it.
    #[error("pool {pool} is in use by network {network}")]
    PoolInUse {
        /// The pool.
        pool: String,
        /// The network on it.
        network: String,
    },
    /// An endpoint address on a tapnet-IPAM network that the IPAM plugin did not give.
    #[error("address {0} was not allocated by the tapnet IPAM driver")]
    NotAllocated(std::net::Ipv4Addr),
    /// Connecting a sandbox to a network it is on (Docker's text).
    #[error("endpoint with name {sandbox} already exists in network {network}")]
    AlreadyConnected {
        /// The sandbox's name.
        sandbox: String,
        /// The network's name.
        network: String,
    },
    /// Connecting to a host or null network after creation.
    #[error(
        "container cannot be connected to network {network} (driver {driver}): only at creation"
    )]
    ConnectAtCreationOnly {
        /// The network's name.
        network: String,
        /// Its driver.
        driver: String,
    },
    /// A sandbox on a swarm network created without `--attachable` (Docker's text).
    #[error(
        "Could not attach to network {0}: rpc error: code = PermissionDenied desc = network {0} not manually attachable"
    )]
    NotAttachable(String),
    /// Connecting a sandbox on the none network (Docker's text).
    #[error("container {0} is on the none network and cannot be connected to another network")]
    OnNoneNetwork(String),
    /// Disconnecting a sandbox from a network it is not on (Docker's text).
    #[error("container {sandbox} is not connected to network {network}")]
    NotConnected {
        /// The sandbox's name.
        sandbox: String,
        /// The network's name.
        network: String,
    },
    /// A daemon without root asked for a sandbox with a named namespace.
    #[error(
        "this daemon runs without root: it cannot create network namespaces. Sandboxes come from `tapnet run`, which creates them rootless"
    )]
    NeedsRoot,

    // ----- not found (404) -----
    /// No such network (Docker's text).
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// No such sandbox (Docker's text).
    #[error("No such container: {0}")]
    SandboxNotFound(String),
    /// A CNI attachment (container and interface) tapnet does not have.
    #[error("container {container} has no tapnet attachment {ifname}")]
    CniUnknown {
        /// `CNI_CONTAINERID`.
        container: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// A driver that does not exist (Docker's text for a missing plugin).
    #[error("plugin \"{0}\" not found")]
    PluginNotFound(String),

    // ----- conflict (409) -----
    /// A network name in use (Docker's text).
    #[error("network with name {0} already exists")]
    NetworkNameTaken(String),
    /// A sandbox name in use (Docker's text).
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    SandboxNameTaken {
        /// The name.
        name: String,
        /// The sandbox holding it.
        id: String,
    },
    /// CNI `ADD` for an attachment that exists (the runtime must `DEL` it first).
    #[error(
        "container {container} is attached as {ifname} already (sandbox {sandbox}): DEL it first"
    )]
    CniAttached {
        /// `CNI_CONTAINERID`.
        container: String,
        /// `CNI_IFNAME`.
        ifname: String,
        /// The sandbox standing for it.
        sandbox: String,
    },
    /// CNI `ADD` into a namespace that has an interface of that name (not tapnet's).
    #[error("network namespace {netns} has an interface {ifname} already")]
    CniInterfaceExists {
        /// `CNI_NETNS`.
        netns: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// Adopt: the rootless sandbox has its interfaces already.
    #[error("sandbox {0} already has its interfaces")]
    HasInterfaces(String),

    // ----- address management: Docker's statuses per error -----
    /// The IPAM refused (its status is Docker's for each error).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A full pool when no address was asked for (libnetwork's rewording; 500).
    #[error("no available IPv4 addresses on this network's address pools: {name} ({id})")]
    PoolFull {
        /// The network's name.
        name: String,
        /// Its id.
        id: String,
    },
    /// A network's pool could not be released (500).
    #[error(transparent)]
    ReleasePool(IpamError),

    // ----- published ports (500, Docker's texts) -----
    /// A host port could not be bound for a published port.
    #[error("driver failed programming external connectivity on endpoint {endpoint}: {reason}")]
    PortBinding {
        /// `NAME (ID)` of the endpoint the ports lead to.
        endpoint: String,
        /// Docker's text for what failed.
        reason: String,
    },
    /// Published ports whose endpoint is gone.
    #[error("published ports lost their endpoint")]
    PortsLostEndpoint,
    /// Published ports toward an endpoint without an address.
    #[error("published ports lead to an endpoint with no address")]
    PortsWithoutAddress,

    // ----- the swarm -----
    /// A swarm operation on a node in no swarm (Docker's text; 503).
    #[error(
        "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."
    )]
    NotSwarmManager,
    /// The swarm refused (its own status).
    #[error(transparent)]
    Swarm(#[from] super::SwarmError),

    // ----- the daemon failed (500) -----
    /// CNI `CHECK` found an attachment not as `ADD` left it.
    #[error("container {container}'s attachment {ifname}: {problem}")]
    CniCheck {
        /// `CNI_CONTAINERID`.
        container: String,
        /// `CNI_IFNAME`.
        ifname: String,
        /// What is wrong.
        problem: String,
    },
    /// A stored overlay network without its VNI option.
    #[error("stored overlay network {0} has no VXLAN network identifier")]
    StoredVni(String),
    /// The state directory could not be made.
    #[error("cannot create {}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state store failed.
    #[error("state")]
    Store(#[from] StoreError),
    /// The IPAM state could not be written for the store.
    #[error("encode IPAM state")]
    EncodeIpam(#[source] serde_json::Error),
    /// The stored IPAM state does not decode.
    #[error("decode IPAM state")]
    DecodeIpam(#[source] serde_json::Error),
    /// A stored subnet without its prefix length.
    #[error("stored subnet {0:?} has no prefix length")]
    StoredSubnet(String),
    /// The plumbing failed (the datapath, host networking, a sandbox's namespace).
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),

    // ----- bounds of the daemon (400) and who may do what (403) -----
    /// More published ports than one sandbox may have.
    #[error("too many published ports: {count} asked for, at most {max} per sandbox")]
    TooManyPorts {
        /// Ports asked for (one per container port and host binding).
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A host port range longer than the daemon searches.
    #[error("host port range {range} of {key} is too long: {len} ports, at most {max}")]
    HostRangeTooLong {
        /// The range as given (`8000-9000`).
        range: String,
        /// The container port it is for (`80/tcp`).
        key: String,
        /// Ports in it.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A rootless sandbox's interfaces sent by a user other than its owner's.
    #[error(
        "sandbox {sandbox} belongs to uid {owner}: uid {caller} may not hand over its interfaces"
    )]
    NotOwner {
        /// The sandbox's name.
        sandbox: String,
        /// Its owner's uid.
        owner: u32,
        /// The caller's uid.
        caller: u32,
    },
}
