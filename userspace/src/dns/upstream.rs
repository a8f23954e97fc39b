//! Forwarding names we don't own to the host's resolvers, and reading the
//! host's resolver configuration.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

/// How long one upstream gets before the next is tried.
const PER_UPSTREAM: Duration = Duration::from_millis(1500);
/// Upstreams tried per query at most (glibc gives us 5 s in all).
const MAX_TRIED: usize = 2;

/// The parts of a resolv.conf we use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// `search`, `domain` and `options` lines, verbatim.
    pub other_lines: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // `fe80::1%eth0` style scopes are dropped with the address.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        rc.nameservers.push(ip);
                    }
                }
                Some("search") => {
                    rc.search = words.map(str::to_string).collect();
                    rc.other_lines.push(line.trim().to_string());
                }
                Some("domain") => {
                    if rc.search.is_empty() {
                        rc.search = words.take(1).map(str::to_string).collect();
                    }
                    rc.other_lines.push(line.trim().to_string());
                }
                Some("options") => rc.other_lines.push(line.trim().to_string()),
                _ => {}
            }
        }
        rc
    }
}

/// A sandbox's resolv.conf that sends every lookup to our responder on
/// `nameserver`, keeping the host's search domains and options. `ndots:0`
/// (Docker's embedded DNS does the same) makes `NAME` be asked as is first.
pub fn sandbox_resolv_conf(host: &str, nameserver: std::net::Ipv4Addr) -> String {
    let rc = ResolvConf::parse(host);
    let mut out = format!("# bpfnet: names of the user networks, then the host's resolvers\nnameserver {nameserver}\n");
    let mut has_ndots = false;
    for l in &rc.other_lines {
        has_ndots |= l.starts_with("options") && l.contains("ndots:");
        out.push_str(l);
        out.push('\n');
    }
    if !has_ndots {
        out.push_str("options ndots:0\n");
    }
    out
}

fn is_reply_to(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 12 && query.len() >= 2 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// Relays `query` over UDP; the upstream's reply as is (same id).
pub async fn forward_udp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams.iter().take(MAX_TRIED) {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        let attempt = async {
            let s = UdpSocket::bind(bind).await.ok()?;
            s.connect(up).await.ok()?;
            s.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = s.recv(&mut buf).await.ok()?;
                if is_reply_to(&buf[..n], query) {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        if let Ok(Some(r)) = timeout(PER_UPSTREAM, attempt).await {
            return Some(r);
        }
    }
    None
}

/// Relays `query` over TCP (a client that came over TCP, usually after a
/// truncated UDP answer).
pub async fn forward_tcp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for up in upstreams.iter().take(MAX_TRIED) {
        let attempt = async {
            let mut s = TcpStream::connect(up).await.ok()?;
            let mut msg = len.to_be_bytes().to_vec();
            msg.extend_from_slice(query);
            s.write_all(&msg).await.ok()?;
            let n = s.read_u16().await.ok()?;
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf).await.ok()?;
            is_reply_to(&buf, query).then_some(buf)
        };
        if let Ok(Some(r)) = timeout(PER_UPSTREAM, attempt).await {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# comment\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver ::1\nsearch corp.example lab.example\noptions edns0 trust-ad\n";

    #[test]
    fn host_resolv_conf_is_parsed() {
        let rc = ResolvConf::parse(HOST);
        assert_eq!(
            rc.nameservers,
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(rc.search, ["corp.example", "lab.example"]);
    }

    #[test]
    fn sandbox_resolv_conf_points_at_the_gateway_and_keeps_search_and_options() {
        let s = sandbox_resolv_conf(HOST, "172.18.0.1".parse().unwrap());
        let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "nameserver 172.18.0.1",
                "search corp.example lab.example",
                "options edns0 trust-ad",
                "options ndots:0"
            ]
        );
        let s = sandbox_resolv_conf("options ndots:2\n", "172.18.0.1".parse().unwrap());
        assert!(!s.contains("ndots:0"), "{s}");
    }
}
