//! The `tapnet` CNI plugin: what a container runtime (podman's CNI backend, containerd,
//! CRI-O) runs to put a container on a tapnet network. The `tapnet` binary is the
//! plugin when it is run with `CNI_COMMAND` in its environment and no arguments (the
//! runtime finds it as the conflist's `type`, `tapnet`, in its plugin directory: a
//! symlink to the binary), or as `tapnet cni`.
//!
//! It speaks the CNI protocol (spec 1.1.0, also 1.0.0 and 0.4.0): the operation and the
//! attachment in `CNI_*` variables, the plugin configuration on stdin, the result or an
//! error object on stdout, exit status 0 or 1. Every operation is one call to the
//! daemon (`POST /cni/...` on its socket), which makes the interface: a TAP in the
//! container's namespace, addressed from tapnet's IPAM, in the network's datapath.
//!
//! The configuration's own keys: `network`, the tapnet network (name or id; default the
//! configuration's `name`), and `socket`, the daemon's socket (default
//! `/run/tapnet/tapnet.sock`). `ipam` is refused: tapnet's own IPAM gives the address.
//! `runtimeConfig.portMappings` (a conflist that declares the `portMappings` capability;
//! containerd's CRI plugin fills it from a pod's `hostPort`s) are published by the daemon
//! as a sandbox's `-p` ports. Not for podman, which binds its published ports itself.

use std::io::Read;
use std::net::IpAddr;

use serde_json::{Value, json};
use tapnet_api::{
    CniAddRequest, CniAttachmentInfo, CniAttachmentRef, CniGcRequest, CniGcResponse,
    CniStatusRequest, PortBinding, PortMap,
};

use super::client::{Client, ClientError};

/// The spec versions this plugin speaks (the result format of each).
pub(crate) const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The daemon's socket when the configuration names none: a root daemon's.
pub(crate) const DEFAULT_SOCKET: &str = "/run/tapnet/tapnet.sock";

/// The spec's error codes, and tapnet's own (100 and up).
mod code {
    pub(super) const INCOMPATIBLE_VERSION: u32 = 1;
    pub(super) const UNSUPPORTED_FIELD: u32 = 2;
    pub(super) const CONTAINER_UNKNOWN: u32 = 3;
    pub(super) const INVALID_ENV: u32 = 4;
    pub(super) const IO: u32 = 5;
    pub(super) const DECODE: u32 = 6;
    pub(super) const INVALID_CONFIG: u32 = 7;
    pub(super) const TRY_AGAIN: u32 = 11;
    pub(super) const NOT_AVAILABLE: u32 = 50;
    /// The daemon refused or failed otherwise.
    pub(super) const DAEMON: u32 = 100;
    /// ADD of an attachment that exists, or of an interface the namespace has.
    pub(super) const EXISTS: u32 = 101;
    /// CHECK found the attachment not as ADD left it.
    pub(super) const CHECK_FAILED: u32 = 102;
}

/// A CNI error object.
#[derive(Debug)]
pub(crate) struct CniError {
    code: u32,
    msg: String,
    details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

/// Whether this process was started as a CNI plugin: `CNI_COMMAND` set, no arguments.
pub(crate) fn invoked_as_plugin() -> bool {
    std::env::var_os("CNI_COMMAND").is_some() && std::env::args_os().len() == 1
}

/// Run the plugin: read the environment and stdin, print the result or error object,
/// return the exit status.
pub(crate) fn main() -> u8 {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let inv = Invocation {
        command: env("CNI_COMMAND").unwrap_or_default(),
        container_id: env("CNI_CONTAINERID"),
        netns: env("CNI_NETNS"),
        ifname: env("CNI_IFNAME"),
        args: env("CNI_ARGS").unwrap_or_default(),
    };
    let mut stdin = String::new();
    let read = std::io::stdin().read_to_string(&mut stdin);
    let (version, out) = match read {
        Ok(_) => run(&inv, &stdin),
        Err(e) => (
            "1.1.0".to_string(),
            Err(CniError::new(
                code::IO,
                "cannot read the configuration",
                e.to_string(),
            )),
        ),
    };
    match out {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let obj = json!({
                "cniVersion": version,
                "code": e.code,
                "msg": e.msg,
                "details": e.details,
            });
            println!("{obj}");
            eprintln!("tapnet CNI plugin: {}: {}", e.msg, e.details);
            1
        }
    }
}

/// The `CNI_*` variables.
#[derive(Clone, Debug, Default)]
pub(crate) struct Invocation {
    pub(crate) command: String,
    pub(crate) container_id: Option<String>,
    pub(crate) netns: Option<String>,
    pub(crate) ifname: Option<String>,
    pub(crate) args: String,
}

/// The plugin configuration's keys the plugin reads.
struct Config {
    version: String,
    network: String,
    socket: String,
    prev_result: Option<Value>,
    raw: Value,
}

/// Run one invocation on configuration `stdin`: the version to answer in, and the
/// result to print (none for DEL, GC and STATUS) or the error.
pub(crate) fn run(inv: &Invocation, stdin: &str) -> (String, Result<Option<Value>, CniError>) {
    if inv.command == "VERSION" {
        // Only `cniVersion` is given; an empty or odd input still gets an answer.
        let v: Value = serde_json::from_str(stdin).unwrap_or(Value::Null);
        let version = v["cniVersion"].as_str().unwrap_or("1.1.0").to_string();
        let out = json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS });
        return (version, Ok(Some(out)));
    }
    let cfg = match parse_config(stdin) {
        Ok(c) => c,
        Err((version, e)) => return (version, Err(e)),
    };
    let out = dispatch(inv, &cfg);
    (cfg.version, out)
}

fn parse_config(stdin: &str) -> Result<Config, (String, CniError)> {
    let fallback = "1.1.0".to_string();
    let raw: Value = serde_json::from_str(stdin).map_err(|e| {
        let err = CniError::new(
            code::DECODE,
            "cannot decode the configuration",
            e.to_string(),
        );
        (fallback.clone(), err)
    })?;
    if !raw.is_object() {
        let err = CniError::new(
            code::DECODE,
            "cannot decode the configuration",
            "it is no JSON object",
        );
        return Err((fallback, err));
    }
    let version = raw["cniVersion"].as_str().unwrap_or_default().to_string();
    let fail = |code, msg: &str, details: String| {
        let v = if version.is_empty() {
            fallback.clone()
        } else {
            version.clone()
        };
        (v, CniError::new(code, msg, details))
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {version:?} is not one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    if let Some(ipam) = raw.get("ipam").filter(|v| !v.is_null()) {
        return Err(fail(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            format!("ipam: {ipam}: tapnet's own IPAM gives the addresses (leave ipam out)"),
        ));
    }
    let text = |k: &str| -> Result<Option<String>, (String, CniError)> {
        match raw.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(fail(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!("{k}: {other}: a non-empty string is needed"),
            )),
        }
    };
    let network = match text("network")?.or(text("name")?) {
        Some(n) => n,
        None => {
            return Err(fail(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "neither network nor name names the tapnet network".into(),
            ));
        }
    };
    let socket = text("socket")?.unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let prev_result = raw.get("prevResult").filter(|v| !v.is_null()).cloned();
    Ok(Config {
        version,
        network,
        socket,
        prev_result,
        raw,
    })
}

/// The runtime's `runtimeConfig.portMappings` (the CNI conventions' `portMappings`
/// capability: `hostPort`, `containerPort`, `protocol` `tcp` or `udp`, default `tcp`,
/// and `hostIP`, default every address) as the API's `PortBindings`; an error names the
/// entry and what is wrong with it.
fn port_mappings(raw: &Value) -> Result<PortMap, String> {
    let mut out = PortMap::new();
    let rc = match raw.get("runtimeConfig") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(format!("runtimeConfig: {other}: an object is needed")),
    };
    let list = match rc.get("portMappings") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(l)) => l,
        Some(other) => {
            return Err(format!(
                "runtimeConfig.portMappings: {other}: an array is needed"
            ));
        }
    };
    for (i, m) in list.iter().enumerate() {
        let bad = |what: &str| format!("runtimeConfig.portMappings[{i}]: {m}: {what}");
        let port = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("{k} must be a port number, 1 to 65535")))
        };
        if !m.is_object() {
            return Err(bad("an object is needed"));
        }
        let host_port = port("hostPort")?;
        let container_port = port("containerPort")?;
        let proto = match m.get("protocol") {
            None | Some(Value::Null) => "tcp".to_string(),
            Some(Value::String(p)) if p.is_empty() => "tcp".to_string(),
            Some(Value::String(p)) if matches!(p.to_ascii_lowercase().as_str(), "tcp" | "udp") => {
                p.to_ascii_lowercase()
            }
            Some(_) => return Err(bad("protocol must be tcp or udp")),
        };
        let host_ip = match m.get("hostIP") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(ip)) if ip.is_empty() || ip.parse::<IpAddr>().is_ok() => ip.clone(),
            Some(_) => return Err(bad("hostIP must be an IPv4 or IPv6 address")),
        };
        out.entry(format!("{container_port}/{proto}"))
            .or_default()
            .push(PortBinding {
                host_ip,
                host_port: host_port.to_string(),
            });
    }
    Ok(out)
}

/// The CNI spec's rule for `CNI_CONTAINERID`.
fn valid_container_id(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The environment variables an operation needs, checked.
fn need(inv: &Invocation, netns: bool) -> Result<(String, String, String), CniError> {
    let mut bad = Vec::new();
    let cid = inv.container_id.clone().unwrap_or_default();
    if !valid_container_id(&cid) {
        bad.push("CNI_CONTAINERID");
    }
    let ifname = inv.ifname.clone().unwrap_or_default();
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ':']) {
        bad.push("CNI_IFNAME");
    }
    let ns = inv.netns.clone().unwrap_or_default();
    if netns && !ns.starts_with('/') {
        bad.push("CNI_NETNS");
    }
    if bad.is_empty() {
        return Ok((cid, ifname, ns));
    }
    Err(CniError::new(
        code::INVALID_ENV,
        "invalid environment variables",
        format!(
            "{} missing or invalid (CNI_IFNAME: at most 15 bytes; CNI_NETNS: a path)",
            bad.join(", ")
        ),
    ))
}

/// `K8S_POD_NAME` of `CNI_ARGS` (`K=V;K=V`), podman's container name.
fn pod_name(args: &str) -> Option<String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == "K8S_POD_NAME")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn dispatch(inv: &Invocation, cfg: &Config) -> Result<Option<Value>, CniError> {
    let cmd = inv.command.as_str();
    if !matches!(cmd, "ADD" | "DEL" | "CHECK" | "GC" | "STATUS") {
        return Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variables",
            format!(
                "CNI_COMMAND {:?}: ADD, DEL, CHECK, GC, STATUS or VERSION",
                inv.command
            ),
        ));
    }
    let client = Client::new(std::path::Path::new(&cfg.socket))
        .map_err(|e| CniError::new(code::IO, "cannot start the API client", e.to_string()))?;
    match cmd {
        "ADD" => {
            let (container_id, ifname, netns) = need(inv, true)?;
            // Read at ADD only: a DEL succeeds whatever the runtime's ports were.
            let port_bindings = port_mappings(&cfg.raw).map_err(|details| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    details,
                )
            })?;
            let req = CniAddRequest {
                network: cfg.network.clone(),
                container_id,
                netns: netns.clone(),
                ifname,
                name: pod_name(&inv.args),
                port_bindings,
            };
            let a: CniAttachmentInfo = call(cmd, client.block_on(client.post("/cni/add", &req)))?;
            Ok(Some(result(
                &cfg.version,
                cfg.prev_result.as_ref(),
                &a,
                &netns,
            )))
        }
        "DEL" => {
            let (container_id, ifname, _) = need(inv, false)?;
            let req = CniAttachmentRef {
                container_id,
                ifname,
            };
            call(cmd, client.block_on(client.post_unit("/cni/del", &req)))?;
            Ok(None)
        }
        "CHECK" => {
            let (container_id, ifname, netns) = need(inv, true)?;
            let req = CniAddRequest {
                network: cfg.network.clone(),
                container_id,
                netns: netns.clone(),
                ifname,
                ..Default::default()
            };
            let a: CniAttachmentInfo = call(cmd, client.block_on(client.post("/cni/check", &req)))?;
            if let Some(prev) = &cfg.prev_result {
                check_prev(prev, &a, &netns)?;
            }
            Ok(None)
        }
        "GC" => {
            let valid = valid_attachments(&cfg.raw)?;
            let req = CniGcRequest {
                network: cfg.network.clone(),
                valid,
            };
            let _: CniGcResponse = call(cmd, client.block_on(client.post("/cni/gc", &req)))?;
            Ok(None)
        }
        _ => {
            let req = CniStatusRequest {
                network: cfg.network.clone(),
            };
            call(cmd, client.block_on(client.post_unit("/cni/status", &req)))?;
            Ok(None)
        }
    }
}

/// A daemon call's answer, its failure as a CNI error.
fn call<T>(cmd: &str, r: Result<T, ClientError>) -> Result<T, CniError> {
    r.map_err(|e| daemon_error(cmd, e))
}

/// `cni.dev/valid-attachments` of a GC configuration.
fn valid_attachments(raw: &Value) -> Result<Vec<CniAttachmentRef>, CniError> {
    let bad = |d: String| CniError::new(code::INVALID_CONFIG, "invalid network configuration", d);
    let list = match raw.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(bad(format!("cni.dev/valid-attachments: {other}"))),
    };
    list.iter()
        .map(
            |v| match (v["containerID"].as_str(), v["ifname"].as_str()) {
                (Some(c), Some(i)) => Ok(CniAttachmentRef {
                    container_id: c.to_string(),
                    ifname: i.to_string(),
                }),
                _ => Err(bad(format!(
                    "cni.dev/valid-attachments: {v}: containerID and ifname are needed"
                ))),
            },
        )
        .collect()
}

/// A daemon's failure as the CNI error the runtime gets.
fn daemon_error(cmd: &str, e: ClientError) -> CniError {
    let details = e.to_string();
    let (code, msg) = match (&e, cmd) {
        (ClientError::Connect { .. }, "STATUS") => {
            (code::NOT_AVAILABLE, "the tapnet daemon is not running")
        }
        (ClientError::Connect { .. }, _) => (code::TRY_AGAIN, "the tapnet daemon is not running"),
        (ClientError::Http(_), _) => (code::IO, "talking to the tapnet daemon failed"),
        (ClientError::Decode(_), _) => (code::DECODE, "unexpected answer from the tapnet daemon"),
        (ClientError::Daemon { .. }, "STATUS") => (
            code::NOT_AVAILABLE,
            "the tapnet network cannot take containers",
        ),
        (ClientError::Daemon { status, .. }, _) => match (*status, cmd) {
            (400, _) => (code::INVALID_ENV, "invalid environment variables"),
            (404, "CHECK") => (code::CONTAINER_UNKNOWN, "container unknown"),
            (403 | 404, _) => (code::INVALID_CONFIG, "invalid network configuration"),
            (409, _) => (code::EXISTS, "already attached"),
            (503, _) => (code::TRY_AGAIN, "try again later"),
            (_, "CHECK") => (code::CHECK_FAILED, "the attachment is not as ADD left it"),
            _ => (code::DAEMON, "the tapnet daemon failed"),
        },
    };
    CniError::new(code, msg, details)
}

/// The ADD result: `prev` (a result of plugins before this one, if any) with this
/// attachment's interface, address, route and nameserver added.
fn result(version: &str, prev: Option<&Value>, a: &CniAttachmentInfo, netns: &str) -> Value {
    let list = |k: &str| -> Vec<Value> {
        prev.and_then(|p| p[k].as_array().cloned())
            .unwrap_or_default()
    };
    let mut interfaces = list("interfaces");
    let index = interfaces.len();
    interfaces.push(json!({ "name": a.ifname, "mac": a.mac_address, "sandbox": netns }));
    let mut ips = list("ips");
    if !a.address.is_empty() {
        let mut ip = json!({ "address": a.address, "interface": index });
        if !a.gateway.is_empty() {
            ip["gateway"] = json!(a.gateway);
        }
        if version == "0.4.0" {
            ip["version"] = json!("4");
        }
        ips.push(ip);
    }
    let mut routes = list("routes");
    if a.default_route && !a.gateway.is_empty() {
        routes.push(json!({ "dst": "0.0.0.0/0", "gw": a.gateway }));
    }
    let mut dns = prev
        .map(|p| p["dns"].clone())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if !a.nameserver.is_empty() {
        let mut servers = dns["nameservers"].as_array().cloned().unwrap_or_default();
        if !servers.iter().any(|s| s == &json!(a.nameserver)) {
            servers.push(json!(a.nameserver));
        }
        dns["nameservers"] = json!(servers);
    }
    let mut out = json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
    });
    if dns.as_object().is_some_and(|d| !d.is_empty()) {
        out["dns"] = dns;
    }
    out
}

/// CHECK against `prevResult`: the interface is there, in the namespace, with the MAC
/// and address the daemon has for it.
fn check_prev(prev: &Value, a: &CniAttachmentInfo, netns: &str) -> Result<(), CniError> {
    let fail = |d: String| {
        CniError::new(
            code::CHECK_FAILED,
            "the attachment is not as ADD left it",
            d,
        )
    };
    let ifaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let Some(index) = ifaces
        .iter()
        .position(|i| i["name"] == json!(a.ifname) && i["sandbox"] == json!(netns))
    else {
        return Err(fail(format!(
            "prevResult has no interface {} in {netns}",
            a.ifname
        )));
    };
    let mac = ifaces[index]["mac"].as_str().unwrap_or_default();
    if !mac.is_empty() && !mac.eq_ignore_ascii_case(&a.mac_address) {
        return Err(fail(format!(
            "interface {} has MAC {}, prevResult says {mac}",
            a.ifname, a.mac_address
        )));
    }
    if a.address.is_empty() {
        return Ok(());
    }
    let ips = prev["ips"].as_array().cloned().unwrap_or_default();
    let listed = ips
        .iter()
        .any(|ip| ip["address"] == json!(a.address) && ip["interface"] == json!(index));
    if !listed {
        return Err(fail(format!(
            "interface {} has address {}, which prevResult does not list for it",
            a.ifname, a.address
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CniAttachmentInfo {
        CniAttachmentInfo {
            ifname: "eth0".into(),
            mac_address: "02:42:0a:07:00:02".into(),
            address: "10.7.0.2/24".into(),
            gateway: "10.7.0.1".into(),
            default_route: true,
            nameserver: "10.7.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_add_result_is_the_specs() {
        let r = result("1.0.0", None, &info(), "/run/netns/x");
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "02:42:0a:07:00:02", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.7.0.2/24", "gateway": "10.7.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}],
                "dns": {"nameservers": ["10.7.0.1"]},
            })
        );
        // 0.4.0 says each address's version.
        let r = result("0.4.0", None, &info(), "/run/netns/x");
        assert_eq!(r["ips"][0]["version"], "4");
        // CHECK accepts what ADD answered.
        check_prev(&r, &info(), "/run/netns/x").unwrap();
        let e = check_prev(&r, &info(), "/run/netns/y").unwrap_err();
        assert_eq!(e.code, code::CHECK_FAILED);
    }

    #[test]
    fn a_previous_result_is_kept() {
        let prev = json!({
            "interfaces": [{"name": "lo0"}],
            "ips": [{"address": "192.0.2.9/32", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"], "search": ["example"]},
        });
        let mut a = info();
        a.default_route = false;
        let r = result("1.1.0", Some(&prev), &a, "/ns");
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["routes"], json!([]));
        assert_eq!(
            r["dns"],
            json!({"nameservers": ["192.0.2.53", "10.7.0.1"], "search": ["example"]})
        );
    }

    #[test]
    fn version_configuration_and_environment_errors() {
        let inv = Invocation {
            command: "VERSION".into(),
            ..Default::default()
        };
        let (v, out) = run(&inv, r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(v, "1.0.0");
        assert_eq!(
            out.unwrap().unwrap()["supportedVersions"],
            json!(["0.4.0", "1.0.0", "1.1.0"])
        );
        let add = Invocation {
            command: "ADD".into(),
            ..Default::default()
        };
        let code_of = |inv: &Invocation, stdin: &str| run(inv, stdin).1.unwrap_err().code;
        assert_eq!(code_of(&add, "{"), code::DECODE);
        assert_eq!(
            code_of(&add, r#"{"cniVersion":"0.3.1","name":"n"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code_of(
                &add,
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#
            ),
            code::UNSUPPORTED_FIELD
        );
        assert_eq!(
            code_of(&add, r#"{"cniVersion":"1.0.0"}"#),
            code::INVALID_CONFIG
        );
        // No CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME: checked before the daemon is asked.
        let e = run(&add, r#"{"cniVersion":"1.0.0","name":"n"}"#)
            .1
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.details.contains("CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS"));
        let odd = Invocation {
            command: "FROB".into(),
            ..Default::default()
        };
        assert_eq!(
            code_of(&odd, r#"{"cniVersion":"1.0.0","name":"n"}"#),
            code::INVALID_ENV
        );
    }

    #[test]
    fn port_mappings_become_port_bindings() {
        let conf = json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
            {"hostPort": 8081, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": ""},
            {"hostPort": 9000, "containerPort": 9000},
        ]}});
        let got = port_mappings(&conf).unwrap();
        let b = |ip: &str, port: &str| PortBinding {
            host_ip: ip.into(),
            host_port: port.into(),
        };
        let want: PortMap = [
            (
                "80/tcp".to_string(),
                vec![b("127.0.0.1", "8080"), b("", "8081")],
            ),
            ("53/udp".to_string(), vec![b("", "5353")]),
            ("9000/tcp".to_string(), vec![b("", "9000")]),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        // None given: none published.
        assert!(port_mappings(&json!({})).unwrap().is_empty());
        assert!(
            port_mappings(&json!({"runtimeConfig": {"bandwidth": {}}}))
                .unwrap()
                .is_empty()
        );
        // Each fault names the entry and what is wrong.
        let err = |m: Value| port_mappings(&json!({"runtimeConfig": {"portMappings": [m]}}));
        for (m, says) in [
            (
                json!({"containerPort": 80}),
                "hostPort must be a port number",
            ),
            (json!({"hostPort": 0, "containerPort": 80}), "hostPort must"),
            (
                json!({"hostPort": 65536, "containerPort": 80}),
                "hostPort must",
            ),
            (
                json!({"hostPort": "80", "containerPort": 80}),
                "hostPort must",
            ),
            (
                json!({"hostPort": 80, "containerPort": -1}),
                "containerPort must",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "protocol": "sctp"}),
                "protocol must be tcp or udp",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}),
                "hostIP must be an IPv4 or IPv6 address",
            ),
            (json!("80:80"), "an object is needed"),
        ] {
            let e = err(m.clone()).unwrap_err();
            assert!(e.starts_with("runtimeConfig.portMappings[0]: "), "{e}");
            assert!(e.contains(says), "{m}: {e}");
        }
        let e = port_mappings(&json!({"runtimeConfig": {"portMappings": {}}})).unwrap_err();
        assert!(e.contains("an array is needed"), "{e}");
        // At ADD, an error object with code 7; a DEL does not read them.
        let bad = r#"{"cniVersion":"1.0.0","name":"n",
            "runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#;
        let add = Invocation {
            command: "ADD".into(),
            container_id: Some("c1".into()),
            netns: Some("/run/netns/x".into()),
            ifname: Some("eth0".into()),
            ..Default::default()
        };
        let e = run(&add, bad).1.unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e:?}");
        assert!(e.details.contains("hostPort must"), "{e:?}");
    }

    #[test]
    fn the_pod_name_comes_from_cni_args() {
        assert_eq!(
            pod_name("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=web"),
            Some("web".into())
        );
        assert_eq!(pod_name("IgnoreUnknown=1"), None);
        assert_eq!(pod_name(""), None);
    }
}
