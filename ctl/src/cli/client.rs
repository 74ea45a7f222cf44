//! The API client: HTTP/1.1 over the daemon's Unix socket (hyper), one connection per
//! request, on a current-thread tokio runtime that `tapnet run` also uses to wait for its
//! command and relay signals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tapnet_api::ErrorResponse;

/// How long one API call may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "Cannot connect to the tapnet daemon at unix://{} ({reason}). Is it running? \
         Start it with `tapnet daemon`.",
        path.display()
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why the connection failed.
        reason: String,
    },
    /// The daemon answered with an error status.
    #[error("Error response from daemon: {message}")]
    Daemon {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The HTTP exchange failed midway.
    #[error("talking to the tapnet daemon: {0}")]
    Http(String),
    /// The daemon's answer could not be read.
    #[error("unexpected answer from the tapnet daemon: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of a daemon error, if this is one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ClientError::Daemon { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one daemon socket.
pub(crate) struct Client {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// Percent-encode one path segment (names and ids are plain, but be safe).
pub(crate) fn path_segment(s: &str) -> String {
    escape(s, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Percent-encode a query value.
pub(crate) fn query_value(s: &str) -> String {
    escape(s, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn escape(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub(crate) fn new(socket: &Path) -> std::io::Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            socket: socket.to_path_buf(),
            rt,
        })
    }

    /// The daemon's socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request; a non-2xx answer becomes [`ClientError::Daemon`] with the daemon's
    /// message.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| {
                ClientError::Http(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ClientError::Connect {
                path: self.socket.clone(),
                reason: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "tapnet")
            .header(USER_AGENT, concat!("tapnet/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        drop(sender);
        let _ = conn.await;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(daemon_error(status, &bytes))
    }

    /// `GET` and decode.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(&self.request(Method::GET, path, None).await?)
    }

    /// `POST` a JSON body and decode the answer.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
        decode(&self.request(Method::POST, path, Some(body)).await?)
    }

    /// `POST` a JSON body, ignoring the answer's body.
    pub(crate) async fn post_unit<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
        self.request(Method::POST, path, Some(body)).await.map(drop)
    }

    /// `DELETE`.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.request(Method::DELETE, path, None).await.map(drop)
    }

    /// Run `f` to completion on the client's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

/// The daemon's `{"message": …}`, or the raw body if it is not one.
fn daemon_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) if !e.message.is_empty() => e.message,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                status.to_string()
            } else {
                text
            }
        }
    };
    ClientError::Daemon {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(path_segment("pets-1.a_b"), "pets-1.a_b");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            query_value(r#"{"name":{"x":true}}"#),
            "%7B%22name%22%3A%7B%22x%22%3Atrue%7D%7D"
        );
    }

    #[test]
    fn daemon_errors_carry_the_message() {
        let e = daemon_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"network x not found"}"#,
        );
        assert_eq!(
            e.to_string(),
            "Error response from daemon: network x not found"
        );
        assert_eq!(e.status(), Some(404));
        let e = daemon_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "Error response from daemon: 502 Bad Gateway");
    }

    #[test]
    fn connect_error_names_socket_and_daemon() {
        let c = Client::new(Path::new("/nonexistent/tapnet.sock")).unwrap();
        let e = c
            .block_on(c.get::<serde_json::Value>("/_ping"))
            .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("unix:///nonexistent/tapnet.sock"), "{s}");
        assert!(s.contains("tapnet daemon"), "{s}");
    }
}
