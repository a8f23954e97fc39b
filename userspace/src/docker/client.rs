//! A small client of the Docker Engine API (HTTP on dockerd's unix socket,
//! through hyper): the names Docker gives containers and networks, and the
//! endpoints it still knows (for gc). The socket is `DOCKER_HOST`'s
//! (`unix://PATH`), else `/var/run/docker.sock`.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where dockerd listens when `DOCKER_HOST` does not say.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

/// A Docker container, as far as bpfnet cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Client {
    /// `host`: `unix:///path` (Docker's `-H` form) or a plain path.
    pub fn new(host: &str) -> Result<Self> {
        let path = match host.strip_prefix("unix://") {
            Some(p) => p,
            None if host.starts_with('/') => host,
            None => bail!("Docker host {host:?} is not a unix socket; give unix:///PATH"),
        };
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    /// `DOCKER_HOST` when it names a unix socket, else the default socket.
    pub fn from_env() -> Self {
        std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| Client::new(&h).ok())
            .unwrap_or_else(|| Client {
                socket: DEFAULT_SOCKET.into(),
            })
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// GET `path`; None on 404.
    async fn get(&self, path: &str) -> Result<Option<Value>> {
        let what = || format!("asking dockerd ({}) for {path}", self.socket.display());
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("Host", "docker")
                .body(Empty::<Bytes>::new())?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("no answer within {} s", TIMEOUT.as_secs()))
            .and_then(|r| r)
            .with_context(what)?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!(
                "{}: HTTP {status}: {}",
                what(),
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(Some(serde_json::from_slice(&body).with_context(what)?))
    }

    /// Every container's endpoints: EndpointID → container.
    pub async fn endpoints(&self) -> Result<BTreeMap<String, Container>> {
        let list = self
            .get("/containers/json?all=1")
            .await?
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for c in list.as_array().into_iter().flatten() {
            let id = c["Id"].as_str().unwrap_or_default().to_string();
            let name = c["Names"][0]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            let Some(nets) = c["NetworkSettings"]["Networks"].as_object() else {
                continue;
            };
            for n in nets.values() {
                if let Some(ep) = n["EndpointID"].as_str().filter(|e| !e.is_empty()) {
                    out.insert(
                        ep.to_string(),
                        Container {
                            id: id.clone(),
                            name: name.clone(),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// The EndpointIDs Docker knows: its containers' and its networks'.
    pub async fn endpoint_ids(&self) -> Result<BTreeSet<String>> {
        let mut ids: BTreeSet<String> = self.endpoints().await?.into_keys().collect();
        let nets = self.get("/networks").await?.unwrap_or_default();
        for n in nets.as_array().into_iter().flatten() {
            let id = n["Id"].as_str().unwrap_or_default();
            // The list leaves Containers out; the network itself has them.
            let Some(net) = self.get(&format!("/networks/{id}")).await? else {
                continue;
            };
            for c in net["Containers"].as_object().into_iter().flatten() {
                if let Some(ep) = c.1["EndpointID"].as_str().filter(|e| !e.is_empty()) {
                    ids.insert(ep.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// The name of network `id`, once Docker has stored it.
    pub async fn network_name(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .get(&format!("/networks/{id}"))
            .await?
            .and_then(|n| n["Name"].as_str().map(String::from)))
    }
}
