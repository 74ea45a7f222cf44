//! Docker's swarm and node endpoints (`/swarm/init|join|leave`, `GET /swarm`, `/nodes`)
//! and `GET /info`, over the [`SwarmControl`] the daemon hands the server.
//!
//! The swarm's calls block (they may talk to other nodes), so they run on the server's
//! blocking threads, as calls into the core do. A server given no swarm answers every
//! swarm route 503 with Docker's "not a swarm manager" text, and `/info` and `_ping` say
//! `inactive`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tapnet_api::{Node, NodeSpec, SwarmInfo, SwarmInitRequest, SwarmJoinRequest, SystemInfo};

use super::error::ApiError;
use super::http::{ApiResult, json, param, path_id, query, read_json};
use super::state::AppState;
use super::swarm::{NOT_A_MANAGER, SwarmControl};

/// Docker's answer to `leave` on a node in no swarm (503).
const NOT_IN_A_SWARM: &str = "This node is not part of a swarm";

/// How long `_ping` waits for the swarm's state before it says `inactive`.
const PING_SWARM_WAIT: Duration = Duration::from_secs(1);

/// Filter keys `GET /nodes` accepts.
const NODE_FILTERS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];

/// The swarm and node routes, and `GET /info`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/info", get(info))
        .route("/swarm", get(swarm_inspect))
        .route("/swarm/init", post(swarm_init))
        .route("/swarm/join", post(swarm_join))
        .route("/swarm/leave", post(swarm_leave))
        .route("/nodes", get(node_list))
        .route("/nodes/{id}", get(node_inspect).delete(node_remove))
        .route("/nodes/{id}/update", post(node_update))
}

/// Run `f` on the swarm on a blocking thread; without a swarm, 503 with `absent`.
async fn call<T, F>(s: &AppState, absent: &str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn SwarmControl) -> Result<T, ApiError> + Send + 'static,
{
    let Some(sw) = s.swarm.clone() else {
        return Err(ApiError::new(503, absent));
    };
    tokio::task::spawn_blocking(move || f(&*sw))
        .await
        .unwrap_or_else(|e| Err(ApiError::new(500, format!("the call failed: {e}"))))
}

/// The swarm's `/info` object, or an inactive one without a swarm.
async fn swarm_info(s: &AppState) -> SwarmInfo {
    call(s, "", |sw| Ok(sw.info())).await.unwrap_or_default()
}

/// The `Swarm` header of `_ping`, as Docker's: `inactive`, `pending`, `error`, `locked`,
/// `active/worker` or `active/manager`. A swarm slow to answer counts as `inactive`.
pub(super) async fn ping_status(s: &AppState) -> String {
    if s.swarm.is_none() {
        return "inactive".into();
    }
    let Ok(i) = tokio::time::timeout(PING_SWARM_WAIT, swarm_info(s)).await else {
        return "inactive".into();
    };
    match i.local_node_state.as_str() {
        "active" if i.control_available => "active/manager".into(),
        "active" => "active/worker".into(),
        "" => "inactive".into(),
        other => other.into(),
    }
}

/// moby `httputils.BoolValue`: anything but empty, `0`, `no`, `false` or `none` is true.
fn bool_value(q: &[(String, String)], key: &str) -> bool {
    let v = param(q, key).unwrap_or("").trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
}

/// `GET /info`: the host, tapnet's version and the swarm.
async fn info(State(s): State<AppState>) -> ApiResult {
    let swarm = swarm_info(&s).await;
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mem_total = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let info = SystemInfo {
        id: String::new(),
        name: read("/proc/sys/kernel/hostname"),
        server_version: s.version.version.clone(),
        os_type: "linux".into(),
        architecture: std::env::consts::ARCH.into(),
        kernel_version: s.version.kernel_version.clone(),
        ncpu: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        mem_total,
        swarm,
    };
    Ok(json(StatusCode::OK, &info))
}

/// `POST /swarm/init`: the new node's ID, as a JSON string.
async fn swarm_init(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: SwarmInitRequest = read_json(&headers, body)?;
    let id = call(&s, NOT_A_MANAGER, move |sw| sw.init(req)).await?;
    Ok(json(StatusCode::OK, &id))
}

async fn swarm_join(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: SwarmJoinRequest = read_json(&headers, body)?;
    call(&s, NOT_A_MANAGER, move |sw| sw.join(req)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn swarm_leave(State(s): State<AppState>, uri: Uri) -> ApiResult {
    let force = bool_value(&query(&uri)?, "force");
    call(&s, NOT_IN_A_SWARM, move |sw| sw.leave(force)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn swarm_inspect(State(s): State<AppState>) -> ApiResult {
    let swarm = call(&s, NOT_A_MANAGER, |sw| sw.inspect()).await?;
    Ok(json(StatusCode::OK, &swarm))
}

/// `GET /nodes`, with the `id` (prefix), `name` (hostname or name prefix), `role`,
/// `membership` and `label`/`node.label` (engine and node labels) filters.
async fn node_list(State(s): State<AppState>, uri: Uri) -> ApiResult {
    let q = query(&uri)?;
    let f = super::filters::parse_raw(param(&q, "filters").unwrap_or(""), NODE_FILTERS)?;
    if let Some(bad) = f
        .get("role")
        .into_iter()
        .flatten()
        .find(|r| *r != "manager" && *r != "worker")
    {
        return Err(ApiError::bad_request(format!("Invalid role '{bad}'")));
    }
    let nodes = call(&s, NOT_A_MANAGER, |sw| sw.nodes()).await?;
    let nodes: Vec<Node> = nodes.into_iter().filter(|n| node_matches(n, &f)).collect();
    Ok(json(StatusCode::OK, &nodes))
}

/// Does `n` pass every filter (any value of a key, every key)?
fn node_matches(n: &Node, f: &BTreeMap<String, Vec<String>>) -> bool {
    let labels = |want: &str, have: &BTreeMap<String, String>| match want.split_once('=') {
        Some((k, v)) => have.get(k).is_some_and(|h| h == v),
        None => have.contains_key(want),
    };
    f.iter().all(|(key, values)| {
        values.is_empty()
            || match key.as_str() {
                "id" => values.iter().any(|v| n.id.starts_with(v.as_str())),
                "name" => values.iter().any(|v| {
                    n.description.hostname.starts_with(v.as_str())
                        || (!n.spec.name.is_empty() && n.spec.name.starts_with(v.as_str()))
                }),
                "role" => values.contains(&n.spec.role),
                // Every node a manager lists was accepted.
                "membership" => values.iter().any(|v| v == "accepted"),
                "label" => values
                    .iter()
                    .all(|v| labels(v, &n.description.engine.labels)),
                "node.label" => values.iter().all(|v| labels(v, &n.spec.labels)),
                _ => true,
            }
    })
}

async fn node_inspect(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let node = call(&s, NOT_A_MANAGER, move |sw| sw.node(&id)).await?;
    Ok(json(StatusCode::OK, &node))
}

async fn node_remove(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> ApiResult {
    let id = path_id(id)?;
    let force = bool_value(&query(&uri)?, "force");
    call(&s, NOT_A_MANAGER, move |sw| sw.node_remove(&id, force)).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /nodes/{id}/update?version=N`: the version must be a number, as Docker checks
/// (the swarm applies the spec to the node's current version).
async fn node_update(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let q = query(&uri)?;
    let raw = param(&q, "version").unwrap_or("");
    if raw.parse::<u64>().is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid node version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax"
        )));
    }
    let spec: NodeSpec = read_json(&headers, body)?;
    call(&s, NOT_A_MANAGER, move |sw| sw.node_update(&id, spec)).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_values_as_moby_reads_them() {
        let q = |v: &str| vec![("force".to_string(), v.to_string())];
        for v in ["1", "true", "yes", "TRUE", " on "] {
            assert!(bool_value(&q(v), "force"), "{v}");
        }
        for v in ["", "0", "no", "False", "none"] {
            assert!(!bool_value(&q(v), "force"), "{v}");
        }
        assert!(!bool_value(&[], "force"));
    }

    #[test]
    fn node_filters() {
        let mut n = Node {
            id: "abcdef".into(),
            ..Node::default()
        };
        n.description.hostname = "node-1".into();
        n.spec.role = "worker".into();
        n.spec.labels.insert("zone".into(), "a".into());
        let f = |k: &str, v: &[&str]| {
            BTreeMap::from([(
                k.to_string(),
                v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )])
        };
        assert!(node_matches(&n, &f("id", &["abc"])));
        assert!(!node_matches(&n, &f("id", &["bc"])));
        assert!(node_matches(&n, &f("name", &["node"])));
        assert!(node_matches(&n, &f("role", &["worker"])));
        assert!(!node_matches(&n, &f("role", &["manager"])));
        assert!(node_matches(&n, &f("node.label", &["zone=a"])));
        assert!(!node_matches(&n, &f("node.label", &["zone=b"])));
        assert!(node_matches(&n, &f("node.label", &["zone"])));
        assert!(!node_matches(&n, &f("label", &["zone"])));
    }
}
