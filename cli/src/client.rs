//! A small HTTP/1.1 client of the daemon's control API (one request per
//! connection over the Unix socket).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use shoal_api::ErrorBody;

/// Why a call of the control API failed. Followers retry the transient
/// ones ([`ClientError::is_transient`]); everything else is shown as is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections on the socket (no file, or nobody
    /// listening on it).
    #[error("no shoal daemon answers on {}: start one with `shoal up` (or pass --socket)", path.display())]
    NoDaemon {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke before a whole answer came back.
    #[error("{what}: {source}")]
    Broken {
        what: &'static str,
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered with an error status and its message.
    #[error("{message}")]
    Status { status: StatusCode, message: String },
    /// The answer is not JSON.
    #[error("the daemon's answer ({status}) is not JSON: {source}")]
    NotJson {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
    /// The answer is JSON, but not of the shape this CLI reads.
    #[error("the daemon's answer is not what this shoal expects: {source}")]
    Shape {
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl ClientError {
    /// Whether asking again later may succeed: the daemon is gone or
    /// restarting, the connection broke, or the daemon answered a 5xx
    /// other than 502 (it is stopping, or the node it asked did not
    /// answer in time). A 502 is the asked node's own refusal (no such
    /// container, no runtime, a closed follow session) and a 4xx a
    /// mistake in the request: asking again gives the same answer.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::NoDaemon { .. } | ClientError::Broken { .. } => true,
            ClientError::Status { status, .. } => {
                status.is_server_error() && *status != StatusCode::BAD_GATEWAY
            }
            ClientError::NotJson { .. } | ClientError::Shape { .. } | ClientError::Request(_) => {
                false
            }
        }
    }

    /// The asked node refused (a 502 from the daemon): see [`Self::is_transient`].
    pub fn is_node_refusal(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if *status == StatusCode::BAD_GATEWAY)
    }
}

/// The control socket of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: &Path) -> Client {
        Client {
            path: path.to_path_buf(),
        }
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// `GET route`; the answer, or the server's error message.
    pub async fn get<T: DeserializeOwned>(&self, route: &str) -> anyhow::Result<T> {
        Ok(self.try_get(route).await?)
    }

    /// `GET route`, with the error kept typed (for callers that retry).
    pub async fn try_get<T: DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        let body = self.call(Method::GET, route, None).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Shape { source })
    }

    /// `POST route` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Request(e.to_string()))?;
        let answer = self.call(Method::POST, route, Some(body)).await?;
        Ok(serde_json::from_slice(&answer).map_err(|source| ClientError::Shape { source })?)
    }

    /// One exchange; the answer's bytes, checked to be JSON, when its
    /// status is a success.
    async fn call(
        &self,
        method: Method,
        route: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|source| ClientError::NoDaemon {
                path: self.path.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Broken {
                what: "cannot talk HTTP to the daemon",
                source,
            })?;
        let conn = tokio::spawn(conn);
        let has_body = body.is_some();
        let bytes = body.map(Bytes::from).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(route)
            .header(hyper::header::HOST, "shoal")
            .header(hyper::header::CONNECTION, "close");
        if has_body {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Broken {
                what: "the daemon closed the connection without answering",
                source,
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Broken {
                what: "cannot read the daemon's answer",
                source,
            })?
            .to_bytes();
        drop(sender);
        let _ = conn.await;
        serde_json::from_slice::<IgnoredAny>(&body)
            .map_err(|source| ClientError::NotJson { status, source })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("the daemon answered {status}"));
            return Err(ClientError::Status { status, message });
        }
        Ok(body)
    }
}
