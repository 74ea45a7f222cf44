//! `-p` specs through `tapnet_nat::portspec` (Docker's `ParsePortSpec`), plus the
//! container-side keys (`80/tcp`), port ranges and host addresses on their own.
//!
//! Invariants: a parsed spec yields at least one mapping, none with container port 0,
//! host ranges with start ≤ end; each mapping prints (`Display`) as a spec that parses
//! back to exactly that mapping; `key()` parses back with `parse_port_key`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet_nat::portspec;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = portspec::parse_port_range(s);
    let _ = portspec::parse_host_ip(s);
    if let Ok((port, proto)) = portspec::parse_port_key(s) {
        let _ = (port, proto.as_str());
    }
    let Ok(mappings) = portspec::parse(s) else {
        return;
    };
    assert!(!mappings.is_empty(), "{s:?} parsed to nothing");
    for m in &mappings {
        assert_ne!(m.container_port, 0, "{s:?}");
        if let Some((a, b)) = m.host_ports {
            assert!(a <= b, "{s:?}: host range {a}-{b}");
        }
        let printed = m.to_string();
        let back = portspec::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} → {printed:?} does not parse: {e}"));
        assert_eq!(back, [*m], "{s:?} → {printed:?}");
        let key = portspec::parse_port_key(&m.key()).expect("a mapping's key parses");
        assert_eq!(key, (m.container_port, m.proto));
    }
});
