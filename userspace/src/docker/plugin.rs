//! The server: axum on the plugin's unix socket. Requests are answered one at
//! a time by a worker thread that takes bpfnet's lock per call (so the CLI
//! runs between them) and runs the same operations as the CLI. The plugin
//! holds nothing the datapath needs: killed and restarted, it changes no
//! forwarding, and Docker does not notice (it activates a driver once).
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use axum::{
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::{api, client::Client, options, ports};
use crate::{
    ipam,
    ops::{
        docker::{endpoint_mac, provisional_network_name, DockerJoin, DockerNetworkCreate},
        Controller,
    },
    paths::Paths,
    store,
};

/// Where Docker looks for plugins; the socket's name is the driver's name.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/bpfnet.sock";

/// How long a name is looked for in Docker's API after a Join or a
/// CreateNetwork (Docker stores both only once the driver has answered).
const NAMING_FOR: Duration = Duration::from_secs(60);

pub struct Opts {
    pub socket: PathBuf,
    /// dockerd's API socket (`unix:///PATH`); None: `DOCKER_HOST`, else
    /// `/var/run/docker.sock`.
    pub docker_host: Option<String>,
}

type Reply = std::result::Result<Value, (StatusCode, String)>;

enum Job {
    Http {
        path: String,
        body: Bytes,
        reply: oneshot::Sender<Reply>,
    },
    NameSandbox {
        endpoint_id: String,
        container_id: String,
        name: String,
    },
    NameNetwork {
        id: String,
        name: String,
    },
}

/// `bpfnet docker-plugin`: serves until SIGTERM or SIGINT, then removes its
/// socket.
pub fn run(paths: Paths, opts: Opts) -> Result<()> {
    let client = match &opts.docker_host {
        Some(h) => Client::new(h)?,
        None => Client::from_env(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(paths, opts.socket, client))
}

async fn serve(paths: Paths, socket: PathBuf, client: Client) -> Result<()> {
    // Loads the datapath and recovers what a crash interrupted before the
    // first call comes.
    drop(Controller::open(&paths).await?);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            bail!(
                "another process serves {} already; stop it first",
                socket.display()
            );
        }
        // Left by a plugin that was killed.
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing the stale {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let (tx, rx) = mpsc::channel(64);
    let weak = tx.downgrade();
    let worker = std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || Worker::new(paths, client, weak).run(rx))?;
    let driver = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!(
        "bpfnet docker-plugin: serving driver {driver:?} on {}",
        socket.display()
    );
    let app = Router::new().fallback(handle).with_state(tx);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
    let _ = std::fs::remove_file(&socket);
    // The worker ends once every sender is gone (the router's went with it).
    let _ = worker.join();
    eprintln!("bpfnet docker-plugin: stopped");
    served.context("serving the plugin socket")
}

async fn handle(State(tx): State<mpsc::Sender<Job>>, uri: Uri, body: Bytes) -> Response {
    let (reply, answer) = oneshot::channel();
    let path = uri.path().trim_start_matches('/').to_string();
    let sent = tx.send(Job::Http { path, body, reply }).await;
    let result = match sent {
        Ok(()) => answer.await.unwrap_or_else(|_| {
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "bpfnet docker-plugin is stopping".into(),
            ))
        }),
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "bpfnet docker-plugin is stopping".into(),
        )),
    };
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err((status, e)) => (status, Json(json!({ "Err": e }))).into_response(),
    }
}

/// An endpoint between CreateEndpoint and Join.
struct Pending {
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    mac: [u8; 6],
    received: Instant,
    spent: Duration,
}

struct Worker {
    paths: Paths,
    client: Client,
    /// For the namers (weak: the worker ends when the server is gone).
    tx: mpsc::WeakSender<Job>,
    pending: HashMap<String, Pending>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn parse<T: serde::de::DeserializeOwned>(call: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).with_context(|| format!("{call}: malformed request"))
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        bail!("invalid MAC address {s:?}");
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| anyhow!("invalid MAC address {s:?}"))?;
    }
    Ok(mac)
}

/// `10.77.0.2/24` → the address.
fn address(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse::<Ipv4Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv4Addr>())
        .map_err(|_| anyhow!("invalid {what} {s:?}: expected an IPv4 address"))
}

/// An IPv6 address as Docker sends one (`fd64::2/64` or bare).
fn address6(s: &str, what: &str) -> Result<Ipv6Addr> {
    s.parse::<Ipv6Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv6Addr>())
        .map_err(|_| anyhow!("invalid {what} {s:?}: expected an IPv6 address"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Worker {
    fn new(paths: Paths, client: Client, tx: mpsc::WeakSender<Job>) -> Self {
        Worker {
            paths,
            client,
            tx,
            pending: HashMap::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            self.name_the_unnamed();
            while let Some(job) = rx.recv().await {
                self.job(job).await;
            }
        });
    }

    async fn job(&mut self, job: Job) {
        match job {
            Job::Http { path, body, reply } => {
                let start = Instant::now();
                let result = self.call(&path, &body).await;
                let took = ms(start.elapsed());
                let result = match result {
                    Ok(v) => {
                        eprintln!("docker-plugin: {path}: ok ({took})");
                        Ok(v)
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        eprintln!("docker-plugin: {path}: error ({took}): {e}");
                        let status =
                            if path.starts_with("NetworkDriver.") || path.starts_with("Plugin.") {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::NOT_FOUND
                            };
                        Err((status, e))
                    }
                };
                let _ = reply.send(result);
            }
            Job::NameSandbox {
                endpoint_id,
                container_id,
                name,
            } => {
                let r = async {
                    let mut c = Controller::open(&self.paths).await?;
                    c.docker_name_sandbox(&endpoint_id, &container_id, &name)
                        .await
                }
                .await;
                match r {
                    Ok(Some(n)) => eprintln!("docker-plugin: container {name} is sandbox {n}"),
                    Ok(None) => {}
                    Err(e) => eprintln!("docker-plugin: naming sandbox {name}: {e:#}"),
                }
            }
            Job::NameNetwork { id, name } => {
                let r = async {
                    let mut c = Controller::open(&self.paths).await?;
                    c.docker_name_network(&id, &name).await
                }
                .await;
                match r {
                    Ok(Some(n)) => eprintln!("docker-plugin: Docker network {name} is network {n}"),
                    Ok(None) => {}
                    Err(e) => eprintln!("docker-plugin: naming network {name}: {e:#}"),
                }
            }
        }
    }

    async fn call(&mut self, path: &str, body: &[u8]) -> Result<Value> {
        Ok(match path {
            "Plugin.Activate" => json!({ "Implements": ["NetworkDriver"] }),
            "NetworkDriver.GetCapabilities" => {
                json!({ "Scope": "local", "ConnectivityScope": "local" })
            }
            "NetworkDriver.CreateNetwork" => self.create_network(parse(path, body)?).await?,
            "NetworkDriver.DeleteNetwork" => {
                let r: api::NetworkRef = parse(path, body)?;
                let mut c = Controller::open(&self.paths).await?;
                c.docker_network_delete(&r.network_id).await?;
                json!({})
            }
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(parse(path, body)?)?,
            "NetworkDriver.Join" => self.join(parse(path, body)?).await?,
            "NetworkDriver.Leave" => {
                // Docker takes the container end out of the container
                // itself; the pair goes at DeleteEndpoint.
                let _: api::EndpointRef = parse(path, body)?;
                json!({})
            }
            "NetworkDriver.DeleteEndpoint" => {
                let r: api::EndpointRef = parse(path, body)?;
                self.pending.remove(&r.endpoint_id);
                let mut c = Controller::open(&self.paths).await?;
                c.docker_endpoint_delete(&r.endpoint_id).await?;
                json!({})
            }
            "NetworkDriver.EndpointOperInfo" => {
                let r: api::EndpointRef = parse(path, body)?;
                let state = store::snapshot(&self.paths)?;
                let found = state
                    .endpoints()
                    .find(|(s, e)| s.docker.is_some() && e.id == r.endpoint_id);
                match found {
                    Some((s, e)) => json!({ "Value": {
                        "bpfnet.sandbox": s.name, "bpfnet.host-interface": e.host_ifname,
                    }}),
                    None => json!({ "Value": {} }),
                }
            }
            "NetworkDriver.ProgramExternalConnectivity" => {
                let r: api::EndpointRef = parse(path, body)?;
                let (_, bindings) = ports::from_options(&r.options.unwrap_or_default())?;
                let mut c = Controller::open(&self.paths).await?;
                ports::publish(&mut c, &r.endpoint_id, &bindings).await?;
                json!({})
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                let r: api::EndpointRef = parse(path, body)?;
                let mut c = Controller::open(&self.paths).await?;
                ports::unpublish(&mut c, &r.endpoint_id).await?;
                json!({})
            }
            // Sent only with a global scope; nothing to learn here.
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => json!({}),
            other => {
                bail!("bpfnet does not implement {other:?} (it is a local-scope NetworkDriver)")
            }
        })
    }

    async fn create_network(&mut self, r: api::CreateNetwork) -> Result<Value> {
        let v6 = match r.ipv6.as_deref().unwrap_or_default() {
            [] => None,
            [one] => {
                let subnet: Ipv6Net = one
                    .pool
                    .parse()
                    .map_err(|_| anyhow!("invalid IPv6 subnet {:?}", one.pool))?;
                if one.gateway.is_empty() {
                    bail!("no gateway given for subnet {subnet}");
                }
                Some((subnet, address6(&one.gateway, "IPv6 gateway")?))
            }
            _ => bail!("bpfnet networks have one IPv6 subnet; give one IPv6 --subnet"),
        };
        let v4 = match r.ipv4.as_slice() {
            [one] => one,
            [] => bail!("no IPv4 subnet given; create the network with --subnet"),
            _ => bail!("bpfnet networks have one IPv4 subnet; give --subnet once"),
        };
        let subnet: Ipv4Net = v4
            .pool
            .parse()
            .map_err(|_| anyhow!("invalid subnet {:?}", v4.pool))?;
        if v4.gateway.is_empty() {
            bail!("no gateway given for subnet {subnet}");
        }
        let gateway = address(&v4.gateway, "gateway")?;
        let (internal, options) = options::from_create(&r.options)?;
        let mut c = Controller::open(&self.paths).await?;
        let net = c
            .docker_network_create(DockerNetworkCreate {
                id: r.network_id.clone(),
                subnet,
                gateway,
                v6,
                internal,
                options,
            })
            .await?;
        drop(c);
        if net.name == provisional_network_name(&net.id) {
            self.name_network(net.id);
        }
        Ok(json!({}))
    }

    fn create_endpoint(&mut self, r: api::CreateEndpoint) -> Result<Value> {
        let start = Instant::now();
        let iface = r.interface.unwrap_or_default();
        if iface.address.is_empty() {
            bail!("no IPv4 address given: bpfnet takes the address Docker's IPAM chose");
        }
        let ip = address(&iface.address, "address")?;
        let ip6 = (!iface.address_ipv6.is_empty())
            .then(|| address6(&iface.address_ipv6, "IPv6 address"))
            .transpose()?;
        // Checked against the committed state now, so that a conflict fails
        // here rather than at Join.
        let state = store::snapshot(&self.paths)?;
        let net = state
            .networks
            .values()
            .find(|n| n.options.get(crate::ops::docker::DOCKER_NETWORK_ID) == Some(&r.network_id))
            .ok_or_else(|| {
                anyhow!(
                    "network {} is not in bpfnet's state (made with another BPFNET_ROOT?); recreate it with `docker network rm` and `docker network create -d bpfnet`",
                    short(&r.network_id)
                )
            })?;
        ipam::allocate(&state, net, Some(ip))?;
        if net.ipv6() && ip6.is_none() {
            bail!("no IPv6 address given on a dual-stack network: bpfnet takes the address Docker's IPAM chose");
        }
        ipam::allocate6(&state, net, ip6)?;
        ports::from_options(&r.options.unwrap_or_default())?;
        let given = (!iface.mac_address.is_empty())
            .then(|| parse_mac(&iface.mac_address))
            .transpose()?;
        let mac = endpoint_mac(given, ip);
        self.pending.insert(
            r.endpoint_id,
            Pending {
                ip,
                ip6,
                mac,
                received: start,
                spent: start.elapsed(),
            },
        );
        Ok(match given {
            Some(_) => json!({}),
            None => json!({ "Interface": { "MacAddress": crate::util::fmt_mac(&mac) } }),
        })
    }

    async fn join(&mut self, r: api::Join) -> Result<Value> {
        let start = Instant::now();
        let p = self.pending.remove(&r.endpoint_id).ok_or_else(|| {
            anyhow!(
                "endpoint {} was created before this bpfnet docker-plugin started; start the container again",
                short(&r.endpoint_id)
            )
        })?;
        let mut c = Controller::open(&self.paths).await?;
        let joined = c
            .docker_join(DockerJoin {
                network_id: r.network_id.clone(),
                endpoint_id: r.endpoint_id.clone(),
                ip: p.ip,
                ip6: p.ip6,
                mac: p.mac,
                sandbox_key: r.sandbox_key.into(),
            })
            .await?;
        drop(c);
        let mut reply = Map::new();
        reply.insert(
            "InterfaceName".into(),
            json!({ "SrcName": joined.peer, "DstPrefix": "eth" }),
        );
        if let Some(gw6) = joined.gateway6 {
            reply.insert("GatewayIPv6".into(), json!(gw6.to_string()));
        }
        match joined.gateway {
            Some(gw) => {
                reply.insert("Gateway".into(), json!(gw.to_string()));
            }
            // Internal: no default route, and no docker_gwbridge either.
            None => {
                reply.insert("DisableGatewayService".into(), json!(true));
            }
        }
        eprintln!(
            "docker-plugin: endpoint {} of sandbox {}: {} in bpfnet (CreateEndpoint {} + Join {}), {} from CreateEndpoint to Join's reply",
            short(&r.endpoint_id),
            joined.sandbox,
            ms(p.spent + start.elapsed()),
            ms(p.spent),
            ms(start.elapsed()),
            ms(p.received.elapsed()),
        );
        self.name_sandbox(r.endpoint_id);
        Ok(Value::Object(reply))
    }

    /// Looks for the container of `endpoint_id` in Docker's API (Docker
    /// lists it once the Join has been answered) and names the sandbox
    /// after it.
    fn name_sandbox(&self, endpoint_id: String) {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        tokio::spawn(async move {
            let until = Instant::now() + NAMING_FOR;
            while Instant::now() < until {
                if let Ok(eps) = client.endpoints().await {
                    if let Some(c) = eps.get(&endpoint_id) {
                        if let Some(tx) = tx.upgrade() {
                            let _ = tx
                                .send(Job::NameSandbox {
                                    endpoint_id,
                                    container_id: c.id.clone(),
                                    name: c.name.clone(),
                                })
                                .await;
                        }
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "docker-plugin: Docker's API ({}) did not show the container of endpoint {}; its sandbox keeps its docker-… name",
                client.socket().display(),
                short(&endpoint_id)
            );
        });
    }

    /// The same for a network Docker created.
    fn name_network(&self, id: String) {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        tokio::spawn(async move {
            let until = Instant::now() + NAMING_FOR;
            while Instant::now() < until {
                if let Ok(Some(name)) = client.network_name(&id).await {
                    if let Some(tx) = tx.upgrade() {
                        let _ = tx.send(Job::NameNetwork { id, name }).await;
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "docker-plugin: Docker's API ({}) did not show network {}; it keeps its docker-… name",
                client.socket().display(),
                short(&id)
            );
        });
    }

    /// After a restart: names what Docker named while the plugin was away.
    fn name_the_unnamed(&self) {
        let Ok(state) = store::snapshot(&self.paths) else {
            return;
        };
        for n in state.networks.values() {
            if n.name == provisional_network_name(&n.id)
                && n.options
                    .contains_key(crate::ops::docker::DOCKER_NETWORK_ID)
            {
                self.name_network(n.id.clone());
            }
        }
        for s in state.sandboxes.values() {
            if s.docker.as_ref().is_some_and(|d| d.container_id.is_none()) {
                if let Some(e) = s.endpoints.first() {
                    self.name_sandbox(e.id.clone());
                }
            }
        }
    }
}
