//! The worker: UDP and TCP listeners on port 53 of every user network's
//! gateway, a name table swapped whole when the state changes.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd as _,
    panic::AssertUnwindSafe,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    signal::unix::{signal, SignalKind},
    task::JoinHandle,
    time::timeout,
};

use super::{
    config::Config,
    handler::{handle, QueryAction, Transport},
    limits::{self, Pool},
    log,
    table::Table,
    upstream::{self, ResolvConf},
    Files,
};
use crate::{paths::Paths, store};

/// How often the state file is looked at (SIGUSR1 also triggers a look).
const POLL: Duration = Duration::from_millis(100);
/// The worker exits when the state directory has been gone this long.
const ORPHAN_AFTER: Duration = Duration::from_secs(1);
/// Receive buffer of the UDP sockets: bursts from many clients must fit.
const UDP_RCVBUF: usize = 4 << 20;
/// An idle TCP client is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);

struct Shared {
    table: RwLock<Arc<Table>>,
    upstreams: RwLock<Arc<Vec<SocketAddr>>>,
    /// Forwards in flight; beyond a sandbox's share, SERVFAIL at once.
    forwards: Arc<Pool>,
    tcp_conns: Arc<Pool>,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        self.table.read().expect("not poisoned").clone()
    }

    /// Where `src`'s forwards go: its sandbox's `--dns` servers, else
    /// the responder's upstreams.
    fn upstreams(&self, table: &Table, src: Ipv4Addr) -> Arc<Vec<SocketAddr>> {
        table
            .upstreams_for(src)
            .unwrap_or_else(|| self.upstreams.read().expect("not poisoned").clone())
    }
}

/// Runs the handler so that a bug in it costs one query, not the worker.
fn guarded(table: &Table, src: Ipv4Addr, msg: &[u8], t: Transport) -> QueryAction {
    std::panic::catch_unwind(AssertUnwindSafe(|| handle(table, src, msg, t))).unwrap_or_else(|_| {
        log(&format!(
            "handler panicked on a {}-byte query from {src}",
            msg.len()
        ));
        QueryAction::Drop
    })
}

fn bind(gw: Ipv4Addr, port: u16, ty: Type, proto: Protocol) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
    s.set_reuse_address(true)?;
    // The gateway may not be up yet (and never collide with a resolver on
    // another loopback address): bind it regardless.
    s.set_freebind_v4(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(gw, port)).into())
        .with_context(|| format!("binding {gw}:{port}"))?;
    Ok(s)
}

fn force_rcvbuf(s: &Socket, size: usize) {
    let v = size as libc::c_int;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = s.set_recv_buffer_size(size);
    }
}

struct Listener {
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Aborting the tasks drops (closes) their sockets.
        self.udp.abort();
        self.tcp.abort();
    }
}

fn listen(gw: Ipv4Addr, port: u16, shared: &Arc<Shared>) -> Result<Listener> {
    let u = bind(gw, port, Type::DGRAM, Protocol::UDP)?;
    force_rcvbuf(&u, UDP_RCVBUF);
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(u))?;
    let t = bind(gw, port, Type::STREAM, Protocol::TCP)?;
    t.listen(128)?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(t))?;
    Ok(Listener {
        udp: tokio::spawn(serve_udp(udp, shared.clone())),
        tcp: tokio::spawn(serve_tcp(tcp, shared.clone())),
    })
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer4) = peer else {
            continue;
        };
        let msg = &buf[..n];
        let table = shared.table();
        match guarded(&table, *peer4.ip(), msg, Transport::Udp) {
            QueryAction::Reply(r) if !r.is_empty() => {
                let _ = sock.send_to(&r, peer).await;
            }
            QueryAction::Forward { servfail, sandbox } => {
                let Some(permit) = shared.forwards.try_take(&sandbox) else {
                    let _ = sock.send_to(&servfail, peer).await;
                    continue;
                };
                let (sock, ups, q) = (
                    sock.clone(),
                    shared.upstreams(&table, *peer4.ip()),
                    msg.to_vec(),
                );
                tokio::spawn(async move {
                    let r = upstream::forward_udp(&ups, &q).await.unwrap_or(servfail);
                    let _ = sock.send_to(&r, peer).await;
                    drop(permit);
                });
            }
            QueryAction::Reply(_) | QueryAction::Drop => {}
        }
    }
}

async fn serve_tcp(l: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer4) = peer else {
            continue;
        };
        let Some(sandbox) = shared.table().sandbox_of(*peer4.ip()) else {
            continue; // dropped: closes it
        };
        let Some(permit) = shared.tcp_conns.try_take(&sandbox) else {
            continue; // over its share: closed, others keep theirs
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tcp_conn(stream, *peer4.ip(), shared).await;
            drop(permit);
        });
    }
}

async fn tcp_conn(mut s: TcpStream, src: Ipv4Addr, shared: Arc<Shared>) -> Option<()> {
    loop {
        let len = timeout(TCP_IDLE, s.read_u16()).await.ok()?.ok()?;
        let mut msg = vec![0u8; usize::from(len)];
        timeout(TCP_IDLE, s.read_exact(&mut msg)).await.ok()?.ok()?;
        let table = shared.table();
        let reply = match guarded(&table, src, &msg, Transport::Tcp) {
            QueryAction::Reply(r) => r,
            QueryAction::Forward { servfail, .. } => {
                upstream::forward_tcp(&shared.upstreams(&table, src), &msg)
                    .await
                    .unwrap_or(servfail)
            }
            QueryAction::Drop => return None,
        };
        let n = u16::try_from(reply.len()).ok()?;
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        s.write_all(&out).await.ok()?;
    }
}

/// Identity of what the responder serves, the state files and its
/// configuration: changes with every commit or save of either.
pub fn generation(paths: &Paths) -> String {
    format!(
        "{} {} {}",
        super::config::identity(&paths.state_file()),
        super::config::identity(&paths.state_log()),
        super::config::identity(&Files::new(paths).config)
    )
}

/// The worker's main loop; returns when the state directory is gone or on
/// SIGTERM.
pub async fn worker(paths: Paths) -> Result<()> {
    let files = Files::new(&paths);
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    // Only now may the CLI signal us (SIGUSR1 would have killed us before).
    files.write_pid(&files.worker_pid, std::process::id())?;
    let shared = Arc::new(Shared {
        table: RwLock::new(Arc::new(Table::default())),
        upstreams: RwLock::new(Arc::new(vec![])),
        forwards: Pool::new(limits::FORWARDS_PER_SANDBOX, limits::MAX_FORWARDS),
        tcp_conns: Pool::new(limits::TCP_PER_SANDBOX, limits::MAX_TCP),
    });
    let mut listeners: HashMap<Ipv4Addr, Listener> = HashMap::new();
    let mut config: Option<Config> = None;
    let mut loaded: Option<String> = None;
    // Only what was committed since it last looked is read.
    let mut follower = store::Follower::new(&paths);
    // The follower's `seq` the name table was last brought in line with.
    let mut table_at: Option<u64> = None;
    let mut gone_since: Option<Instant> = None;
    let mut bind_failed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log(&format!("worker {} started", std::process::id()));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = usr1.recv() => {}
            _ = term.recv() => break,
        }
        if !paths.state_dir.exists() {
            let since = *gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= ORPHAN_AFTER {
                log("state directory gone: exiting");
                break;
            }
            continue;
        }
        gone_since = None;
        let retry_bind = bind_failed_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        let gen = generation(&paths);
        if loaded.as_ref() == Some(&gen) && !retry_bind {
            continue;
        }
        let seq_before = follower.state().seq;
        let (state, changes) = match follower.refresh() {
            Ok(s) => s,
            Err(e) => {
                if loaded.is_some() {
                    log(&format!("keeping the old names: {e:#}"));
                    loaded = None;
                }
                continue;
            }
        };
        if generation(&paths) != gen {
            continue; // saved again meanwhile: next round
        }
        let new_config = match Config::load(&files) {
            Ok(c) => c,
            Err(e) => {
                // A command rewrites it; until then the last good one holds.
                log(&format!("{e:#}; keeping the last configuration"));
                config.clone().unwrap_or_default()
            }
        };
        if config.as_ref() != Some(&new_config) {
            log(&format!("configuration: {new_config:?}"));
            if config.as_ref().is_some_and(|c| c.port != new_config.port) {
                listeners.clear(); // rebound on the new port below
            }
        }
        let port = new_config.port;
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let search = ResolvConf::parse(&host).search;
        // Only sandboxes changed since the table was made: the table takes
        // in just their change, in place (nobody is reading it), else it is
        // built anew and the old one dropped after the acknowledgement.
        let updated = {
            let mut current = shared.table.write().expect("not poisoned");
            match (changes, Arc::get_mut(&mut current)) {
                (Some(c), Some(t))
                    if !c.networks && table_at == Some(seq_before) && t.searches(&search) =>
                {
                    t.update(state, &c.sandboxes);
                    true
                }
                _ => false,
            }
        };
        // (Built outside the lock: queries go on meanwhile.)
        let old_table = (!updated).then(|| {
            let table = Arc::new(Table::build(state, &search));
            std::mem::replace(&mut *shared.table.write().expect("not poisoned"), table)
        });
        table_at = Some(state.seq);
        let gateways = shared.table().gateways.clone();
        *shared.upstreams.write().expect("not poisoned") = Arc::new(new_config.upstreams(&host));
        config = Some(new_config);
        listeners.retain(|gw, _| gateways.contains(gw));
        bind_failed_at = None;
        for &gw in &gateways {
            if listeners.contains_key(&gw) {
                continue;
            }
            match listen(gw, port, &shared) {
                Ok(l) => {
                    listeners.insert(gw, l);
                }
                Err(e) => {
                    log(&format!("cannot listen on {gw}:{port}: {e:#}; retrying"));
                    bind_failed_at = Some(Instant::now());
                }
            }
        }
        files.acknowledge(&gen)?;
        loaded = Some(gen);
        drop(old_table);
    }
    Ok(())
}
