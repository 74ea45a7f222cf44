//! `tapnet`: the command-line client of the tapnet daemon, with Docker's words, flags and
//! output where Docker has them, and `tapnet daemon`, which runs the engine.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command};
use cli::client::Client;
use cli::{cni, demo, demo_multi, network, node, port, rootless_init, run, sandbox, stats, swarm};

/// The state directory: `--state-dir`, `$TAPNET_STATE_DIR`, `/run/tapnet` as root,
/// `$XDG_RUNTIME_DIR/tapnet` otherwise (`/tmp/tapnet-<uid>` without one).
fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = flag.or_else(|| env("TAPNET_STATE_DIR").map(PathBuf::from)) {
        return d;
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/tapnet");
    }
    match env("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("tapnet"),
        None => PathBuf::from(format!("/tmp/tapnet-{uid}")),
    }
}

/// The daemon socket: `--host`/`$TAPNET_HOST` (`unix:///path` or a path), else
/// `<state-dir>/tapnet.sock`, once the state directory is found to be this user's or
/// root's and writable by no one else (a socket another user stood up there would be
/// handed a sandbox's TAPs).
fn socket_path(host: Option<String>, state_dir: PathBuf) -> anyhow::Result<PathBuf> {
    let host = host.or_else(|| std::env::var("TAPNET_HOST").ok().filter(|h| !h.is_empty()));
    match host {
        None => {
            tapnet_ctl::daemon::statedir::check_client(&state_dir)?;
            Ok(state_dir.join("tapnet.sock"))
        }
        Some(h) => match h.split_once("://") {
            Some(("unix", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
            None if !h.is_empty() => Ok(PathBuf::from(h)),
            _ => anyhow::bail!(
                "invalid --host {h:?}: tapnet daemons listen on unix sockets (unix:///path)"
            ),
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    // First, before anything could start a thread: it unshares a user namespace.
    if let Command::RootlessInit(a) = cli.command {
        return Ok(rootless_init::init(a));
    }
    if let Command::Cni = cli.command {
        return Ok(cni::main());
    }
    let state_dir = state_dir(cli.state_dir);
    if let Command::Daemon(a) = cli.command {
        if let Err(e) =
            tapnet_ctl::daemon::run_daemon(state_dir, a.resolv_conf, a.gossip_port, a.docker_plugin)
        {
            eprintln!("tapnet daemon: {}", tapnet_ctl::daemon::chain(&e));
            return Ok(e.exit_status());
        }
        return Ok(0);
    }
    match &cli.command {
        Command::Demo(a) if a.multi_host => return demo_multi::run(),
        Command::Demo(_) => return demo::run(),
        Command::DemoServer(a) => return demo::server(&a.role, a.listen, a.db.as_deref()),
        Command::DemoClient(a) => return demo::client(a.web, a.wait, &a.keys),
        _ => {}
    }
    let client = Client::new(&socket_path(cli.host, state_dir)?)?;
    match cli.command {
        Command::Network(cmd) => network::run(&client, cmd),
        Command::Sandbox(cmd) => sandbox::run(&client, cmd),
        Command::Run(args) => run::run(&client, args),
        Command::Port(args) => port::run(&client, args),
        Command::Stats(args) => stats::run(&client, args),
        Command::Swarm(cmd) => swarm::run(&client, cmd),
        Command::Node(cmd) => node::run(&client, cmd),
        Command::Daemon(_)
        | Command::Demo(_)
        | Command::DemoServer(_)
        | Command::DemoClient(_)
        | Command::RootlessInit(_)
        | Command::Cni => Ok(0),
    }
}

fn main() -> ExitCode {
    // A container runtime runs the binary as its CNI plugin (`type: tapnet`).
    if cni::invoked_as_plugin() {
        return ExitCode::from(cni::main());
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Daemon errors already read "Error response from daemon: …", like docker's.
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_from_host_or_state_dir() {
        let sd = PathBuf::from("/s");
        assert_eq!(
            socket_path(None, sd.clone()).unwrap(),
            PathBuf::from("/s/tapnet.sock")
        );
        assert_eq!(
            socket_path(Some("unix:///x/y.sock".into()), sd.clone()).unwrap(),
            PathBuf::from("/x/y.sock")
        );
        assert_eq!(
            socket_path(Some("/x/z.sock".into()), sd.clone()).unwrap(),
            PathBuf::from("/x/z.sock")
        );
        assert!(socket_path(Some("tcp://1.2.3.4:2375".into()), sd).is_err());
    }

    #[test]
    fn a_socket_in_a_dir_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tapnet-main-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let got = socket_path(None, dir.clone());
        std::fs::remove_dir_all(&dir).unwrap();
        let e = got.unwrap_err().to_string();
        assert!(e.contains("it is writable by others"), "{e}");
    }

    #[test]
    fn state_dir_flag_wins() {
        assert_eq!(state_dir(Some(PathBuf::from("/d"))), PathBuf::from("/d"));
    }
}
