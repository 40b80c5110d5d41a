//! A small HTTP/1.1 client of the daemon's control API (one request per
//! connection over the Unix socket).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

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

    /// `GET route`; the JSON answer, or the server's error message.
    pub async fn get(&self, route: &str) -> Result<Value> {
        self.call(Method::GET, route, None).await
    }

    /// `POST route` with a JSON body.
    pub async fn post(&self, route: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, route, Some(body)).await
    }

    async fn call(&self, method: Method, route: &str, body: Option<&Value>) -> Result<Value> {
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|_| {
                anyhow!(
                    "no shoal daemon answers on {}: start one with `shoal up` (or pass --socket)",
                    self.path.display()
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("cannot talk HTTP to the daemon")?;
        let conn = tokio::spawn(conn);
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(route)
            .header(hyper::header::HOST, "shoal")
            .header(hyper::header::CONNECTION, "close");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(bytes))?;
        let resp = sender
            .send_request(req)
            .await
            .context("the daemon closed the connection without answering")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("cannot read the daemon's answer")?
            .to_bytes();
        drop(sender);
        let _ = conn.await;
        let value: Value = serde_json::from_slice(&body)
            .with_context(|| format!("the daemon's answer ({status}) is not JSON"))?;
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("the daemon answered {status}"));
            bail!("{msg}");
        }
        Ok(value)
    }
}
