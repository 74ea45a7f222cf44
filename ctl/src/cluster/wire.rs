//! The management port's wire format: frames, the hello, requests and answers.
//!
//! Every frame is a `u32` big-endian body length followed by the body, a postcard
//! encoding of one message. A connection starts with the client's [`Hello`] (magic,
//! version, credential) and the server's [`Welcome`]; then the client sends one
//! [`Request`] at a time and reads its [`Response`].
//!
//! Frames are bounded before anything is allocated: [`MAX_HELLO`] before the credential is
//! accepted, [`MAX_FRAME`] for a join token's requests, [`MAX_MEMBER_FRAME`] for the
//! managers' own traffic (snapshot chunks). A body is read through a `take` of its
//! announced length, so a peer announcing a large frame and sending little makes us hold
//! only what it sent.
//!
//! The framing is written by hand: no maintained crate among our dependencies carries
//! openraft 0.9's RPCs over TCP, and a length prefix over plain tokio I/O is a few lines
//! (tokio-util's codec is not a dependency).

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::state::{Command, NodeId};
use super::types::TypeConfig;

/// The hello's magic: "tapnet raft".
pub(crate) const MAGIC: [u8; 4] = *b"TNRF";
/// The protocol version this build speaks.
pub(crate) const VERSION: u16 = 1;
/// The largest hello accepted (before the credential is known).
pub const MAX_HELLO: usize = 4 * 1024;
/// The largest frame accepted from a join token's holder, and of ordinary answers.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest frame accepted from a member (snapshot chunks) and read by a client.
pub const MAX_MEMBER_FRAME: usize = 64 << 20;

/// The first frame of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`MAGIC`].
    pub(crate) magic: [u8; 4],
    /// [`VERSION`].
    pub(crate) version: u16,
    /// The cluster secret or a join token.
    pub(crate) credential: String,
}

/// The server's answer to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Welcome {
    /// Go on.
    Accepted,
    /// The credential was refused; the connection closes.
    Refused(String),
}

/// A request after the hello.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Request {
    /// Raft: replicate entries or a heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a snapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded to the leader.
    ClientWrite(Command),
    /// The swarm service's own message.
    App(Vec<u8>),
}

impl Request {
    /// Whether a join token's holder may send it.
    pub(crate) fn is_app(&self) -> bool {
        matches!(self, Request::App(_))
    }
}

/// Why the server did not carry out a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum Failure {
    /// A Raft request reached a node that is not (or no longer) a manager.
    #[error("the node is not a manager")]
    NoRaft,
    /// The credential does not allow this request.
    #[error("the credential does not allow this request")]
    Forbidden,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Response {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Request::ClientWrite`].
    ClientWrite(Result<ClientWriteResponse<TypeConfig>, ClientWriteFailure>),
    /// To [`Request::App`].
    App(Vec<u8>),
    /// Not carried out.
    Failed(Failure),
}

/// A client write's error as the leader's Raft gave it.
pub(crate) type ClientWriteFailure = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The announced length is above the bound.
    #[error("frame of {0} bytes is over the bound")]
    Oversized(u64),
    /// The connection ended or stalled inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// No frame began in time.
    #[error("no frame in time")]
    Idle,
    /// The body is not a message of the expected kind.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Read one frame body of at most `max` bytes: the header must begin within `idle`, the
/// rest of the frame must follow within `body`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    idle: Duration,
    body: Duration,
) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; 4];
    let first = match tokio::time::timeout(idle, r.read(&mut head)).await {
        Err(_) => return Err(FrameError::Idle),
        Ok(n) => n?,
    };
    if first == 0 {
        return Err(FrameError::Closed);
    }
    let rest = async {
        let mut got = first;
        while got < head.len() {
            match r.read(&mut head[got..]).await? {
                0 => return Err(FrameError::Truncated),
                n => got += n,
            }
        }
        let len = u64::from(u32::from_be_bytes(head));
        if len > max as u64 {
            return Err(FrameError::Oversized(len));
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(64 * 1024));
        let n = r.take(len).read_to_end(&mut buf).await?;
        if (n as u64) < len {
            return Err(FrameError::Truncated);
        }
        Ok(buf)
    };
    match tokio::time::timeout(body, rest).await {
        Err(_) => Err(FrameError::Truncated),
        Ok(r) => r,
    }
}

/// The frame (header and body) carrying `msg`.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out =
        postcard::to_extend(msg, vec![0u8; 4]).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let body = out.len() - 4;
    let len = u32::try_from(body).map_err(|_| FrameError::Oversized(body as u64))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Write `msg` as one frame.
pub(crate) async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Decode a frame body as a `T`; trailing bytes are malformed too.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(FrameError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Decode and check a hello body: the magic and version must be ours.
pub(crate) fn decode_hello(body: &[u8]) -> Result<Hello, FrameError> {
    let h: Hello = decode(body)?;
    if h.magic != MAGIC {
        return Err(FrameError::Malformed("not a tapnet hello".into()));
    }
    if h.version != VERSION {
        return Err(FrameError::Malformed(format!(
            "protocol version {} (this node speaks {VERSION})",
            h.version
        )));
    }
    Ok(h)
}

/// Every decoder of the management port on untrusted bytes, for the fuzz target: the
/// body as a hello, a welcome, a request and a response, and what decoded re-encoded
/// and decoded again. Returns which of the four decoded; never panics, whatever the
/// bytes (a decoder that did would crash the target).
pub fn decode_untrusted(body: &[u8]) -> [bool; 4] {
    fn again<T: Serialize + DeserializeOwned>(v: &T) -> bool {
        encode(v)
            .ok()
            .and_then(|f| f.get(4..).map(|b| decode::<T>(b).is_ok()))
            .unwrap_or(false)
    }
    let hello = decode_hello(body).map(|h| again(&h));
    let welcome = decode::<Welcome>(body).map(|w| again(&w));
    let request = decode::<Request>(body).map(|r| again(&r));
    let response = decode::<Response>(body).map(|r| again(&r));
    for r in [&hello, &welcome, &request, &response] {
        assert!(
            !matches!(r, Ok(false)),
            "a decoded message must encode and decode again"
        );
    }
    [
        hello.is_ok(),
        welcome.is_ok(),
        request.is_ok(),
        response.is_ok(),
    ]
}
