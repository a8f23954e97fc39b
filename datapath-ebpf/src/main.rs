//! bpfnet's datapath: TC programs on the host side of every endpoint's veth.
//!
//! `tc_ingress` sees what a sandbox sends and decides, in this order:
//!   1. source check (MAC, and the IPv4 or ARP sender, must be the endpoint's own);
//!   2. ARP requests answered in place (gateway or a neighbour of the same network);
//!   3. broadcast/multicast flooded to the network's ports, or dropped;
//!   4. the gateway MAC: to the host stack, unless the destination is inside
//!      another bpfnet network — then policy decides, and allowed traffic is
//!      routed right here (MAC rewrite, TTL, `bpf_redirect_peer`) — or outside
//!      an internal network;
//!   5. unicast by (network, MAC) through `bpf_redirect_peer` (on `icc=false`
//!      networks only along links); unknown: dropped.
//!
//! Policy is judged per connection: an established one (conntrack) passes,
//! a new one needs an allowing entry and no denying one.
//!
//! `tc_egress` sees what the host stack sends into a sandbox and drops what was
//! routed there from another bpfnet network.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use bpfnet_common::{
    action, ct_state, ct_timeout, hook, net_flags, CtKey, CtValue, DropEvent, DropReason, Endpoint, EndpointCounters,
    FdbEntry, FdbKey, FloodKey, FragKey, FragPorts, Neighbour, NeighbourKey, Network, PolicyKey,
    PolicyValue, CT_ENTRIES, MAX_ENDPOINTS, MAX_FLOOD_PORTS, MAX_NETWORKS, MAX_POLICY_ENTRIES,
    MAX_RULES,
};
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

#[map(name = "ENDPOINTS")]
static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "FDB")]
static FDB: HashMap<FdbKey, FdbEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NEIGHBOURS")]
static NEIGHBOURS: HashMap<NeighbourKey, Neighbour> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NETWORKS")]
static NETWORKS: HashMap<u32, Network> = HashMap::pinned(MAX_NETWORKS, 0);
#[map(name = "SUBNETS")]
static SUBNETS: LpmTrie<u32, u32> = LpmTrie::pinned(MAX_NETWORKS, 0);
#[map(name = "FLOOD_PORTS")]
static FLOOD_PORTS: HashMap<FloodKey, FdbEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "EP_COUNTERS")]
static EP_COUNTERS: PerCpuArray<EndpointCounters> = PerCpuArray::pinned(MAX_ENDPOINTS, 0);
#[map(name = "DROP_COUNTERS")]
static DROP_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);
#[map(name = "DROP_EVENTS")]
static DROP_EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);
// Two generations of the compiled policy; POLICY_GEN[0] names the live one,
// so userspace swaps a whole rule set in one write.
#[map(name = "POLICY_0")]
static POLICY_0: HashMap<PolicyKey, PolicyValue> = HashMap::pinned(MAX_POLICY_ENTRIES, 0);
#[map(name = "POLICY_1")]
static POLICY_1: HashMap<PolicyKey, PolicyValue> = HashMap::pinned(MAX_POLICY_ENTRIES, 0);
#[map(name = "POLICY_GEN")]
static POLICY_GEN: Array<u32> = Array::pinned(1, 0);
#[map(name = "CONNTRACK")]
static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(CT_ENTRIES, 0);
#[map(name = "RULE_HITS")]
static RULE_HITS: PerCpuArray<u64> = PerCpuArray::pinned(MAX_RULES, 0);
#[map(name = "FRAGMENTS")]
static FRAGMENTS: LruHashMap<FragKey, FragPorts> = LruHashMap::pinned(8192, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ARP_REQUEST: [u8; 2] = [0, 1];
const ARP_REPLY: [u8; 2] = [0, 2];
const ARP_ETHERNET: [u8; 2] = [0, 1];
const ARP_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const ICMP_ECHO_REPLY: u8 = 0;
/// IPv4 "more fragments" flag and fragment offset, in host order.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
const ICMP_ECHO_REQUEST: u8 = 8;

/// What a drop event reports about a packet, gathered while parsing it.
struct Summary {
    ifindex: u32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ethertype: u16,
    src_ip: u32,
    dst_ip: u32,
    ip_proto: u8,
    rule: u32,
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Headers the programs read: Ethernet, IPv4 (no options) and the first
/// 8 bytes of L4, or an ARP packet.
const HEADERS: u32 = 64;

/// Pulls headers that sit in paged fragments (AF_PACKET senders, some GSO
/// packets) into the linear part, where direct packet access sees them.
#[inline(always)]
fn linearize(ctx: &TcContext) {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADERS && ctx.len() > linear {
        let _ = ctx.pull_data(ctx.len().min(HEADERS));
    }
}

#[inline(always)]
fn ip_u32(bytes: [u8; 4]) -> u32 {
    u32::from_ne_bytes(bytes)
}

#[inline(always)]
fn counters(slot: u32) -> Option<&'static mut EndpointCounters> {
    EP_COUNTERS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn drop_packet(slot: Option<u32>, reason: DropReason, hook: u32, s: &Summary) -> i32 {
    if let Some(n) = DROP_COUNTERS.get_ptr_mut(reason as u32) {
        unsafe { *n += 1 };
    }
    if let Some(c) = slot.and_then(counters) {
        c.dropped += 1;
    }
    if let Some(mut entry) = DROP_EVENTS.reserve::<DropEvent>(0) {
        entry.write(DropEvent {
            reason: reason as u32,
            ifindex: s.ifindex,
            hook,
            rule: s.rule,
            src_ip: s.src_ip,
            dst_ip: s.dst_ip,
            ethertype: s.ethertype,
            ip_proto: s.ip_proto,
            _pad: 0,
            src_mac: s.src_mac,
            dst_mac: s.dst_mac,
        });
        entry.submit(0);
    }
    TC_ACT_SHOT
}

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    ingress(&ctx)
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    egress(&ctx)
}

#[inline(always)]
fn ingress(ctx: &TcContext) -> i32 {
    linearize(ctx);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut s = Summary {
        ifindex,
        src_mac: [0; 6],
        dst_mac: [0; 6],
        ethertype: 0,
        src_ip: 0,
        dst_ip: 0,
        ip_proto: 0,
        rule: 0,
    };
    // A program on a veth that is not (or no longer) an endpoint fails closed.
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return drop_packet(None, DropReason::NotAnEndpoint, hook::INGRESS, &s);
    };
    let slot = Some(ep.slot);
    if let Some(c) = counters(ep.slot) {
        c.rx_packets += 1;
        c.rx_bytes += ctx.len() as u64;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, &s);
    };
    let eth = unsafe { &mut *eth };
    s.src_mac = eth.src_addr;
    s.dst_mac = eth.dst_addr;
    s.ethertype = u16::from_be(eth.ether_type);

    // 1. Source check.
    if eth.src_addr != ep.mac {
        return drop_packet(slot, DropReason::SpoofedMac, hook::INGRESS, &s);
    }
    match s.ethertype {
        ETH_P_ARP => return arp(ctx, ep, &mut s),
        ETH_P_IP => {}
        ETH_P_IPV6 => return drop_packet(slot, DropReason::Ipv6, hook::INGRESS, &s),
        _ => return drop_packet(slot, DropReason::UnsupportedEthertype, hook::INGRESS, &s),
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, &s);
    };
    let ip = unsafe { &*ip };
    s.src_ip = ip_u32(ip.src_addr);
    s.dst_ip = ip_u32(ip.dst_addr);
    s.ip_proto = ip.proto;
    if s.src_ip != ep.ip {
        return drop_packet(slot, DropReason::SpoofedIp, hook::INGRESS, &s);
    }

    // 3. Broadcast and multicast.
    if s.dst_mac[0] & 1 != 0 {
        if ep.net_flags & net_flags::FLOOD == 0 {
            return drop_packet(slot, DropReason::Broadcast, hook::INGRESS, &s);
        }
        // Unicast IPv4 in a group frame would reach peers and the host
        // without the unicast path's checks (icc, internal, policy).
        if !is_group_destination(ep.net_id, s.dst_ip) {
            return drop_packet(slot, DropReason::UnicastInGroupFrame, hook::INGRESS, &s);
        }
        // icc=false: members do not hear each other, broadcast included.
        if ep.net_flags & net_flags::ICC_OFF == 0 {
            flood(ctx, ep.net_id, ifindex);
        }
        // The host is a member of the segment too, as with a bridge.
        return to_host(ep);
    }

    // 4. The gateway: the host stack, within the network's bounds, or
    // another network if policy allows.
    if s.dst_mac == ep.gw_mac {
        if s.dst_ip == ep.gateway {
            if ep.net_flags & net_flags::INTERNAL != 0 && !confine_to_host(ctx) {
                return drop_packet(slot, DropReason::Malformed, hook::INGRESS, &s);
            }
            return to_host(ep);
        }
        if ep.net_flags & net_flags::INTERNAL != 0 {
            return drop_packet(slot, DropReason::InternalNetwork, hook::INGRESS, &s);
        }
        if let Some(dst_net) = SUBNETS.get(Key::new(32, s.dst_ip)) {
            let dst_net = *dst_net;
            // A member of an icc=false network that sends a peer's packets
            // to the gateway MAC is judged here as in step 5, or the host
            // (when it forwards) would carry them around the verdict.
            let same_icc_off = dst_net == ep.net_id && ep.net_flags & net_flags::ICC_OFF != 0;
            if same_icc_off || (dst_net != ep.net_id && !is_gateway_of(dst_net, s.dst_ip)) {
                return route(ctx, ep, dst_net, &mut s);
            }
        }
        return to_host(ep);
    }

    // 5. Unicast within the network.
    let key = FdbKey {
        net_id: ep.net_id,
        mac: s.dst_mac,
        _pad: [0; 2],
    };
    let Some(dst) = (unsafe { FDB.get(key) }) else {
        return drop_packet(slot, DropReason::UnknownUnicast, hook::INGRESS, &s);
    };
    if ep.net_flags & net_flags::ICC_OFF != 0 {
        if let Err((reason, rule)) = verdict(ctx, ep.slot, dst.slot, &s, DropReason::IccDisabled) {
            s.rule = rule;
            return drop_packet(slot, reason, hook::INGRESS, &s);
        }
    }
    deliver(ctx, ep, dst)
}

#[inline(always)]
fn deliver(ctx: &TcContext, ep: &Endpoint, dst: &FdbEntry) -> i32 {
    if let Some(c) = counters(ep.slot) {
        c.forwarded += 1;
    }
    if let Some(c) = counters(dst.slot) {
        c.tx_packets += 1;
        c.tx_bytes += ctx.len() as u64;
    }
    unsafe { bpf_redirect_peer(dst.ifindex, 0) as i32 }
}

/// Traffic for another network, judged by policy and, if allowed, routed
/// here: no detour through the host stack, no dependence on `ip_forward`.
#[inline(always)]
fn route(ctx: &TcContext, ep: &Endpoint, dst_net: u32, s: &mut Summary) -> i32 {
    let slot = Some(ep.slot);
    // Nothing allows it: across networks, or (through the gateway MAC)
    // between members of an icc=false network.
    let unallowed = if dst_net == ep.net_id {
        DropReason::IccDisabled
    } else {
        DropReason::CrossNetwork
    };
    let nkey = NeighbourKey {
        net_id: dst_net,
        ip: s.dst_ip,
    };
    let Some(neighbour) = (unsafe { NEIGHBOURS.get(nkey) }) else {
        return drop_packet(slot, unallowed, hook::INGRESS, s);
    };
    let fkey = FdbKey {
        net_id: dst_net,
        mac: neighbour.mac,
        _pad: [0; 2],
    };
    let Some(dst) = (unsafe { FDB.get(fkey) }) else {
        return drop_packet(slot, unallowed, hook::INGRESS, s);
    };
    if let Err((reason, rule)) = verdict(ctx, ep.slot, dst.slot, s, unallowed) {
        s.rule = rule;
        return drop_packet(slot, reason, hook::INGRESS, s);
    }
    let Some(dst_ep) = (unsafe { ENDPOINTS.get(dst.ifindex) }) else {
        return drop_packet(slot, unallowed, hook::INGRESS, s);
    };
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, s);
    };
    let ip = unsafe { &mut *ip };
    if ip.ttl <= 1 {
        return drop_packet(slot, DropReason::TtlExceeded, hook::INGRESS, s);
    }
    // ip_decrease_ttl(): the TTL is the high byte of its 16-bit word.
    ip.ttl -= 1;
    let mut check = u32::from(u16::from_be_bytes(ip.check)) + 0x0100;
    check = (check & 0xffff) + (check >> 16);
    ip.check = (check as u16).to_be_bytes();
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, s);
    };
    let eth = unsafe { &mut *eth };
    eth.dst_addr = neighbour.mac;
    eth.src_addr = dst_ep.gw_mac;
    deliver(ctx, ep, dst)
}

/// Makes sure the first `need` bytes of the packet are in the linear part
/// (if the packet has them at all). Invalidates every packet pointer.
#[inline(always)]
fn pull(ctx: &TcContext, need: usize) {
    let linear = ctx.data_end() - ctx.data();
    let len = ctx.len() as usize;
    if linear < need && len > linear {
        let _ = ctx.pull_data(len.min(need) as u32);
    }
}

/// What a packet is to policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP or UDP with its ports: opens a connection when allowed.
    Ports,
    /// ICMP echo request: opens a connection when allowed.
    EchoRequest,
    /// ICMP echo reply: only as the reply of a tracked echo request.
    EchoReply,
    /// An ICMP error; `key` is the connection of the packet it quotes, in
    /// that packet's direction (sent by this packet's destination).
    Error,
    /// Any other ICMP message.
    OtherIcmp,
    /// Any other protocol: judged per packet, not tracked.
    Other,
}

struct Flow {
    kind: Kind,
    key: CtKey,
    /// TCP flags (0 for other protocols and later fragments).
    tcp_flags: u8,
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const NS_PER_SEC: u64 = 1_000_000_000;

/// ICMP types of errors that quote the packet they are about.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

#[inline(always)]
fn ct_key(src_ip: u32, dst_ip: u32, sport: u16, dport: u16, proto: u8) -> CtKey {
    CtKey {
        src_ip,
        dst_ip,
        sport,
        dport,
        proto,
        _pad: [0; 3],
    }
}

/// The connection a packet belongs to, in its own direction. A TCP, UDP or
/// ICMP header that is not in the packet is an error, never "any port";
/// neither is a later fragment whose first fragment was not seen.
#[inline(always)]
fn flow(ctx: &TcContext, s: &Summary) -> Result<Flow, DropReason> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    // SAFETY: `ip` points into the packet's linear data (checked by ptr_at).
    let (vihl, frags, id) = unsafe { ((*ip).vihl, (*ip).frags, (*ip).id) };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(DropReason::Malformed);
    }
    let frags = u16::from_be_bytes(frags);
    let l4 = EthHdr::LEN + ihl;
    let other = Flow {
        kind: Kind::Other,
        key: ct_key(s.src_ip, s.dst_ip, 0, 0, s.ip_proto),
        tcp_flags: 0,
    };
    if s.ip_proto != IPPROTO_TCP && s.ip_proto != IPPROTO_UDP && s.ip_proto != IPPROTO_ICMP {
        return Ok(other);
    }
    let frag = FragKey {
        src_ip: s.src_ip,
        dst_ip: s.dst_ip,
        id: u16::from_be_bytes(id),
        proto: s.ip_proto,
        _pad: 0,
    };
    if frags & IP_OFFSET != 0 {
        // A later fragment: its bytes are payload, not headers. For ICMP
        // echo the first fragment left (identifier, type).
        let p = unsafe { FRAGMENTS.get(frag) }.ok_or(DropReason::OrphanFragment)?;
        let kind = match s.ip_proto {
            IPPROTO_ICMP if p.dport == u16::from(ICMP_ECHO_REQUEST) => Kind::EchoRequest,
            IPPROTO_ICMP => Kind::EchoReply,
            _ => Kind::Ports,
        };
        let dport = if s.ip_proto == IPPROTO_ICMP { 0 } else { p.dport };
        return Ok(Flow {
            kind,
            key: ct_key(s.src_ip, s.dst_ip, p.sport, dport, s.ip_proto),
            tcp_flags: 0,
        });
    }
    let more = frags & IP_MF != 0;
    if s.ip_proto != IPPROTO_ICMP {
        // UDP: the ports; TCP: up to the flags.
        pull(ctx, l4 + 14);
        let p = ptr_at::<[u8; 4]>(ctx, l4).ok_or(DropReason::Malformed)?;
        let p = unsafe { *p };
        let sport = u16::from_be_bytes([p[0], p[1]]);
        let dport = u16::from_be_bytes([p[2], p[3]]);
        let mut tcp_flags = 0;
        if s.ip_proto == IPPROTO_TCP {
            let f = ptr_at::<u8>(ctx, l4 + 13).ok_or(DropReason::Malformed)?;
            tcp_flags = unsafe { *f };
        }
        if more {
            let _ = FRAGMENTS.insert(frag, FragPorts { sport, dport }, 0);
        }
        return Ok(Flow {
            kind: Kind::Ports,
            key: ct_key(s.src_ip, s.dst_ip, sport, dport, s.ip_proto),
            tcp_flags,
        });
    }
    // ICMP: type, code, checksum, then (echo) identifier and sequence, or
    // (errors) 4 bytes and the quoted packet.
    pull(ctx, l4 + 8 + Ipv4Hdr::LEN + 8);
    let h = ptr_at::<[u8; 8]>(ctx, l4).ok_or(DropReason::Malformed)?;
    let h = unsafe { *h };
    let ident = u16::from_be_bytes([h[4], h[5]]);
    match h[0] {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
            if more {
                let _ = FRAGMENTS.insert(
                    frag,
                    FragPorts {
                        sport: ident,
                        dport: u16::from(h[0]),
                    },
                    0,
                );
            }
            let kind = if h[0] == ICMP_ECHO_REQUEST {
                Kind::EchoRequest
            } else {
                Kind::EchoReply
            };
            Ok(Flow {
                kind,
                key: ct_key(s.src_ip, s.dst_ip, ident, 0, IPPROTO_ICMP),
                tcp_flags: 0,
            })
        }
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => {
            Ok(quoted(ctx, s, l4 + 8).unwrap_or(Flow {
                kind: Kind::OtherIcmp,
                key: other.key,
                tcp_flags: 0,
            }))
        }
        _ => Ok(Flow {
            kind: Kind::OtherIcmp,
            key: other.key,
            tcp_flags: 0,
        }),
    }
}

/// The connection of the packet an ICMP error quotes at `at`: it must be a
/// packet this error's destination sent to its source (TCP, UDP or ICMP
/// echo, with its first 8 bytes of L4). None: the error belongs to nothing.
#[inline(always)]
fn quoted(ctx: &TcContext, s: &Summary, at: usize) -> Option<Flow> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, at)?;
    // SAFETY: `ip` points into the packet's linear data (checked by ptr_at).
    let ip = unsafe { *ip };
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let (src, dst) = (ip_u32(ip.src_addr), ip_u32(ip.dst_addr));
    if ihl < Ipv4Hdr::LEN
        || u16::from_be_bytes(ip.frags) & IP_OFFSET != 0
        || src != s.dst_ip
        || dst != s.src_ip
    {
        return None;
    }
    pull(ctx, at + ihl + 8);
    let l4 = ptr_at::<[u8; 8]>(ctx, at + ihl)?;
    let l4 = unsafe { *l4 };
    let (sport, dport) = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        IPPROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST || l4[0] == ICMP_ECHO_REPLY => {
            (u16::from_be_bytes([l4[4], l4[5]]), 0)
        }
        _ => return None,
    };
    Some(Flow {
        kind: Kind::Error,
        key: ct_key(src, dst, sport, dport, ip.proto),
        tcp_flags: 0,
    })
}

#[inline(always)]
fn count_hit(rule: u32) {
    if let Some(n) = RULE_HITS.get_ptr_mut(rule) {
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn policy(key: &PolicyKey) -> Option<&'static PolicyValue> {
    let generation = POLICY_GEN.get(0).copied().unwrap_or(0);
    unsafe {
        if generation == 0 {
            POLICY_0.get(key)
        } else {
            POLICY_1.get(key)
        }
    }
}

/// The reply direction of connection `k` (ICMP echo: same identifier).
#[inline(always)]
fn reply(k: &CtKey) -> CtKey {
    let icmp = k.proto == IPPROTO_ICMP;
    ct_key(
        k.dst_ip,
        k.src_ip,
        if icmp { k.sport } else { k.dport },
        if icmp { 0 } else { k.sport },
        k.proto,
    )
}

/// How long connection `k` in `state` may stay idle, in ns.
#[inline(always)]
fn ct_idle_limit(proto: u8, state: u32) -> u64 {
    let secs = match proto {
        IPPROTO_TCP if state & ct_state::RST != 0 => ct_timeout::TCP_RESET,
        IPPROTO_TCP if state & ct_state::FIN != 0 => ct_timeout::TCP_CLOSING,
        IPPROTO_TCP if state & ct_state::REPLIED != 0 => ct_timeout::TCP_ESTABLISHED,
        IPPROTO_TCP => ct_timeout::TCP_OPENING,
        IPPROTO_UDP if state & ct_state::REPLIED != 0 => ct_timeout::UDP_REPLIED,
        IPPROTO_UDP => ct_timeout::UDP_UNREPLIED,
        _ => ct_timeout::ICMP,
    };
    secs * NS_PER_SEC
}

/// Whether `k` is a live connection; a packet of it going the reply way
/// (`reply`) or the opening way refreshes it and moves its state. An entry
/// idle beyond its limit is removed: its reply hole closes.
#[inline(always)]
fn tracked(k: &CtKey, f: &Flow, reply: bool, now: u64) -> bool {
    let Some(v) = CONNTRACK.get_ptr_mut(k) else {
        return false;
    };
    // SAFETY: a value of the map, valid while this program runs; concurrent
    // writers can only race on the same plain integers.
    let v = unsafe { &mut *v };
    if now.wrapping_sub(v.last_seen) > ct_idle_limit(k.proto, v.state) {
        let _ = CONNTRACK.remove(k);
        return false;
    }
    // An ICMP error is about the connection, not part of it.
    if f.kind == Kind::Error {
        return true;
    }
    let mut state = v.state;
    if reply {
        state |= ct_state::REPLIED;
    }
    if k.proto == IPPROTO_TCP {
        if !reply && f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // The same ports opening anew.
            state = 0;
        }
        if f.tcp_flags & TCP_FIN != 0 {
            state |= ct_state::FIN;
        }
        if f.tcp_flags & TCP_RST != 0 {
            state |= ct_state::RST;
        }
    }
    // Writing once a second is enough for timeouts counted in seconds, and
    // spares the shared cache line.
    if state != v.state || now.wrapping_sub(v.last_seen) > NS_PER_SEC {
        v.state = state;
        v.last_seen = now;
    }
    true
}

/// Policy for a packet from endpoint `src` to endpoint `dst`. Established
/// connections pass both ways, and so do ICMP errors about them (path MTU
/// discovery needs no rule of its own). A new connection needs an allowing
/// entry — exact port, then any port of the protocol, then any protocol —
/// and opens a conntrack entry. `--icmp` (protocol 1, any port) allows only
/// echo requests; as a deny it covers every ICMP message. Err: the reason
/// and the denying rule (0: nothing allowed it, `unallowed`).
#[inline(always)]
fn verdict(
    ctx: &TcContext,
    src: u32,
    dst: u32,
    s: &Summary,
    unallowed: DropReason,
) -> Result<(), (DropReason, u32)> {
    let f = flow(ctx, s).map_err(|r| (r, 0))?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let known = match f.kind {
        Kind::Ports | Kind::Error => {
            tracked(&f.key, &f, false, now) || tracked(&reply(&f.key), &f, true, now)
        }
        Kind::EchoRequest => tracked(&f.key, &f, false, now),
        Kind::EchoReply => tracked(&reply(&f.key), &f, true, now),
        Kind::OtherIcmp | Kind::Other => false,
    };
    if known {
        return Ok(());
    }
    // Only what opens a connection creates an entry: a TCP SYN, a UDP
    // datagram, an echo request. Other TCP segments are judged, and pass if
    // allowed, but leave no reply hole behind.
    let opens = match f.kind {
        Kind::Ports if s.ip_proto == IPPROTO_TCP => {
            f.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        }
        Kind::Ports | Kind::EchoRequest => true,
        _ => false,
    };
    let mut pkey = PolicyKey {
        src_slot: src,
        dst_slot: dst,
        dport: if f.kind == Kind::Ports { f.key.dport } else { 0 },
        proto: s.ip_proto,
        _pad: 0,
    };
    let mut found = None;
    if pkey.dport != 0 {
        found = policy(&pkey);
    }
    if found.is_none() {
        pkey.dport = 0;
        found = policy(&pkey);
        // An ICMP allow entry is `--icmp`: ping, nothing else.
        if let Some(v) = found {
            let icmp_beyond_echo = s.ip_proto == IPPROTO_ICMP && f.kind != Kind::EchoRequest;
            if icmp_beyond_echo && v.action == action::ALLOW {
                found = None;
            }
        }
    }
    if found.is_none() {
        pkey.proto = 0;
        found = policy(&pkey);
    }
    let Some(v) = found else {
        return Err((unallowed, 0));
    };
    count_hit(v.rule);
    if v.action != action::ALLOW {
        return Err((DropReason::PolicyDenied, v.rule));
    }
    if opens {
        let _ = CONNTRACK.insert(
            f.key,
            CtValue {
                rule: v.rule,
                state: 0,
                last_seen: now,
            },
            u64::from(BPF_NOEXIST),
        );
    }
    Ok(())
}

/// Whether `dst_ip` is a group address of network `net_id`: multicast, the
/// limited broadcast or the subnet's broadcast.
#[inline(always)]
fn is_group_destination(net_id: u32, dst_ip: u32) -> bool {
    let dst = u32::from_be_bytes(dst_ip.to_ne_bytes());
    if dst >> 28 == 0xe || dst == u32::MAX {
        return true;
    }
    let Some(net) = (unsafe { NETWORKS.get(net_id) }) else {
        return false;
    };
    let prefix = net.prefix_len;
    if prefix == 0 || prefix > 30 {
        return false;
    }
    let subnet = u32::from_be_bytes(net.subnet.to_ne_bytes());
    dst == subnet | (u32::MAX >> prefix)
}

/// Packets of an internal network for its gateway may be delivered by the
/// host, never forwarded: with TTL 1 the host's forwarding refuses them even
/// after a DNAT rule made them someone else's. False: no IPv4 header.
#[inline(always)]
fn confine_to_host(ctx: &TcContext) -> bool {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return false;
    };
    // SAFETY: `ip` points into the packet's linear data (checked by ptr_at).
    let ip = unsafe { &mut *ip };
    if ip.ttl > 1 {
        let old = u16::from_be_bytes([ip.ttl, ip.proto]);
        let new = u16::from_be_bytes([1, ip.proto]);
        ip.ttl = 1;
        // RFC 1624: HC' = ~(~HC + ~m + m').
        let mut sum = u32::from(!u16::from_be_bytes(ip.check)) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        ip.check = (!(sum as u16)).to_be_bytes();
    }
    true
}

#[inline(always)]
fn to_host(ep: &Endpoint) -> i32 {
    if let Some(c) = counters(ep.slot) {
        c.to_host += 1;
    }
    TC_ACT_OK
}

#[inline(always)]
fn is_gateway_of(net_id: u32, ip: u32) -> bool {
    match unsafe { NETWORKS.get(net_id) } {
        Some(n) => n.gateway == ip,
        None => false,
    }
}

/// Step 2, ARP: requests for the gateway or a neighbour of the same network
/// are answered in place and sent back to the asker; everything else is dropped.
#[inline(always)]
fn arp(ctx: &TcContext, ep: &Endpoint, s: &mut Summary) -> i32 {
    let slot = Some(ep.slot);
    let Some(arp) = ptr_at::<ArpHdr>(ctx, EthHdr::LEN) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, s);
    };
    let arp = unsafe { &mut *arp };
    s.src_ip = ip_u32(arp.spa);
    s.dst_ip = ip_u32(arp.tpa);
    if arp.htype != ARP_ETHERNET || arp.ptype != ARP_IPV4 || arp.hlen != 6 || arp.plen != 4 {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, s);
    }
    if arp.sha != ep.mac || s.src_ip != ep.ip {
        return drop_packet(slot, DropReason::SpoofedArp, hook::INGRESS, s);
    }
    if arp.oper != ARP_REQUEST {
        return drop_packet(slot, DropReason::ArpNotRequest, hook::INGRESS, s);
    }
    let answer = if s.dst_ip == ep.gateway {
        ep.gw_mac
    } else {
        let key = NeighbourKey {
            net_id: ep.net_id,
            ip: s.dst_ip,
        };
        match unsafe { NEIGHBOURS.get(key) } {
            Some(n) => n.mac,
            None => return drop_packet(slot, DropReason::ArpUnknownTarget, hook::INGRESS, s),
        }
    };
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop_packet(slot, DropReason::Malformed, hook::INGRESS, s);
    };
    let eth = unsafe { &mut *eth };
    eth.dst_addr = eth.src_addr;
    eth.src_addr = answer;
    arp.oper = ARP_REPLY;
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = answer;
    arp.spa = s.dst_ip.to_ne_bytes();
    unsafe { bpf_redirect(s.ifindex, 0) as i32 }
}

/// Copies a broadcast to the other ports of the network (at most MAX_FLOOD_PORTS).
#[inline(always)]
fn flood(ctx: &TcContext, net_id: u32, from_ifindex: u32) {
    let Some(net) = (unsafe { NETWORKS.get(net_id) }) else {
        return;
    };
    let n = net.flood_ports;
    for index in 0..MAX_FLOOD_PORTS {
        if index >= n {
            break;
        }
        if let Some(port) = unsafe { FLOOD_PORTS.get(FloodKey { net_id, index }) } {
            if port.ifindex != from_ifindex {
                let _ = ctx.clone_redirect(port.ifindex, 0);
            }
        }
    }
}

#[inline(always)]
fn egress(ctx: &TcContext) -> i32 {
    linearize(ctx);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut s = Summary {
        ifindex,
        src_mac: [0; 6],
        dst_mac: [0; 6],
        ethertype: 0,
        src_ip: 0,
        dst_ip: 0,
        ip_proto: 0,
        rule: 0,
    };
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return drop_packet(None, DropReason::NotAnEndpoint, hook::EGRESS, &s);
    };
    let slot = Some(ep.slot);
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop_packet(slot, DropReason::Malformed, hook::EGRESS, &s);
    };
    let eth = unsafe { &*eth };
    s.src_mac = eth.src_addr;
    s.dst_mac = eth.dst_addr;
    s.ethertype = u16::from_be(eth.ether_type);
    match s.ethertype {
        ETH_P_IP => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
                return drop_packet(slot, DropReason::Malformed, hook::EGRESS, &s);
            };
            let ip = unsafe { &*ip };
            s.src_ip = ip_u32(ip.src_addr);
            s.dst_ip = ip_u32(ip.dst_addr);
            s.ip_proto = ip.proto;
            if let Err(reason) = egress_source(ctx, ep, &s) {
                return drop_packet(slot, reason, hook::EGRESS, &s);
            }
        }
        ETH_P_ARP => {}
        ETH_P_IPV6 => return drop_packet(slot, DropReason::Ipv6, hook::EGRESS, &s),
        _ => return drop_packet(slot, DropReason::UnsupportedEthertype, hook::EGRESS, &s),
    }
    if let Some(c) = counters(ep.slot) {
        c.tx_packets += 1;
        c.tx_bytes += ctx.len() as u64;
    }
    TC_ACT_OK
}

/// Whether the host may send this IPv4 packet into the sandbox. Isolation
/// holds even when the host forwards: nothing routed in from another bpfnet
/// network (the host's own gateway addresses may talk); on an icc=false
/// network nothing from a fellow member (members meet only through the
/// datapath); on an internal network only fellow members (flooded) and what
/// the host itself sends from the gateway address — a packet the host
/// forwarded (`ingress_ifindex` set) is routed traffic, even when DNAT made
/// its source the gateway.
#[inline(always)]
fn egress_source(ctx: &TcContext, ep: &Endpoint, s: &Summary) -> Result<(), DropReason> {
    let src_net = SUBNETS.get(Key::new(32, s.src_ip)).copied();
    let member = src_net == Some(ep.net_id) && s.src_ip != ep.gateway;
    if ep.net_flags & net_flags::ICC_OFF != 0 && member {
        return Err(DropReason::IccDisabled);
    }
    if ep.net_flags & net_flags::INTERNAL != 0 {
        // SAFETY: `ctx.skb.skb` is the `__sk_buff` of this run of the program.
        let forwarded = unsafe { (*ctx.skb.skb).ingress_ifindex } != 0;
        if !member && (s.src_ip != ep.gateway || forwarded) {
            return Err(DropReason::InternalNetwork);
        }
    }
    if let Some(src_net) = src_net {
        if src_net != ep.net_id && !is_gateway_of(src_net, s.src_ip) {
            return Err(DropReason::FromOtherNetwork);
        }
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
