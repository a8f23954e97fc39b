//! Traffic probes shared by the policy and icc tests: echo servers that log
//! what reaches them, and a client that tries several TCP/UDP flows at once
//! (failures cost one timeout in total, not one each).

#![allow(dead_code)]

use std::time::Duration;

use bpfnet_tests::{Bg, Output, TestHost, PYTHON};

/// `python3 flow.py CMD ARGS…` (see [`script`])
///
/// - `tcp-server ADDR PORT…`: echo server; prints `ready`, then
///   `conn PORT PEER` per accepted connection and `data PORT PEER TEXT` per
///   chunk received (echoed back).
/// - `udp-server ADDR PORT…`: prints `ready`, then `got PORT PEER ttl=N TEXT`
///   per datagram, and answers `echo:TEXT`.
/// - `probe TIMEOUT SPEC…` (SPEC = tcp:IP:PORT or udp:IP:PORT): tries every
///   flow at once; prints `ok SPEC` or `fail SPEC WHY`, in SPEC order.
/// - `udp-burst IP PORT N INTERVAL`: N exchanges with a udp-server, each
///   from a new socket (a new flow), INTERVAL s apart; prints `lost K of N`.
/// - `stream IP PORT INTERVAL`: one TCP connection; sends `seq N` every
///   INTERVAL s, prints `echo N` per answer, until killed.
pub const FLOW_PY: &str = r#"
import socket, sys, threading, time

from bnt import tcp_exchange, tcp_listener  # bnt.py, in the same directory

IP_RECVTTL, IP_TTL = 12, 2

def out(*a):
    print(*a, flush=True)

def tcp_server(addr, *ports):
    def serve(c, port, peer):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                out("data", port, peer, d.decode(errors="replace").strip())
                c.sendall(d)
        except OSError:
            pass
        c.close()
    def accept(s, port):
        while True:
            c, peer = s.accept()
            out("conn", port, peer[0])
            threading.Thread(target=serve, args=(c, port, peer[0]), daemon=True).start()
    socks = []
    for p in ports:
        socks.append((tcp_listener(addr, p, 64), p))
    for s, p in socks:
        threading.Thread(target=accept, args=(s, p), daemon=True).start()
    out("ready")
    while True:
        time.sleep(3600)

def udp_server(addr, *ports):
    def serve(s, port):
        while True:
            d, anc, _, peer = s.recvmsg(65536, socket.CMSG_SPACE(4))
            ttl = "?"
            for level, kind, data in anc:
                if level == socket.IPPROTO_IP and kind == IP_TTL:
                    ttl = int.from_bytes(data[:4], sys.byteorder)
            out("got", port, peer[0], "ttl=%s" % ttl, d.decode(errors="replace"))
            s.sendto(b"echo:" + d, peer)
    socks = []
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        s.bind((addr, int(p)))
        socks.append((s, p))
    for s, p in socks:
        threading.Thread(target=serve, args=(s, p), daemon=True).start()
    out("ready")
    while True:
        time.sleep(3600)

def try_flow(spec, timeout, res, i):
    proto, ip, port = spec.split(":")
    msg = ("bnt-%s-%s" % (proto, port)).encode()
    try:
        if proto == "tcp":
            got = tcp_exchange(ip, port, msg, timeout)
            ok = got == msg
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(msg, (ip, int(port)))
            got, _ = s.recvfrom(65536)
            ok = got == b"echo:" + msg
        res[i] = "ok" if ok else "fail wrong answer %r" % got
    except Exception as e:
        res[i] = "fail %s" % (type(e).__name__,)

def probe(timeout, *specs):
    res = [None] * len(specs)
    ts = [threading.Thread(target=try_flow, args=(sp, float(timeout), res, i))
          for i, sp in enumerate(specs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for sp, r in zip(specs, res):
        word, _, why = r.partition(" ")
        out(word, sp, why)

def udp_burst(ip, port, n, interval):
    lost = 0
    for i in range(int(n)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        msg = b"burst %d" % i
        try:
            s.sendto(msg, (ip, int(port)))
            got, _ = s.recvfrom(65536)
            if got != b"echo:" + msg:
                lost += 1
        except OSError:
            lost += 1
        s.close()
        time.sleep(float(interval))
    out("lost", lost, "of", n)

def stream(ip, port, interval):
    s = socket.create_connection((ip, int(port)), timeout=3)
    s.settimeout(float(interval))
    n = 0
    while True:
        s.sendall(b"seq %d\n" % n)
        try:
            d = s.recv(65536)
            if not d:
                out("closed")
                return
            for line in d.decode().split("\n"):
                if line.startswith("seq "):
                    out("echo", line[4:])
        except socket.timeout:
            pass
        n += 1
        time.sleep(float(interval))

{"tcp-server": tcp_server, "udp-server": udp_server, "probe": probe,
 "stream": stream, "udp-burst": udp_burst}[sys.argv[1]](*sys.argv[2:])
"#;

/// Path of FLOW_PY written next to the harness's traffic helper (in the test
/// host's own directory); written on first use.
pub fn script(h: &TestHost) -> String {
    let path = std::path::Path::new(&h.py()).with_file_name("flow.py");
    if !path.exists() {
        std::fs::write(&path, FLOW_PY)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    path.to_string_lossy().into_owned()
}

/// Starts FLOW_PY's `args` in the background in `sandbox`.
pub fn spawn(h: &TestHost, sandbox: &str, args: &[&str]) -> Bg {
    let py = script(h);
    let mut v = vec![PYTHON, py.as_str()];
    v.extend_from_slice(args);
    h.spawn_in(sandbox, &v)
}

/// How long a probe waits before calling a flow blocked.
pub const PROBE_TIMEOUT: &str = "1.0";

/// Starts an echo server (`tcp` or `udp`) in `sandbox` on `ports`; returns
/// once it listens.
pub fn server(h: &TestHost, sandbox: &str, proto: &str, ports: &[u16]) -> Bg {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let cmd = format!("{proto}-server");
    let mut args = vec![cmd.as_str(), "0.0.0.0"];
    args.extend(ports.iter().map(String::as_str));
    let mut bg = spawn(h, sandbox, &args);
    bg.wait_line("ready", Duration::from_secs(10));
    bg
}

/// `proto:ip:port`.
pub fn spec(proto: &str, ip: &str, port: u16) -> String {
    format!("{proto}:{ip}:{port}")
}

/// Tries every flow from `sandbox` at once; returns the probe's output and
/// whether each flow got its echo.
pub fn probe(h: &TestHost, sandbox: &str, specs: &[String]) -> (Output, Vec<bool>) {
    let py = script(h);
    let mut args = vec![PYTHON, py.as_str(), "probe", PROBE_TIMEOUT];
    args.extend(specs.iter().map(String::as_str));
    let o = h.exec_in(sandbox, &args);
    assert!(o.success(), "probe failed to run:\n{o}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), specs.len(), "one line per flow:\n{o}");
    let ok = lines.iter().map(|l| l.starts_with("ok ")).collect();
    (o, ok)
}

/// Asserts, for flows from `sandbox`, which get through (`true`) and which
/// don't; on failure shows the probe output, the rules and the drops.
pub fn expect(h: &TestHost, sandbox: &str, flows: &[(String, bool)]) {
    let specs: Vec<String> = flows.iter().map(|(s, _)| s.clone()).collect();
    let (o, got) = probe(h, sandbox, &specs);
    let wrong: Vec<String> = flows
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != *got)
        .map(|((s, want), _)| {
            if *want {
                format!("{s} should get through but did not")
            } else {
                format!("{s} should be blocked but got through")
            }
        })
        .collect();
    if !wrong.is_empty() {
        let rules = h.bpfnet(&["policy", "ls"]);
        let stats = h.bpfnet(&["stats", "--format", "json"]);
        let drops = serde_json::from_str::<serde_json::Value>(&stats.stdout)
            .map(|v| v["drops"].to_string())
            .unwrap_or(stats.stdout);
        panic!(
            "flows from {sandbox}:\n  {}\n{o}\n--- policy ls ---\n{}--- drops ---\n{drops}",
            wrong.join("\n  "),
            rules.stdout,
        );
    }
}

/// Shorthand: (spec, expected).
pub fn flow(proto: &str, ip: &str, port: u16, through: bool) -> (String, bool) {
    (spec(proto, ip, port), through)
}

/// Lines a server printed about connections/datagrams from `peer`
/// (`conn … PEER` / `got … PEER …`).
pub fn seen_from(bg: &Bg, peer: &str) -> Vec<String> {
    bg.lines()
        .into_iter()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&"conn") || w.first() == Some(&"got")) && w.get(2) == Some(&peer)
        })
        .collect()
}

/// ICMP echo from `from` to `dst`, one try per `count` with 1 s wait:
/// true if any answer came.
pub fn pings(h: &TestHost, from: &str, dst: &str) -> Output {
    h.exec_in(from, &["ping", "-n", "-c", "1", "-W", "1", dst])
}
