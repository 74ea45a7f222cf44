//! A container image without a registry: a root file system made of the machine's static
//! busybox, as a tar archive for `docker import` and `podman import`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::sys::{ok_stdout, run_within};

/// The static busybox the image is made of (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets the image must have (each a symlink in `/bin` to `/bin/busybox`; every
/// other applet of the binary is linked too).
pub const APPLETS: &[&str] = &[
    "sh", "ping", "nc", "ip", "ifconfig", "sleep", "cat", "echo", "wget", "httpd", "hostname",
    "ls", "route", "nslookup", "true", "false", "timeout",
];

/// The change `import` applies: the image's command.
pub(crate) const IMPORT_CHANGE: &str = r#"CMD ["sh"]"#;

/// Writes the busybox root file system to `dest` as a tar archive: `/bin/busybox` (a
/// copy of [`BUSYBOX`], which must be statically linked), a symlink in `/bin` for each
/// of its applets (at least [`APPLETS`]), `/etc` with `passwd`, `group`, `hosts`,
/// `hostname` and an empty `resolv.conf`, and empty `/tmp` (1777), `/root`, `/proc`,
/// `/sys`, `/dev`, `/run`, `/var/www`. Staged in a directory next to `dest` (removed),
/// archived with the system `tar` as uid and gid 0.
pub fn busybox_tar(dest: &Path) -> Result<(), String> {
    let mut stage = dest.as_os_str().to_owned();
    stage.push(".rootfs");
    let stage = PathBuf::from(stage);
    let _ = std::fs::remove_dir_all(&stage);
    let made = stage_rootfs(&stage).and_then(|()| {
        ok_stdout(
            "tar",
            run_within(
                Command::new("tar")
                    .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
                    .arg(&stage)
                    .arg("-cf")
                    .arg(dest)
                    .arg("."),
                Duration::from_secs(60),
            ),
        )
        .map(drop)
    });
    let _ = std::fs::remove_dir_all(&stage);
    made
}

/// Lays the root file system out in `root`.
fn stage_rootfs(root: &Path) -> Result<(), String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {p:?}: {e}");
    let list = ok_stdout(
        "busybox --list",
        run_within(Command::new(BUSYBOX).arg("--list"), Duration::from_secs(10)),
    )?;
    if has_interpreter(Path::new(BUSYBOX))? {
        return Err(format!(
            "{BUSYBOX} is dynamically linked, and the image has no libc: install busybox-static"
        ));
    }
    let applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if let Some(missing) = APPLETS.iter().find(|a| !applets.contains(a)) {
        return Err(format!("{BUSYBOX} has no {missing} applet"));
    }
    for d in [
        "bin", "etc", "tmp", "root", "proc", "sys", "dev", "run", "var/www",
    ] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|e| io("create", &p, e))?;
    }
    let bin = root.join("bin");
    let bb = bin.join("busybox");
    std::fs::copy(BUSYBOX, &bb).map_err(|e| io("copy busybox to", &bb, e))?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &bb, e))?;
    for a in applets {
        if a == "busybox" || a.contains('/') {
            continue;
        }
        let link = bin.join(a);
        std::os::unix::fs::symlink("busybox", &link).map_err(|e| io("symlink", &link, e))?;
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        ("etc/hostname", "busybox\n"),
        ("etc/resolv.conf", ""),
    ];
    for (f, text) in files {
        let p = root.join(f);
        std::fs::write(&p, text).map_err(|e| io("write", &p, e))?;
    }
    for (d, mode) in [("tmp", 0o1777), ("root", 0o700)] {
        let p = root.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", &p, e))?;
    }
    Ok(())
}

/// Whether the ELF executable at `path` names a program interpreter (`PT_INTERP`: it is
/// dynamically linked). Only little-endian ELF files are read; any other is taken as
/// static.
fn has_interpreter(path: &Path) -> Result<bool, String> {
    let b = std::fs::read(path).map_err(|e| format!("read {path:?}: {e}"))?;
    if !b.starts_with(b"\x7fELF") || b.get(5) != Some(&1) {
        return Ok(false);
    }
    let u = |at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        Some(s.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    // (e_phoff, its size, e_phentsize, e_phnum) for ELF32 and ELF64.
    let (off, size, ent, num) = match b[4] {
        1 => (0x1c, 4, 0x2a, 0x2c),
        2 => (0x20, 8, 0x36, 0x38),
        _ => return Ok(false),
    };
    let bad = || format!("{path:?}: a truncated ELF header");
    let phoff = u(off, size).ok_or_else(bad)? as usize;
    let phentsize = u(ent, 2).ok_or_else(bad)? as usize;
    let phnum = u(num, 2).ok_or_else(bad)? as usize;
    const PT_INTERP: u64 = 3;
    Ok((0..phnum).any(|i| u(phoff + i * phentsize, 4) == Some(PT_INTERP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_from_static_executables() {
        // The test's own executable is dynamically linked (the Rust default on Linux).
        let me = std::env::current_exe().expect("the test's path");
        assert_eq!(has_interpreter(&me), Ok(true));
        if Path::new(BUSYBOX).exists() {
            let dynamic = Command::new("ldd")
                .arg(BUSYBOX)
                .output()
                .is_ok_and(|o| o.status.success());
            assert_eq!(has_interpreter(Path::new(BUSYBOX)), Ok(dynamic));
        }
        let not_elf = std::env::temp_dir().join(format!("tn-not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, "#!/bin/sh\n").unwrap();
        assert_eq!(has_interpreter(&not_elf), Ok(false));
        let _ = std::fs::remove_file(&not_elf);
    }
}
