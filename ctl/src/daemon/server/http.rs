//! The pieces of Docker's HTTP handling every handler shares: JSON answers with
//! Docker's trailing newline, error bodies, query parameters, path ids, and moby's
//! `httputils.ReadJSON` for request bodies.

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tapnet_api::ErrorResponse;

use super::error::ApiError;

/// What a handler answers: a response or an error.
pub(super) type ApiResult = Result<Response, ApiError>;

/// A JSON response with Docker's trailing newline.
pub(super) fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => error_response(ApiError::new(500, format!("encoding the response: {e}"))),
    }
}

pub(super) fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &ErrorResponse { message: e.message })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self)
    }
}

/// Query parameters; a later repeat of a key wins.
pub(super) fn query(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

pub(super) fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid path parameter: {e}")))
}

/// moby `httputils.ReadJSON`: the body must be JSON if there is one (an empty body
/// decodes as the default value), with Docker's error texts.
pub(super) fn read_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
    let ct = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !(ct.is_empty() && body.is_empty()) {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::bad_request(format!(
                "Content-Type specified ({ct}) must be 'application/json'"
            )));
        }
    }
    if body.is_empty() {
        return Ok(T::default());
    }
    // serde would read a struct from an array too; Go (and so Docker) would not.
    if let Some(b) = body.iter().find(|b| !b.is_ascii_whitespace()) {
        if *b != b'{' && *b != b'n' {
            return Err(ApiError::bad_request(
                "invalid JSON: the request body must be a JSON object",
            ));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let v = T::deserialize(&mut de).map_err(|e| {
        if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            ApiError::bad_request("invalid JSON: got EOF while reading request body")
        } else {
            ApiError::bad_request(format!("invalid JSON: {e}"))
        }
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("unexpected content after JSON"))?;
    Ok(v)
}
