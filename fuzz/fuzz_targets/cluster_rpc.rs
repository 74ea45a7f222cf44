//! The swarm's management port and its messages: bytes as every frame body the port
//! reads (`tapnet_ctl::cluster::decode_untrusted`: a hello, a welcome, a Raft or app
//! request, a response, each re-encoded and decoded again when it decodes), and as
//! the swarm service's app messages and gossiped endpoint values
//! (`tapnet_ctl::swarm::rpc`).
//!
//! Invariants: no decoder panics; what decodes encodes and decodes again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet_ctl::swarm::rpc::{self, AppReq, AppResp, EndpointValue};

fuzz_target!(|data: &[u8]| {
    let _ = tapnet_ctl::cluster::decode_untrusted(data);
    if let Ok(req) = rpc::decode::<AppReq>(data) {
        assert!(rpc::decode::<AppReq>(&rpc::encode(&req)).is_ok());
    }
    if let Ok(resp) = rpc::decode::<AppResp>(data) {
        assert!(rpc::decode::<AppResp>(&rpc::encode(&resp)).is_ok());
    }
    if let Some(v) = EndpointValue::decode(data) {
        assert_eq!(EndpointValue::decode(&v.encode()), Some(v));
    }
});
