//! Docker's network and IPAM plugin protocols (libnetwork's `remote` drivers), served
//! on a socket of their own that Docker's engine discovers (`/run/docker/plugins/NAME.sock`,
//! or a spec file naming it): `POST /Plugin.Activate`, `/NetworkDriver.*` and
//! `/IpamDriver.*` with JSON bodies (`application/vnd.docker.plugins.v1.2+json`, which
//! is JSON whatever its type says). Each call goes to the core's Docker side
//! (`core::docker`) on a blocking thread.
//!
//! Errors are answered 200 with an error field, as Docker's plugins do: `Err` for the
//! network driver, `Error` for the IPAM driver (`drivers/remote/api`, `ipams/remote/api`
//! in libnetwork). A method tapnet does not implement is a 404, which Docker tolerates
//! where the protocol allows it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tapnet_nat::portspec::{PortMapping, Proto};
use tapnet_switch::MacAddr;

use super::error::ApiError;
use super::state::AppState;
use crate::daemon::core::{DaemonError, DockerNetwork, DockerPool};

/// The address spaces tapnet's IPAM driver names (`GetDefaultAddressSpaces`); a pool
/// Docker got from it carries one of them.
const LOCAL_SPACE: &str = "tapnet-local";
const GLOBAL_SPACE: &str = "tapnet-global";

/// The content type of Docker's plugin protocol.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1+json";

/// `RequestAddressType` of a gateway request.
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// The routes of both drivers.
pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(net_capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.AllocateNetwork", post(empty_net))
        .route("/NetworkDriver.FreeNetwork", post(empty_net))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(endpoint_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route(
            "/NetworkDriver.ProgramExternalConnectivity",
            post(program_external),
        )
        .route(
            "/NetworkDriver.RevokeExternalConnectivity",
            post(revoke_external),
        )
        .route("/NetworkDriver.DiscoverNew", post(empty_net))
        .route("/NetworkDriver.DiscoverDelete", post(empty_net))
        .route("/IpamDriver.GetCapabilities", post(ipam_capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
        .with_state(state)
}

// ---- answers ------------------------------------------------------------------------

fn answer(v: &Value) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, PLUGIN_JSON)], v.to_string()).into_response()
}

/// The network driver's answer: `v`, or `{"Err": …}`.
fn net_answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => answer(&v),
        Err(e) => {
            tracing::info!(error = %e.message, "docker plugin: network driver call refused");
            answer(&json!({ "Err": e.message }))
        }
    }
}

/// The IPAM driver's answer: `v`, or `{"Error": …}`.
fn ipam_answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => answer(&v),
        Err(e) => {
            tracing::info!(error = %e.message, "docker plugin: IPAM driver call refused");
            answer(&json!({ "Error": e.message }))
        }
    }
}

/// A request body: JSON whatever its content type says; an empty body is `{}`.
fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    let b: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

fn core_err(e: DaemonError) -> ApiError {
    ApiError::new(super::error::status(&e), crate::daemon::chain::chain(&e))
}

async fn call<T, F>(s: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&crate::daemon::core::Daemon) -> Result<T, DaemonError> + Send + 'static,
{
    s.call(move |d| f(d).map_err(core_err)).await
}

// ---- the handshake ------------------------------------------------------------------

async fn activate() -> Response {
    answer(&json!({ "Implements": ["NetworkDriver", "IpamDriver"] }))
}

// ---- network driver -----------------------------------------------------------------

async fn net_capabilities() -> Response {
    answer(&json!({ "Scope": "local", "ConnectivityScope": "local" }))
}

async fn empty_net() -> Response {
    answer(&json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamData {
    address_space: String,
    pool: String,
    gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpamData>>,
}

/// `CreateNetwork`'s request in the core's terms.
fn docker_network(r: CreateNetworkRequest) -> Result<DockerNetwork, ApiError> {
    let options = r.options.unwrap_or_default();
    let generic = match options.get("com.docker.network.generic") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "com.docker.network.generic must be an object, not {other}"
            )));
        }
    };
    let flag = |k: &str| {
        options
            .get(k)
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
    };
    let v4 = r.ipv4_data.unwrap_or_default();
    if v4.len() > 1 {
        return Err(ApiError::bad_request(
            "tapnet networks have one IPv4 pool: give one --subnet",
        ));
    }
    let pool = v4.into_iter().next().map(|d| DockerPool {
        held: d.address_space == LOCAL_SPACE || d.address_space == GLOBAL_SPACE,
        subnet: d.pool,
        gateway: d.gateway,
    });
    Ok(DockerNetwork {
        id: r.network_id,
        pool,
        options: generic,
        internal: flag("com.docker.network.internal"),
        ipv6: flag("com.docker.network.enable_ipv6") || r.ipv6_data.is_some_and(|v| !v.is_empty()),
    })
}

async fn create_network(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let d = docker_network(body(&b)?)?;
        call(&s, move |c| c.docker_create_network(d)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    sandbox_key: String,
    #[serde(rename = "Interface")]
    interface: Option<EndpointInterface>,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointInterface {
    address: String,
    #[serde(rename = "AddressIPv6")]
    address_ipv6: String,
    mac_address: String,
}

async fn delete_network(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        call(&s, move |c| c.docker_delete_network(&req.network_id)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

/// An address in CIDR notation (`10.0.0.2/24`) or bare; empty is none.
fn cidr_addr(s: &str) -> Result<Option<Ipv4Addr>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    let a = s.split('/').next().unwrap_or_default();
    Ipv4Addr::from_str(a)
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("invalid IPv4 address {s:?}")))
}

async fn create_endpoint(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        let iface = req.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err(ApiError::bad_request(
                "tapnet networks are IPv4-only: no IPv6 address can be given",
            ));
        }
        let addr = cidr_addr(&iface.address)?;
        let mac = match iface.mac_address.as_str() {
            "" => None,
            m => Some(
                MacAddr::from_str(m)
                    .map_err(|_| ApiError::bad_request(format!("invalid MAC address {m:?}")))?
                    .0,
            ),
        };
        let (net, ep) = (req.network_id, req.endpoint_id);
        let e = call(&s, move |c| c.docker_create_endpoint(&net, &ep, addr, mac)).await?;
        // Docker takes a MAC from the driver only when it did not give one.
        Ok(if iface.mac_address.is_empty() {
            json!({ "Interface": { "MacAddress": e.mac } })
        } else {
            json!({})
        })
    };
    net_answer(r.await)
}

async fn delete_endpoint(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        call(&s, move |c| c.docker_delete_endpoint(&req.endpoint_id)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

async fn endpoint_info(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        let ports = call(&s, move |c| c.docker_endpoint_ports(&req.endpoint_id)).await?;
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                json!({
                    "Proto": if p.proto == "udp" { 17 } else { 6 },
                    "Port": p.container_port,
                    "HostIP": p.host_ip.to_string(),
                    "HostPort": p.host_port,
                })
            })
            .collect();
        Ok(json!({ "Value": { "com.docker.network.portmap": ports } }))
    };
    net_answer(r.await)
}

async fn join(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        let (ep, key) = (req.endpoint_id, req.sandbox_key);
        let j = call(&s, move |c| c.docker_join(&ep, &key)).await?;
        Ok(json!({
            "InterfaceName": { "SrcName": j.ifname, "DstPrefix": "eth" },
            "Gateway": j.gateway.map(|g| g.to_string()).unwrap_or_default(),
            "DisableGatewayService": false,
        }))
    };
    net_answer(r.await)
}

async fn leave(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        call(&s, move |c| c.docker_leave(&req.endpoint_id)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

/// One of `com.docker.network.portmap`'s bindings (libnetwork's `types.PortBinding`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    proto: u8,
    port: u16,
    #[serde(rename = "HostIP")]
    host_ip: String,
    host_port: u16,
    host_port_end: u16,
}

/// Docker's port bindings as tapnet's published ports.
fn port_mappings(options: Option<&BTreeMap<String, Value>>) -> Result<Vec<PortMapping>, ApiError> {
    let Some(v) = options
        .and_then(|o| o.get("com.docker.network.portmap"))
        .filter(|v| !v.is_null())
    else {
        return Ok(Vec::new());
    };
    let bindings: Vec<PortBinding> = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid port map: {e}")))?;
    bindings
        .into_iter()
        .map(|b| {
            let proto = match b.proto {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                p => {
                    return Err(ApiError::bad_request(format!(
                        "protocol {p} cannot be published: tcp and udp can"
                    )));
                }
            };
            if b.port == 0 {
                return Err(ApiError::bad_request(
                    "container port 0 cannot be published",
                ));
            }
            let host_ip =
                match b.host_ip.as_str() {
                    "" => None,
                    a => Some(IpAddr::from_str(a).map_err(|_| {
                        ApiError::bad_request(format!("invalid host address {a:?}"))
                    })?),
                };
            let host_ports = match (b.host_port, b.host_port_end) {
                (0, _) => None,
                (p, e) if e > p => Some((p, e)),
                (p, _) => Some((p, p)),
            };
            Ok(PortMapping {
                host_ip,
                host_ports,
                container_port: b.port,
                proto,
            })
        })
        .collect()
}

async fn program_external(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        let ports = port_mappings(req.options.as_ref())?;
        let ep = req.endpoint_id;
        call(&s, move |c| c.docker_publish(&ep, &ports)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

async fn revoke_external(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: NetworkRequest = body(&b)?;
        call(&s, move |c| c.docker_unpublish(&req.endpoint_id)).await?;
        Ok(json!({}))
    };
    net_answer(r.await)
}

// ---- IPAM driver --------------------------------------------------------------------

async fn ipam_capabilities() -> Response {
    answer(&json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
}

async fn address_spaces() -> Response {
    answer(&json!({
        "LocalDefaultAddressSpace": LOCAL_SPACE,
        "GlobalDefaultAddressSpace": GLOBAL_SPACE,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    pool: String,
    sub_pool: String,
    address: String,
    options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    v6: bool,
}

async fn request_pool(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: IpamRequest = body(&b)?;
        if req.v6 {
            return Err(ApiError::bad_request(
                "tapnet networks are IPv4-only: its IPAM driver has no IPv6 pools",
            ));
        }
        let (pool, sub) = (req.pool, req.sub_pool);
        let (id, subnet) = call(&s, move |c| c.plugin_request_pool(&pool, &sub)).await?;
        Ok(json!({ "PoolID": id, "Pool": subnet, "Data": {} }))
    };
    ipam_answer(r.await)
}

async fn release_pool(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: IpamRequest = body(&b)?;
        call(&s, move |c| c.plugin_release_pool(&req.pool_id)).await?;
        Ok(json!({}))
    };
    ipam_answer(r.await)
}

async fn request_address(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: IpamRequest = body(&b)?;
        let want = cidr_addr(&req.address)?;
        let gateway = req
            .options
            .as_ref()
            .and_then(|o| o.get("RequestAddressType"))
            .is_some_and(|t| t == GATEWAY_REQUEST);
        let pool = req.pool_id;
        let (a, len) = call(&s, move |c| c.plugin_request_address(&pool, want, gateway)).await?;
        Ok(json!({ "Address": format!("{a}/{len}"), "Data": {} }))
    };
    ipam_answer(r.await)
}

async fn release_address(State(s): State<AppState>, b: Bytes) -> Response {
    let r = async {
        let req: IpamRequest = body(&b)?;
        let a = cidr_addr(&req.address)?
            .ok_or_else(|| ApiError::bad_request("no address to release"))?;
        call(&s, move |c| c.plugin_release_address(&req.pool_id, a)).await?;
        Ok(json!({}))
    };
    ipam_answer(r.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_network_requests_read_as_docker_sends_them() {
        // Docker 20.10's body for `docker network create -d tapnet --ipam-driver
        // tapnet -o tapnet.name=pets pets`.
        let b = Bytes::from_static(
            br#"{"NetworkID":"ab","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"tapnet.name":"pets","com.docker.network.driver.mtu":"1400"}},"IPv4Data":[{"AddressSpace":"tapnet-local","Gateway":"172.18.0.1/16","Pool":"172.18.0.0/16"}],"IPv6Data":[]}"#,
        );
        let d = docker_network(body(&b).unwrap()).unwrap();
        assert_eq!(d.options["tapnet.name"], "pets");
        assert_eq!(d.options["com.docker.network.driver.mtu"], "1400");
        let p = d.pool.unwrap();
        assert!(p.held && !d.ipv6 && !d.internal);
        assert_eq!(
            (p.subnet.as_str(), p.gateway.as_str()),
            ("172.18.0.0/16", "172.18.0.1/16")
        );
        // Docker's default IPAM, and null where Go has nil maps and slices.
        let b = Bytes::from_static(
            br#"{"NetworkID":"ab","Options":null,"IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"10.1.0.1/24","Pool":"10.1.0.0/24","AuxAddresses":null}],"IPv6Data":null}"#,
        );
        let d = docker_network(body(&b).unwrap()).unwrap();
        assert!(!d.pool.unwrap().held);
        let b = Bytes::from_static(br#"{"NetworkID":"ab","Options":{"com.docker.network.internal":true,"com.docker.network.generic":"x"}}"#);
        assert!(docker_network(body(&b).unwrap()).is_err());
        assert!(body::<NetworkRequest>(&Bytes::from_static(b"[")).is_err());
        assert!(body::<NetworkRequest>(&Bytes::new()).is_ok());
    }

    #[test]
    fn port_maps_become_published_ports() {
        let opts: BTreeMap<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"127.0.0.1","HostPort":8080,"HostPortEnd":8080},{"Proto":17,"IP":"","Port":53,"HostIP":"","HostPort":0,"HostPortEnd":0},{"Proto":6,"Port":90,"HostIP":"","HostPort":9000,"HostPortEnd":9010}]}"#,
        )
        .unwrap();
        let m = port_mappings(Some(&opts)).unwrap();
        assert_eq!(m[0].host_ports, Some((8080, 8080)));
        assert_eq!(m[0].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            (m[1].proto, m[1].host_ports, m[1].host_ip),
            (Proto::Udp, None, None)
        );
        assert_eq!(m[2].host_ports, Some((9000, 9010)));
        let bad: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.portmap":[{"Proto":132,"Port":80}]}"#)
                .unwrap();
        assert!(port_mappings(Some(&bad)).is_err());
        assert!(port_mappings(None).unwrap().is_empty());
    }
}
