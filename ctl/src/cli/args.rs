//! The command line, with Docker's subcommands and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Docker-style container networks, switched in user space.
#[derive(Debug, Parser)]
#[command(name = "tapnet", version)]
pub(crate) struct Cli {
    /// State directory [default: /run/tapnet as root, $XDG_RUNTIME_DIR/tapnet otherwise;
    /// env TAPNET_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Daemon socket to talk to [default: unix://<state-dir>/tapnet.sock; env TAPNET_HOST]
    #[arg(short = 'H', long, global = true, value_name = "unix://PATH")]
    pub(crate) host: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces other tools can join)
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Run a command in a new sandbox
    Run(RunArgs),
    /// List port mappings or a specific mapping for the sandbox
    Port(PortArgs),
    /// Show the engine's counters
    Stats(StatsArgs),
    /// Manage Swarm
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage Swarm nodes
    #[command(subcommand)]
    Node(NodeCmd),
    /// Run the daemon
    Daemon(DaemonArgs),
    /// Build Docker's single-host demo (network pets, sandboxes db and web), check it, remove it
    Demo(DemoArgs),
    /// A server the demo runs inside a sandbox
    #[command(hide = true)]
    DemoServer(DemoServerArgs),
    /// The demo's check, run inside a sandbox: ask web for each key
    #[command(hide = true)]
    DemoClient(DemoClientArgs),
    /// The first process of a rootless sandbox (started by `tapnet run`)
    #[command(hide = true)]
    RootlessInit(RootlessInitArgs),
    /// The CNI plugin (`CNI_COMMAND` and the others in the environment, the
    /// configuration on stdin), as a container runtime runs it
    #[command(hide = true)]
    Cni,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// The host's resolv.conf: where names the embedded DNS does not own are forwarded
    /// (its nameservers, re-read when it changes), and the search domains and options
    /// of every sandbox's resolv.conf
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: PathBuf,
    /// The UDP port of swarm gossip (membership and endpoint tables), on the swarm's
    /// advertise address
    #[arg(long, value_name = "PORT", default_value_t = 7946)]
    pub(crate) gossip_port: u16,
    /// Serve Docker's network and IPAM plugin protocols on this socket, where Docker's
    /// engine finds plugins: /run/docker/plugins/tapnet.sock makes the driver `tapnet`
    /// (`docker network create -d tapnet --ipam-driver tapnet`)
    #[arg(long, value_name = "PATH")]
    pub(crate) docker_plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The multi-host overlay deployment instead: three swarm nodes (in network
    /// namespaces as root, on 127.0.0.11-13 without), db and web on different nodes
    #[arg(long)]
    pub(crate) multi_host: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoServerArgs {
    /// `db` or `web`
    #[arg(value_parser = ["db", "web"])]
    pub(crate) role: String,
    /// Address to listen on
    #[arg(long)]
    pub(crate) listen: std::net::SocketAddr,
    /// Where web finds db: HOST:PORT, a name looked up on every request (`db:7000`)
    #[arg(long)]
    pub(crate) db: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoClientArgs {
    /// The web server to ask
    #[arg(long)]
    pub(crate) web: std::net::SocketAddr,
    /// Seconds to keep retrying while the servers start (0: one try)
    #[arg(long, default_value_t = 0)]
    pub(crate) wait: u64,
    /// The keys to ask for
    #[arg(required = true)]
    pub(crate) keys: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCmd {
    /// Create a network
    Create(NetCreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(NetLsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(NetRmArgs),
    /// Connect a sandbox to a network
    Connect(NetConnectArgs),
    /// Disconnect a sandbox from a network
    Disconnect(NetDisconnectArgs),
    /// Remove all unused networks
    Prune(NetPruneArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NetCreateArgs {
    /// Driver to manage the network
    #[arg(short = 'd', long, default_value = "bridge")]
    pub(crate) driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    pub(crate) subnet: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long)]
    pub(crate) ip_range: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    pub(crate) gateway: Vec<String>,
    /// Auxiliary IPv4 or IPv6 addresses used by network driver (name=ip)
    #[arg(long, value_name = "NAME=IP")]
    pub(crate) aux_address: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub(crate) internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    pub(crate) attachable: bool,
    /// Create swarm routing-mesh network
    #[arg(long)]
    pub(crate) ingress: bool,
    /// Create a configuration only network
    #[arg(long)]
    pub(crate) config_only: bool,
    /// The network from which to copy the configuration
    #[arg(long, value_name = "NETWORK")]
    pub(crate) config_from: Option<String>,
    /// Enable or disable IPv4 address assignment
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub(crate) ipv4: Option<bool>,
    /// Enable or disable IPv6 address assignment
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub(crate) ipv6: Option<bool>,
    /// IP Address Management Driver
    #[arg(long, default_value = "default")]
    pub(crate) ipam_driver: String,
    /// Set IPAM driver specific options
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) ipam_opt: Vec<String>,
    /// Set driver specific options (e.g. com.docker.network.driver.mtu=1400)
    #[arg(short = 'o', long, value_name = "KEY=VALUE")]
    pub(crate) opt: Vec<String>,
    /// Set metadata on a network
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// Control the network's scope
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Network name
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct NetLsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub(crate) filter: Vec<String>,
    /// Format output: table, json, or a template like '{{.Name}}'
    #[arg(long)]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Format output: json (the default) or a template like '{{.Name}}'
    #[arg(short, long)]
    pub(crate) format: Option<String>,
    /// Objects to inspect (names, ids or unique id prefixes)
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NetRmArgs {
    /// Do not error if the network does not exist
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Networks to remove
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NetConnectArgs {
    /// IPv4 address
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// IPv6 address
    #[arg(long)]
    pub(crate) ip6: Option<String>,
    /// Add network-scoped alias for the sandbox
    #[arg(long)]
    pub(crate) alias: Vec<String>,
    /// Driver options for the network
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) driver_opt: Vec<String>,
    /// Highest gw-priority provides the default gateway
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(crate) gw_priority: i64,
    /// Network
    pub(crate) network: String,
    /// Sandbox
    pub(crate) sandbox: String,
}

#[derive(Debug, Args)]
pub(crate) struct NetDisconnectArgs {
    /// Force the sandbox to disconnect from a network
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Network
    pub(crate) network: String,
    /// Sandbox
    pub(crate) sandbox: String,
}

#[derive(Debug, Args)]
pub(crate) struct NetPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Provide filter values (e.g. "until=24h", "label=k=v", "label!=k")
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) filter: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCmd {
    /// Create a long-lived sandbox and print its id
    Create(SandboxCreateArgs),
    /// List sandboxes
    #[command(visible_alias = "list")]
    Ls(SandboxLsArgs),
    /// Display detailed information on one or more sandboxes
    Inspect(InspectArgs),
    /// Remove one or more sandboxes
    #[command(visible_alias = "remove")]
    Rm(SandboxRmArgs),
}

/// Where a new sandbox goes: shared by `sandbox create` and `run`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct SandboxSpec {
    /// Assign a name to the sandbox
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Connect to a network (repeatable; the first gets --ip and --network-alias)
    #[arg(long, visible_alias = "net", value_name = "NETWORK")]
    pub(crate) network: Vec<String>,
    /// IPv4 address on the first network
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// Add a network-scoped alias on the first network
    #[arg(long, visible_alias = "net-alias", value_name = "ALIAS")]
    pub(crate) network_alias: Vec<String>,
    /// Sandbox host name
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Publish a sandbox's port to the host ([IP:][HOSTPORT[-END]:]CTRPORT[-END][/tcp|udp];
    /// repeatable)
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub(crate) publish: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SandboxCreateArgs {
    #[command(flatten)]
    pub(crate) spec: SandboxSpec,
}

#[derive(Debug, Args)]
pub(crate) struct SandboxLsArgs {
    /// Only display sandbox IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Format output: table, json, or a template like '{{.Name}}'
    #[arg(long)]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SandboxRmArgs {
    /// Do not error if the sandbox does not exist
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Sandboxes to remove
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) spec: SandboxSpec,
    /// Make the sandbox rootless: the command's own user and network namespace holds
    /// its interfaces (always so when tapnet runs without root)
    #[arg(long)]
    pub(crate) rootless: bool,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub(crate) cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RootlessInitArgs {
    /// The daemon's API socket
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: PathBuf,
    /// The sandbox's id
    #[arg(long, value_name = "ID")]
    pub(crate) sandbox: String,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub(crate) cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PortArgs {
    /// Format output: json (the mappings as `Ports` in `sandbox inspect`)
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// Sandbox: name, id or unique id prefix
    pub(crate) sandbox: String,
    /// The sandbox's port, and optionally its protocol (`80`, `53/udp`)
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub(crate) port: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Format output: table or json
    #[arg(long)]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SwarmCmd {
    /// Initialize a swarm
    Init(SwarmInitArgs),
    /// Join a swarm as a node and/or manager
    Join(SwarmJoinArgs),
    /// Manage join tokens
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave(SwarmLeaveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SwarmInitArgs {
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long)]
    pub(crate) advertise_addr: Option<String>,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub(crate) listen_addr: String,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long)]
    pub(crate) data_path_addr: Option<String>,
    /// Port number to use for data path traffic (1024 - 49151). If no value is set or is
    /// set to 0, the default port (4789) is used.
    #[arg(long, default_value_t = 0)]
    pub(crate) data_path_port: u32,
    /// Force create a new cluster from current state
    #[arg(long)]
    pub(crate) force_new_cluster: bool,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, default_value = "active")]
    pub(crate) availability: String,
}

#[derive(Debug, Args)]
pub(crate) struct SwarmJoinArgs {
    /// Token for entry into the swarm
    #[arg(long)]
    pub(crate) token: String,
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long)]
    pub(crate) advertise_addr: Option<String>,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub(crate) listen_addr: String,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long)]
    pub(crate) data_path_addr: Option<String>,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, default_value = "active")]
    pub(crate) availability: String,
    /// A manager of the swarm
    #[arg(value_name = "HOST:PORT")]
    pub(crate) remote: String,
}

#[derive(Debug, Args)]
pub(crate) struct JoinTokenArgs {
    /// Only display token
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// `worker` or `manager`
    #[arg(value_name = "worker|manager")]
    pub(crate) role: String,
}

#[derive(Debug, Args)]
pub(crate) struct SwarmLeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCmd {
    /// List nodes in the swarm
    #[command(visible_alias = "list")]
    Ls(NodeLsArgs),
    /// Display detailed information on one or more nodes
    Inspect(NodeInspectArgs),
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote(NodeNamesArgs),
    /// Demote one or more nodes from manager in the swarm
    Demote(NodeNamesArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NodeLsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Filter output based on conditions provided
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub(crate) filter: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeInspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pub(crate) pretty: bool,
    /// Format output: json (the default) or a template like '{{.ID}}'
    #[arg(short, long)]
    pub(crate) format: Option<String>,
    /// Nodes to inspect (IDs, unique ID prefixes, hostnames, or `self`)
    #[arg(required = true, value_name = "self|NODE")]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeRmArgs {
    /// Force remove a node from the swarm
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Nodes to remove
    #[arg(required = true, value_name = "NODE")]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeNamesArgs {
    /// Nodes (IDs, unique ID prefixes or hostnames)
    #[arg(required = true, value_name = "NODE")]
    pub(crate) names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tapnet").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn network_create_takes_dockers_flags() {
        let cli = parse(&[
            "network",
            "create",
            "-d",
            "bridge",
            "--subnet",
            "10.1.0.0/16",
            "--subnet",
            "10.2.0.0/16",
            "--ip-range",
            "10.1.1.0/24",
            "--gateway",
            "10.1.0.254",
            "--aux-address",
            "r=10.1.0.3",
            "--internal",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--label",
            "team=a",
            "--ipv6",
            "pets",
        ]);
        let Command::Network(NetworkCmd::Create(a)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(a.name, "pets");
        assert_eq!(a.subnet, ["10.1.0.0/16", "10.2.0.0/16"]);
        assert_eq!(a.opt, ["com.docker.network.driver.mtu=1400"]);
        assert!(a.internal && !a.attachable);
        assert_eq!((a.ipv4, a.ipv6), (None, Some(true)));
        let cli = parse(&["network", "create", "--ipv4=false", "x"]);
        let Command::Network(NetworkCmd::Create(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.ipv4, a.driver.as_str()), (Some(false), "bridge"));
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["network", "ls", "--state-dir", "/x", "-q", "-f", "name=a"]);
        assert_eq!(cli.state_dir, Some(PathBuf::from("/x")));
        let cli = parse(&["-H", "unix:///s", "stats", "--format", "json"]);
        assert_eq!(cli.host.as_deref(), Some("unix:///s"));
    }

    #[test]
    fn run_takes_the_command_after_its_flags() {
        let cli = parse(&[
            "run",
            "--name",
            "web",
            "--network",
            "pets",
            "--network",
            "db",
            "--ip",
            "10.0.0.5",
            "--network-alias",
            "w",
            "-p",
            "8080:80",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]);
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.spec.network, ["pets", "db"]);
        assert_eq!(r.spec.ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(r.spec.publish, ["8080:80"]);
        assert_eq!(r.cmd, ["sh", "-c", "exit 3"]);
        // Without `--`, everything from the first positional on is the command.
        let cli = parse(&["run", "--net", "host", "ls", "-l", "--name", "x"]);
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.spec.network, ["host"]);
        assert_eq!(r.cmd, ["ls", "-l", "--name", "x"]);
    }

    #[test]
    fn swarm_and_node_flags() {
        let cli = parse(&[
            "swarm",
            "init",
            "--advertise-addr",
            "10.0.0.1",
            "--data-path-port",
            "4790",
        ]);
        let Command::Swarm(SwarmCmd::Init(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.advertise_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            (a.listen_addr.as_str(), a.data_path_port),
            ("0.0.0.0:2377", 4790)
        );
        let cli = parse(&[
            "swarm",
            "join",
            "--token",
            "SWMTKN-1-x",
            "--listen-addr",
            "10.0.0.2:2377",
            "10.0.0.1:2377",
        ]);
        let Command::Swarm(SwarmCmd::Join(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.token.as_str(), a.remote.as_str()),
            ("SWMTKN-1-x", "10.0.0.1:2377")
        );
        assert!(Cli::try_parse_from(["tapnet", "swarm", "join", "10.0.0.1:2377"]).is_err());
        let cli = parse(&["swarm", "join-token", "-q", "worker"]);
        let Command::Swarm(SwarmCmd::JoinToken(a)) = cli.command else {
            panic!()
        };
        assert!(a.quiet && a.role == "worker");
        let cli = parse(&["swarm", "leave", "--force"]);
        assert!(matches!(
            cli.command,
            Command::Swarm(SwarmCmd::Leave(SwarmLeaveArgs { force: true }))
        ));
        let cli = parse(&["node", "ls", "-q"]);
        assert!(matches!(
            cli.command,
            Command::Node(NodeCmd::Ls(NodeLsArgs { quiet: true, .. }))
        ));
        let cli = parse(&["node", "inspect", "--pretty", "self", "w1"]);
        let Command::Node(NodeCmd::Inspect(a)) = cli.command else {
            panic!()
        };
        assert!(a.pretty && a.names == ["self", "w1"]);
        let cli = parse(&["node", "rm", "-f", "a", "b"]);
        let Command::Node(NodeCmd::Rm(a)) = cli.command else {
            panic!()
        };
        assert!(a.force && a.names == ["a", "b"]);
        let cli = parse(&["node", "promote", "a", "b"]);
        let Command::Node(NodeCmd::Promote(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.names, ["a", "b"]);
        assert!(Cli::try_parse_from(["tapnet", "node", "demote"]).is_err());
    }

    #[test]
    fn sandbox_and_connect_flags() {
        let cli = parse(&["sandbox", "create", "--name", "db", "--network", "pets"]);
        let Command::Sandbox(SandboxCmd::Create(c)) = cli.command else {
            panic!()
        };
        assert_eq!(c.spec.name.as_deref(), Some("db"));
        let cli = parse(&[
            "network", "connect", "--ip", "10.0.0.9", "--alias", "a", "pets", "db",
        ]);
        let Command::Network(NetworkCmd::Connect(c)) = cli.command else {
            panic!()
        };
        assert_eq!((c.network.as_str(), c.sandbox.as_str()), ("pets", "db"));
        assert!(Cli::try_parse_from(["tapnet", "network", "rm"]).is_err());
        assert!(Cli::try_parse_from(["tapnet", "run"]).is_err());
    }
}
