//! Processes that own rootless sandboxes, as `/proc` shows them: a PID with its start
//! time, so that a reused PID is not taken for the process that made the sandbox.

use crate::daemon::model::RootlessOwner;

/// The owner record of process `pid` as it runs now, or `None` if it does not run (no
/// such process, or a zombie that no one reaped: its namespaces are gone already).
pub(super) fn owner_of(pid: u32) -> Option<RootlessOwner> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start_time) = state_and_start_time(&stat)?;
    if matches!(state, 'Z' | 'X') {
        return None;
    }
    Some(RootlessOwner { pid, start_time })
}

/// Whether the process recorded as `owner` still runs (same PID, same start time).
pub(super) fn owner_alive(owner: &RootlessOwner) -> bool {
    owner_of(owner.pid).is_some_and(|now| now == *owner)
}

/// The effective uid process `owner` runs as (`Uid:` in `/proc/PID/status`, as this
/// process's user namespace sees it: the uid `SO_PEERCRED` gives for its connections),
/// or `None` if it no longer runs.
pub(super) fn uid_of(owner: &RootlessOwner) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", owner.pid)).ok()?;
    let uid = effective_uid(&status)?;
    // Read after the status: the PID is still the recorded process's.
    owner_alive(owner).then_some(uid)
}

/// The second field of the `Uid:` line of a `/proc/PID/status` text.
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Fields 3 (`state`) and 22 (`starttime`) of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn state_and_start_time(stat: &str) -> Option<(char, u64)> {
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    // Field 22 is the 19th after field 3.
    Some((state, rest.nth(18)?.parse().ok()?))
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
    fn the_effective_uid_is_the_second_of_status() {
        assert_eq!(
            effective_uid("Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\n"),
            Some(1001)
        );
        assert_eq!(effective_uid("Name:\tx\n"), None);
        let me = owner_of(std::process::id()).expect("own /proc entry");
        assert_eq!(uid_of(&me), Some(nix::unistd::geteuid().as_raw()));
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
