//! The CNI plugin's endpoints: `POST /cni/add`, `/cni/del`, `/cni/check`, `/cni/gc` and
//! `/cni/status`, over the core's CNI calls (`core::cni`). The `tapnet` CNI plugin
//! (`tapnet cni`, run by a container runtime) sends them and turns the answers into CNI
//! results; errors are the API's usual statuses and `{"message": …}` bodies, which the
//! plugin maps to CNI error codes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use tapnet_api::{
    CniAddRequest, CniAttachmentInfo, CniAttachmentRef, CniGcRequest, CniGcResponse,
    CniStatusRequest,
};

use super::calls::mappings;
use super::http::{ApiResult, json, read_json};
use super::state::AppState;
use crate::daemon::core::CniAttachment;

/// The CNI routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/cni/add", post(add))
        .route("/cni/del", post(del))
        .route("/cni/check", post(check))
        .route("/cni/gc", post(gc))
        .route("/cni/status", post(status))
}

fn info(a: CniAttachment) -> CniAttachmentInfo {
    let text = |ip: Option<std::net::Ipv4Addr>| ip.map(|a| a.to_string()).unwrap_or_default();
    CniAttachmentInfo {
        sandbox_id: a.sandbox.id,
        sandbox_name: a.sandbox.name,
        network_id: a.network.id,
        network_name: a.network.name,
        ifname: a.endpoint.ifname,
        mac_address: a.endpoint.mac,
        address: a
            .endpoint
            .ipv4
            .map(|ip| format!("{ip}/{}", a.endpoint.prefix_len))
            .unwrap_or_default(),
        gateway: text(a.gateway),
        default_route: a.default_route,
        nameserver: text(a.nameserver),
    }
}

async fn add(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CniAddRequest = read_json(&headers, body)?;
    let ports = mappings(&r.port_bindings)?;
    let a = s
        .call(move |d| {
            let (net, cid, ns, ifname) = (&r.network, &r.container_id, &r.netns, &r.ifname);
            Ok(d.cni_add(net, cid, ns, ifname, r.name, &ports)?)
        })
        .await?;
    Ok(json(StatusCode::CREATED, &info(a)))
}

async fn del(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CniAttachmentRef = read_json(&headers, body)?;
    s.call(move |d| Ok(d.cni_del(&r.container_id, &r.ifname)?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CniAddRequest = read_json(&headers, body)?;
    let a = s
        .call(move |d| Ok(d.cni_check(&r.container_id, &r.ifname, &r.netns)?))
        .await?;
    Ok(json(StatusCode::OK, &info(a)))
}

async fn gc(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CniGcRequest = read_json(&headers, body)?;
    let valid: Vec<(String, String)> = r
        .valid
        .into_iter()
        .map(|v| (v.container_id, v.ifname))
        .collect();
    let removed = s.call(move |d| Ok(d.cni_gc(&r.network, &valid)?)).await?;
    Ok(json(StatusCode::OK, &CniGcResponse { removed }))
}

async fn status(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CniStatusRequest = read_json(&headers, body)?;
    s.call(move |d| Ok(d.cni_status(&r.network)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
