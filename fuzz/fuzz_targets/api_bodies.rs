//! JSON bodies into the API's types (`tapnet_api`), as the daemon's server reads
//! requests and the CLI reads answers, then the port bindings of a sandbox request
//! through the parsers the daemon checks them with (`tapnet_nat::portspec`).
//!
//! The first byte picks the type; the rest is the body. The daemon's option checks
//! (`ctl/src/daemon/core/options.rs`) are private to its core and reached only through
//! a whole daemon with a store, so they are not driven here.
//!
//! Invariants: whatever parses serializes, and the serialized form parses back to the
//! same value (no field is lost or changed on the way, as a client that echoes a body
//! back would see it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tapnet_api as api;
use tapnet_nat::portspec;

fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let v: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_vec(&v).expect("a parsed body serializes");
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "{} does not parse back: {e}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, v, "{}", String::from_utf8_lossy(&json));
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => drop(round_trip::<api::NetworkCreateRequest>(body)),
        1 => drop(round_trip::<api::NetworkConnectRequest>(body)),
        2 => drop(round_trip::<api::NetworkDisconnectRequest>(body)),
        3 => {
            if let Some(req) = round_trip::<api::SandboxCreateRequest>(body) {
                for (key, bindings) in &req.port_bindings {
                    let _ = portspec::parse_port_key(key);
                    for b in bindings {
                        let _ = portspec::parse_host_ip(&b.host_ip);
                        if let Some((a, z)) = portspec::parse_port_range(&b.host_port) {
                            assert!(a <= z);
                        }
                    }
                }
            }
        }
        4 => drop(round_trip::<api::SandboxAdoptRequest>(body)),
        5 => drop(round_trip::<api::EndpointSettings>(body)),
        6 => drop(round_trip::<api::NetworkInspect>(body)),
        7 => drop(round_trip::<api::SandboxInspect>(body)),
        8 => drop(round_trip::<api::StatsResponse>(body)),
        9 => drop(round_trip::<api::ErrorResponse>(body)),
        10 => drop(round_trip::<api::VersionResponse>(body)),
        _ => drop(round_trip::<api::NetworkCreateResponse>(body)),
    }
});
