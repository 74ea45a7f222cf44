//! Rootless sandboxes: a daemon and `tapnet run` with no privilege at all.
//!
//! A root daemon makes a sandbox's named namespace and persistent TAPs itself. A daemon
//! without root cannot, so for a rootless sandbox the work is split:
//!
//! 1. `tapnet run` asks for the sandbox with `"Rootless": true` in `POST /sandboxes`.
//!    The daemon allocates the endpoints (addresses, MACs, interface names) and commits
//!    them as for any sandbox, but makes no namespace and no TAP. It records the caller's
//!    PID (`SO_PEERCRED`) as the sandbox's owner.
//! 2. `tapnet run` starts a child (`tapnet rootless-init`, a re-exec of the same binary,
//!    so that `unshare(CLONE_NEWUSER)` runs in a fresh single-threaded process) that
//!    enters a new user and network namespace, maps its own uid and gid, and fetches the
//!    interfaces to make: `GET /sandboxes/{id}/interfaces` ([`SandboxInterfaces`]).
//! 3. Root in its namespaces, the child creates each TAP (`IFF_VNET_HDR`, not
//!    persistent), sets MAC, MTU, address and default route over netlink, and sends the
//!    TAP fds with `POST /sandboxes/{id}/interfaces` ([`SandboxAdoptRequest`]) over the
//!    API socket itself: the fds travel as `SCM_RIGHTS` on the request's bytes. The
//!    server's listener ([`super::api::fdpass`]) receives with `recvmsg` and keeps the fds
//!    with the connection, where the handler takes them. The same socket, the same
//!    permission (its mode) and the same peer credentials as every other call: no second
//!    socket to secure and find.
//! 4. The daemon checks each fd with `TUNGETIFF` (a TAP, named as the endpoint's
//!    interface), attaches it to the network's bridge domain like a root sandbox's TAP,
//!    and records the sender (the child) as the owner. The child then starts the command
//!    as its own child and stays as the sandbox's keeper until the command ends.
//!
//! The keeper and the daemon hold the TAPs: the interfaces disappear once the command
//! has ended and the sandbox is removed. A rootless sandbox has no path under
//! `/run/netns`; its `NetnsPath` is `/proc/PID/ns/net` of its owner (the keeper).
//!
//! On restart the daemon's TAP fds are gone, but the keeper's are not: the interfaces
//! live on, with their addresses and routes. Rootless sandboxes whose owner has exited
//! are removed; one whose owner still runs keeps its records and its published ports
//! are bound again, and its keeper, seeing a new socket file, sends the TAPs again
//! (step 3), which the daemon attaches (step 4). Dead owners are also swept whenever a
//! new rootless sandbox is created.

use super::model::RootlessOwner;

/// The owner record of process `pid` as it runs now, or `None` if it does not run (no
/// such process, or a zombie that no one reaped: its namespaces are gone already).
pub fn owner_of(pid: u32) -> Option<RootlessOwner> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start_time) = state_and_start_time(&stat)?;
    if matches!(state, 'Z' | 'X') {
        return None;
    }
    Some(RootlessOwner { pid, start_time })
}

/// Whether the process recorded as `owner` still runs (same PID, same start time).
pub fn owner_alive(owner: &RootlessOwner) -> bool {
    owner_of(owner.pid).is_some_and(|now| now == *owner)
}

/// Fields 3 (`state`) and 22 (`starttime`) of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn state_and_start_time(stat: &str) -> Option<(char, u64)> {
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    // Field 22 is the 19th after field 3.
    Some((state, rest.nth(18)?.parse().ok()?))
}

/// The namespace path shown for a rootless sandbox.
pub fn netns_path(owner: &RootlessOwner) -> String {
    format!("/proc/{}/ns/net", owner.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_counts_after_the_command_name() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(state_and_start_time(line), Some(('S', 987_654)));
        assert_eq!(state_and_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = owner_of(std::process::id()).expect("own /proc entry");
        assert!(owner_alive(&me));
        let reused = RootlessOwner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!owner_alive(&reused));
    }
}
