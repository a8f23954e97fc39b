//! Traffic and counters: iperf3 streams, sockperf ping-pong, our own UDP
//! packet generator (AF_PACKET + `sendmmsg`), a UDP sink, /proc counters and
//! the eBPF programs' run-time statistics.
use std::{
    ffi::CString,
    fs::File,
    mem,
    net::{IpAddr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use super::host::{read, Host, Proc};

/// Frames per `sendmmsg` call.
const BATCH: usize = 256;
/// UDP port of the sink in the receiving sandbox.
pub const SINK_PORT: u16 = 9;
const IPERF_PORT: &str = "5201";
const SOCKPERF_PORT: &str = "11111";

/// Runs `f` on a thread that entered the network namespace at `netns`;
/// sockets it makes stay in that namespace.
fn in_netns<T: Send + 'static>(
    netns: PathBuf,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    thread::spawn(move || {
        enter_netns(&netns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("a netns helper thread panicked"))?
}

fn enter_netns(netns: &PathBuf) -> Result<()> {
    let f = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    // SAFETY: setns on a valid fd; it only changes this (helper) thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            netns.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int> {
    if ret < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// The generator's CPU. The receive path runs there too, in the softirq
/// its own sends raise, as it would for any local sender.
pub const GEN_CPU: usize = 0;

/// Pins the calling thread to one CPU.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // The VM is shared: at nice -20 the generator keeps its CPU against
    // ordinary (nice 0) work of other users.
    // SAFETY: setpriority on this thread's id; no memory involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -20);
    }
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(
            libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set),
            "sched_setaffinity",
        )?;
    }
    Ok(())
}

/// A 60-byte Ethernet frame (64 on the wire with the FCS): IPv4/UDP with an
/// 18-byte payload, UDP checksum 0 (none, allowed for IPv4).
pub fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_start = f.len();
    let total_len: u16 = 20 + 8 + 18;
    f.extend_from_slice(&[0x45, 0x00]);
    f.extend_from_slice(&total_len.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0x40, 0x00, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let mut sum: u32 = f[ip_start..ip_start + 20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&9000u16.to_be_bytes());
    f.extend_from_slice(&SINK_PORT.to_be_bytes());
    f.extend_from_slice(&(8u16 + 18).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x42; 18]);
    f
}

/// The IPv6 counterpart of [`udp_frame`]: the smallest IPv6/UDP frame, 62
/// bytes (66 on the wire; IPv6's header is 20 bytes longer than IPv4's),
/// with an empty payload and the UDP checksum IPv6 requires.
pub fn udp_frame6(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    const UDP_LEN: u16 = 8;
    let mut f = Vec::with_capacity(62);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&UDP_LEN.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let udp = [
        9000u16.to_be_bytes(),
        SINK_PORT.to_be_bytes(),
        UDP_LEN.to_be_bytes(),
    ]
    .concat();
    // Pseudo-header (source, destination, length, next header) + header.
    let mut sum: u32 = [&src.octets()[..], &dst.octets()[..], &udp[..]]
        .concat()
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>()
        + u32::from(UDP_LEN)
        + 17;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    f.extend_from_slice(&udp[..6]);
    f.extend_from_slice(&csum.to_be_bytes());
    f
}

/// Our packet generator: one thread in the sender's netns writing the same
/// frame with `sendmmsg` on an AF_PACKET socket (qdisc bypassed). The skbs
/// it makes are linear, as a socket's small packets are.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<Result<()>>>,
}

impl Flood {
    pub fn start(netns: PathBuf, ifname: &str, frame: Vec<u8>) -> Result<Flood> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Result<()>>();
        let ifname = CString::new(ifname)?;
        if frame.len() < 14 {
            bail!("a frame of {} bytes has no Ethernet header", frame.len());
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let (s2, n2) = (Arc::clone(&stop), Arc::clone(&sent));
        let handle = thread::spawn(move || -> Result<()> {
            let setup = (|| -> Result<OwnedFd> {
                enter_netns(&netns)?;
                pin_to_cpu(GEN_CPU)?;
                // SAFETY: plain socket(2); the fd is owned right away.
                let fd = check(
                    unsafe {
                        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
                    },
                    "socket(AF_PACKET)",
                )?;
                // SAFETY: fd is a fresh socket we own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let one: libc::c_int = 1;
                check(
                    // SAFETY: valid fd, option value of the declared size.
                    unsafe {
                        libc::setsockopt(
                            fd.as_raw_fd(),
                            libc::SOL_PACKET,
                            20, // PACKET_QDISC_BYPASS
                            (&one as *const libc::c_int).cast(),
                            mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    },
                    "setsockopt(PACKET_QDISC_BYPASS)",
                )?;
                // SAFETY: NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
                if ifindex == 0 {
                    bail!("no interface {ifname:?} in the generator's netns");
                }
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = ethertype.to_be();
                sll.sll_ifindex = ifindex as i32;
                check(
                    // SAFETY: valid fd and address of the declared size.
                    unsafe {
                        libc::bind(
                            fd.as_raw_fd(),
                            (&sll as *const libc::sockaddr_ll).cast(),
                            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        )
                    },
                    "bind(AF_PACKET)",
                )?;
                Ok(fd)
            })();
            let fd = match setup {
                Ok(fd) => {
                    let _ = tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let mut frame = frame;
            let mut iov = libc::iovec {
                iov_base: frame.as_mut_ptr().cast(),
                iov_len: frame.len(),
            };
            let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
                .map(|_| {
                    // SAFETY: all-zero mmsghdr is valid; we fill the iovec pointers.
                    let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            while !s2.load(Ordering::Relaxed) {
                // SAFETY: msgs/iov/frame outlive the call; the socket is bound.
                let n =
                    unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
                if n > 0 {
                    n2.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => thread::yield_now(),
                        _ => bail!("sendmmsg: {e}"),
                    }
                }
            }
            Ok(())
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Flood {
                stop,
                sent,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(e.context("packet generator")),
            Err(_) => bail!("packet generator did not start within 5 s"),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow!("packet generator panicked"))??;
        }
        Ok(self.sent())
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A UDP socket bound in the receiving sandbox that never reads: datagrams
/// complete the whole receive path and are then dropped for a full buffer,
/// without the ICMP errors a closed port would send back.
pub fn udp_sink(netns: PathBuf, ip: IpAddr) -> Result<OwnedFd> {
    in_netns(netns, move || {
        let family = match ip {
            IpAddr::V4(_) => libc::AF_INET,
            IpAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: plain socket(2); owned right away.
        let fd = check(
            unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_INET/AF_INET6)",
        )?;
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ret = match ip {
            IpAddr::V4(ip) => {
                // SAFETY: all-zero sockaddr_in is valid.
                let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = SINK_PORT.to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                // SAFETY: valid fd, address of the declared size.
                unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&sa as *const libc::sockaddr_in).cast(),
                        mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            IpAddr::V6(ip) => {
                // SAFETY: all-zero sockaddr_in6 is valid.
                let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_port = SINK_PORT.to_be();
                sa.sin6_addr.s6_addr = ip.octets();
                // SAFETY: valid fd, address of the declared size.
                unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&sa as *const libc::sockaddr_in6).cast(),
                        mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        check(ret, "bind the UDP sink")?;
        Ok(fd)
    })
}

/// Interface counters from /proc/PID/net/dev (the netns of PID).
#[derive(Clone, Copy, Debug, Default)]
pub struct DevCounters {
    pub rx_packets: u64,
    pub tx_bytes: u64,
}

pub fn dev_counters(pid: u32, ifname: &str) -> Result<DevCounters> {
    let text = read(format!("/proc/{pid}/net/dev"))?;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != ifname {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 16 {
            bail!("short /proc/{pid}/net/dev line for {ifname}");
        }
        return Ok(DevCounters {
            rx_packets: v[1],
            tx_bytes: v[8],
        });
    }
    bail!("no interface {ifname} in /proc/{pid}/net/dev")
}

/// UDP datagrams that reached the UDP layer of PID's netns (delivered, to a
/// closed port, or dropped there).
pub fn udp_received(pid: u32, v6: bool) -> Result<u64> {
    if v6 {
        return udp6_received(pid);
    }
    let text = read(format!("/proc/{pid}/net/snmp"))?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        bail!("no Udp: lines in /proc/{pid}/net/snmp");
    };
    let mut total = 0;
    for (k, val) in h.split_whitespace().zip(v.split_whitespace()).skip(1) {
        if matches!(k, "InDatagrams" | "NoPorts" | "InErrors") {
            total += val.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(total)
}

/// The same for UDP over IPv6 (/proc/PID/net/snmp6).
fn udp6_received(pid: u32) -> Result<u64> {
    let text = read(format!("/proc/{pid}/net/snmp6"))?;
    let mut total = 0;
    let mut seen = 0;
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        if let (Some("Udp6InDatagrams" | "Udp6NoPorts" | "Udp6InErrors"), Some(v)) =
            (cols.next(), cols.next())
        {
            total += v.parse::<u64>().unwrap_or(0);
            seen += 1;
        }
    }
    if seen != 3 {
        bail!("no Udp6 counters in /proc/{pid}/net/snmp6");
    }
    Ok(total)
}

/// Aggregate CPU time from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (guest is inside user).
    pub busy: u64,
    pub softirq: u64,
    pub steal: u64,
    pub total: u64,
}

pub fn cpu_times() -> Result<CpuTimes> {
    let text = read("/proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    Ok(CpuTimes {
        busy: g(0) + g(1) + g(2) + g(5) + g(6),
        softirq: g(6),
        steal: g(7),
        total: (0..8).map(g).sum(),
    })
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn proc_ticks(pid: u32) -> u64 {
    let Ok(text) = read(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let g = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    g(11) + g(12)
}

/// Pids of the ksoftirqd threads (softirq work the kernel defers to them).
pub fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("ksoftirqd/")))
        .collect()
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Waits until PID's netns has a TCP socket listening on `port`.
fn wait_listen(server: &mut Proc, port: &str, timeout: Duration) -> Result<()> {
    let port: u16 = port.parse()?;
    let want = format!(":{port:04X}");
    let deadline = Instant::now() + timeout;
    loop {
        for f in ["tcp", "tcp6"] {
            if let Ok(text) = read(format!("/proc/{}/net/{f}", server.pid())) {
                let listening = text.lines().skip(1).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
                });
                if listening {
                    return Ok(());
                }
            }
        }
        if !server.is_running() || Instant::now() >= deadline {
            bail!(
                "`{}` is not listening on port {port} after {:.0} s",
                server.line,
                timeout.as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Where a measurement runs: the host, the two sandboxes and what is known
/// about them.
pub struct Pair<'a> {
    pub host: &'a Host,
    pub a: &'a str,
    pub b: &'a str,
    /// Sleepers in A and B: /proc/PID/net shows their netns.
    pub pid_a: u32,
    pub pid_b: u32,
    pub ip_b: &'a str,
    /// What A dials: B's address, or a host address that publishes B's port.
    pub dial: &'a str,
}

pub struct TcpResult {
    pub gbps: f64,
    pub cpu_s_per_gb: f64,
    pub detail: Value,
}

/// `iperf3 -P streams` from A to B for `secs`; CPU per GB from /proc/stat
/// over a window inside the run, bytes from A's eth0 tx counter.
pub fn tcp_stream(p: &Pair, streams: u32, secs: u32) -> Result<TcpResult> {
    let mut server = p
        .host
        .spawn_in(p.b, &["iperf3", "-s", "-1", "-B", p.ip_b, "-p", IPERF_PORT])?;
    wait_listen(&mut server, IPERF_PORT, Duration::from_secs(10))?;
    let run_secs = secs + 1;
    let client = p.host.spawn_in(
        p.a,
        &[
            "iperf3",
            "-c",
            p.dial,
            "-p",
            IPERF_PORT,
            "-t",
            &run_secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )?;
    let start = Instant::now();
    // CPU of this transfer: the iperf3 processes (with tick-based accounting
    // the softirq work done in their context is in their stime) plus the
    // ksoftirqd threads. Unlike /proc/stat it does not count the other
    // users of this shared VM.
    let mut ours = vec![server.pid(), client.pid()];
    ours.extend(ksoftirqd_pids());
    let ticks = |pids: &[u32]| pids.iter().map(|p| proc_ticks(*p)).sum::<u64>();
    thread::sleep(Duration::from_millis(600));
    let (c0, d0, o0, t0) = (
        cpu_times()?,
        dev_counters(p.pid_a, "eth0")?,
        ticks(&ours),
        Instant::now(),
    );
    let end = Duration::from_secs(u64::from(run_secs)) - Duration::from_millis(300);
    thread::sleep(end.saturating_sub(start.elapsed()));
    let (c1, d1, o1, t1) = (
        cpu_times()?,
        dev_counters(p.pid_a, "eth0")?,
        ticks(&ours),
        Instant::now(),
    );
    let out = client.finish_ok(Duration::from_secs(u64::from(secs) + 30))?;
    let _ = server.finish(Duration::from_secs(5));
    let v: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("iperf3 -J printed no JSON: {}", out.stdout.trim()))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    let hz = clock_ticks();
    let bytes = d1.tx_bytes.saturating_sub(d0.tx_bytes) as f64;
    let cpu_s = o1.saturating_sub(o0) as f64 / hz;
    let global_busy_s = c1.busy.saturating_sub(c0.busy) as f64 / hz;
    let total_s = c1.total.saturating_sub(c0.total) as f64 / hz;
    let steal_s = c1.steal.saturating_sub(c0.steal) as f64 / hz;
    let softirq_s = c1.softirq.saturating_sub(c0.softirq) as f64 / hz;
    let window = (t1 - t0).as_secs_f64();
    let gb = bytes / 1e9;
    Ok(TcpResult {
        gbps: bps / 1e9,
        cpu_s_per_gb: if gb > 0.0 { cpu_s / gb } else { f64::NAN },
        detail: json!({
            "streams": streams,
            "window_s": window,
            "window_gbit": bytes * 8.0 / 1e9,
            "cpu_ours_s": cpu_s,
            "cpu_global_busy_s": global_busy_s,
            "cpu_softirq_s": softirq_s,
            "cpu_steal_s": steal_s,
            "cpu_total_s": total_s,
            "steal_pct": if total_s > 0.0 { 100.0 * steal_s / total_s } else { 0.0 },
            "retransmits": v.pointer("/end/sum_sent/retransmits"),
        }),
    })
}

pub struct RrResult {
    pub p50_us: f64,
    pub p99_us: f64,
    pub detail: Value,
}

/// CPU both ends of the ping-pong run on: on this 2-vCPU VM, whether client
/// and server happened to share a CPU made the round trip ~15 µs or ~60 µs
/// (wake-up IPIs), which drowned the datapath's share. On one CPU the whole
/// round trip is the path under test, the same for every contender.
const RR_CPU: &str = "1";

/// sockperf TCP ping-pong A → B (full round-trip times), both ends pinned.
pub fn tcp_rr(p: &Pair, secs: u32) -> Result<RrResult> {
    let mut server = p.host.spawn_in(
        p.b,
        &[
            "taskset",
            "-c",
            RR_CPU,
            "sockperf",
            "server",
            "--tcp",
            "-i",
            p.ip_b,
            "-p",
            SOCKPERF_PORT,
        ],
    )?;
    wait_listen(&mut server, SOCKPERF_PORT, Duration::from_secs(10))?;
    let out = p.host.run_full(
        &[
            "ip",
            "netns",
            "exec",
            p.a,
            "taskset",
            "-c",
            RR_CPU,
            "nice",
            "-n",
            "-20",
            "sockperf",
            "ping-pong",
            "--tcp",
            "-i",
            p.ip_b,
            "-p",
            SOCKPERF_PORT,
            "-t",
            &secs.to_string(),
            "--full-rtt",
        ],
        None,
        Duration::from_secs(u64::from(secs) + 30),
    )?;
    let _ = server.stop();
    let text = format!("{}\n{}", out.stdout, out.stderr);
    if out.code != 0 {
        bail!(
            "sockperf ping-pong failed (exit {}): {}",
            out.code,
            text.trim()
        );
    }
    let pct = |p: &str| -> Result<f64> {
        let key = format!("percentile {p} =");
        text.lines()
            .find_map(|l| l.split_once(&key).map(|(_, v)| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("sockperf printed no `{key}` line: {}", text.trim()))
    };
    let obs = text
        .lines()
        .find_map(|l| l.split_once("Total ").map(|(_, r)| r.to_string()))
        .and_then(|r| {
            r.trim_start_matches(|c: char| !c.is_ascii_digit())
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        });
    Ok(RrResult {
        p50_us: pct("50.000")?,
        p99_us: pct("99.000")?,
        detail: json!({ "observations": obs, "p99_9_us": pct("99.900").ok() }),
    })
}

pub struct UdpResult {
    /// Counted at the receiver's UDP layer.
    pub pps: f64,
    pub detail: Value,
}

/// UDP 64-byte flood A → B for `secs` after a short warm-up; packets are
/// counted at B's UDP layer (and at B's eth0 for reference).
pub fn udp_flood(p: &Pair, frame: Vec<u8>, ip_b: IpAddr, secs: f64) -> Result<UdpResult> {
    let v6 = ip_b.is_ipv6();
    // Ethernet + IP + UDP headers before the payload.
    let payload = frame
        .len()
        .saturating_sub(if v6 { 14 + 40 + 8 } else { 14 + 20 + 8 });
    let sink = udp_sink(p.host.netns_path(p.b), ip_b)?;
    let flood = Flood::start(p.host.netns_path(p.a), "eth0", frame)?;
    thread::sleep(Duration::from_millis(400));
    let (r0, i0, s0, t0) = (
        udp_received(p.pid_b, v6)?,
        dev_counters(p.pid_b, "eth0")?,
        flood.sent(),
        Instant::now(),
    );
    thread::sleep(Duration::from_secs_f64(secs));
    let (r1, i1, s1, t1) = (
        udp_received(p.pid_b, v6)?,
        dev_counters(p.pid_b, "eth0")?,
        flood.sent(),
        Instant::now(),
    );
    flood.stop()?;
    // The kernel checks a UDP checksum only when the datagram is read, so
    // the counters above would take broken frames too: one is read here and
    // must come out whole.
    let mut buf = [0u8; 64];
    // SAFETY: recv into a buffer of the given size on a socket we own.
    let n = unsafe {
        libc::recv(
            sink.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 || n as usize != payload {
        bail!(
            "the UDP sink in {} holds no intact datagram ({}; a bad checksum?)",
            p.b,
            if n < 0 {
                std::io::Error::last_os_error().to_string()
            } else {
                format!("{n} bytes, not {payload}")
            }
        );
    }
    let dt = (t1 - t0).as_secs_f64();
    let recv = r1.saturating_sub(r0) as f64 / dt;
    let sent = s1.saturating_sub(s0) as f64 / dt;
    Ok(UdpResult {
        pps: recv,
        detail: json!({
            "window_s": dt,
            "sent_pps": sent,
            "eth0_rx_pps": i1.rx_packets.saturating_sub(i0.rx_packets) as f64 / dt,
            "delivered_pct": if sent > 0.0 { 100.0 * recv / sent } else { 0.0 },
        }),
    })
}

/// The generator alone: into a veth pair inside the sender's own netns whose
/// far end drops the frames at once (foreign destination MAC).
pub fn generator_sink(host: &Host, sandbox: &str, pid: u32, secs: f64) -> Result<UdpResult> {
    let frame = udp_frame(
        [0x02, 0, 0, 0, 0, 0x10],
        [0x02, 0, 0, 0, 0, 0x11],
        [10, 255, 0, 1],
        [10, 255, 0, 2],
    );
    let flood = Flood::start(host.netns_path(sandbox), "gsink0", frame)?;
    thread::sleep(Duration::from_millis(400));
    let (i0, s0, t0) = (dev_counters(pid, "gsink1")?, flood.sent(), Instant::now());
    thread::sleep(Duration::from_secs_f64(secs));
    let (i1, s1, t1) = (dev_counters(pid, "gsink1")?, flood.sent(), Instant::now());
    flood.stop()?;
    let dt = (t1 - t0).as_secs_f64();
    let rx = i1.rx_packets.saturating_sub(i0.rx_packets) as f64 / dt;
    let sent = s1.saturating_sub(s0) as f64 / dt;
    Ok(UdpResult {
        pps: rx,
        detail: json!({ "window_s": dt, "sent_pps": sent }),
    })
}

/// Kernel-wide BPF run-time statistics, on while this fd is open
/// (`BPF_ENABLE_STATS`): closed when the bench ends, however it ends, unlike
/// the `kernel.bpf_stats_enabled` sysctl.
pub struct BpfStats(#[allow(dead_code)] OwnedFd);

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr, enable_stats = { type: BPF_STATS_RUN_TIME (0) }.
        let attr = [0u32; 4];
        // SAFETY: bpf(2) with a zeroed attr of the given size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                mem::size_of_val(&attr) as libc::c_uint,
            )
        };
        if fd < 0 {
            bail!("bpf(BPF_ENABLE_STATS): {}", std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that we own.
        Ok(BpfStats(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
}

/// run_time_ns and run_cnt of each bpfnet program pinned in the host.
pub fn prog_stats(host: &Host) -> Result<Vec<(String, u64, u64)>> {
    let list = host.sh("find /sys/fs/bpf/bpfnet -path '*/progs/*' -type f 2>/dev/null; true")?;
    let mut v = Vec::new();
    for path in list.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let out = host.run(&["bpftool", "-j", "prog", "show", "pinned", path.trim()])?;
        let j: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("bpftool prog show pinned {path}: not JSON"))?;
        let name = j["name"].as_str().unwrap_or("?").to_string();
        v.push((
            name,
            j["run_time_ns"].as_u64().unwrap_or(0),
            j["run_cnt"].as_u64().unwrap_or(0),
        ));
    }
    if v.is_empty() {
        bail!("no bpfnet programs pinned under /sys/fs/bpf/bpfnet/*/progs");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one's-complement sum over the pseudo-header and the UDP header,
    /// checksum included, is all ones for a correct checksum.
    #[test]
    fn ipv6_frame_is_the_smallest_with_a_valid_udp_checksum() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd42:90::2".parse().unwrap(), "fd42:90::3".parse().unwrap());
        let f = udp_frame6([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst);
        assert_eq!(f.len(), 62);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 8, "payload length");
        let mut sum: u32 = [&f[22..54], &f[54..62], &[0, 8, 0, 17][..]]
            .concat()
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
