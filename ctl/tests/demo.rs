//! `tapnet demo` runs end to end and leaves nothing behind (root only).

use std::process::Command;

fn sandbox_namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("tapnet-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn demo_builds_checks_and_removes() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: tapnet demo needs root and /dev/net/tun");
        return;
    }
    let before = sandbox_namespaces();
    let out = Command::new(env!("CARGO_BIN_EXE_tapnet"))
        .arg("demo")
        .output()
        .expect("run tapnet demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("FAIL"), "{text}");
    assert_eq!(text.matches("  ok    client -> web").count(), 3, "{text}");
    assert!(
        text.contains("stranger (network other) cannot reach web"),
        "{text}"
    );
    // The demo's own namespaces are gone (others' tests may have theirs meanwhile).
    let after = sandbox_namespaces();
    assert!(
        after
            .iter()
            .all(|n| before.contains(n) || !text.contains(n)),
        "left behind: {after:?}"
    );
}
