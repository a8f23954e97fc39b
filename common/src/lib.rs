//! Map keys and values shared by the eBPF datapath and the control plane.
//!
//! Every type is `#[repr(C)]`, has no implicit padding and is defined once here.
//! IPv4 addresses are `u32`s whose in-memory bytes are the address octets in
//! network order (`u32::from_ne_bytes(addr.octets())`), exactly as they sit in a
//! packet, so the datapath compares them without byte swapping.
#![no_std]

pub mod constants;
// The constants were defined here before they had a module; keep their paths.
pub use constants::*;

/// Map names, as the eBPF side declares them and userspace pins them.
pub mod maps {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const FDB: &str = "FDB";
    pub const NEIGHBOURS: &str = "NEIGHBOURS";
    pub const NETWORKS: &str = "NETWORKS";
    pub const SUBNETS: &str = "SUBNETS";
    pub const FLOOD_PORTS: &str = "FLOOD_PORTS";
    pub const EP_COUNTERS: &str = "EP_COUNTERS";
    pub const DROP_COUNTERS: &str = "DROP_COUNTERS";
    pub const DROP_EVENTS: &str = "DROP_EVENTS";
    pub const POLICY_0: &str = "POLICY_0";
    pub const POLICY_1: &str = "POLICY_1";
    pub const POLICY_GEN: &str = "POLICY_GEN";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const RULE_HITS: &str = "RULE_HITS";
    pub const FRAGMENTS: &str = "FRAGMENTS";
    pub const ENDPOINTS6: &str = "ENDPOINTS6";
    pub const NETWORKS6: &str = "NETWORKS6";
    pub const NEIGHBOURS6: &str = "NEIGHBOURS6";
    pub const SUBNETS6: &str = "SUBNETS6";
    pub const CT_CHARGED: &str = "CT_CHARGED";
    pub const CT_RELEASED: &str = "CT_RELEASED";
    pub const CT_SWEPT: &str = "CT_SWEPT";
    pub const ALL: [&str; 22] = [
        ENDPOINTS,
        FDB,
        NEIGHBOURS,
        NETWORKS,
        SUBNETS,
        FLOOD_PORTS,
        EP_COUNTERS,
        DROP_COUNTERS,
        DROP_EVENTS,
        POLICY_0,
        POLICY_1,
        POLICY_GEN,
        CONNTRACK,
        RULE_HITS,
        FRAGMENTS,
        ENDPOINTS6,
        NETWORKS6,
        NEIGHBOURS6,
        SUBNETS6,
        CT_CHARGED,
        CT_RELEASED,
        CT_SWEPT,
    ];
}

/// Program names (the eBPF functions), as userspace finds them in the object.
pub mod progs {
    pub const TC_INGRESS: &str = "tc_ingress";
    pub const TC_EGRESS: &str = "tc_egress";
}

/// One endpoint, keyed by the ifindex of its host-side veth.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Network this endpoint belongs to.
    pub net_id: u32,
    /// The endpoint's IPv4 address (network byte order in memory).
    pub ip: u32,
    /// Slot of this endpoint in `EP_COUNTERS`.
    pub slot: u32,
    /// The sandbox-side MAC: the only source MAC accepted from it.
    pub mac: [u8; 6],
    /// MAC of the host-side veth: the answer to ARP for the gateway, and the
    /// destination MAC of everything the sandbox sends to the host stack.
    pub gw_mac: [u8; 6],
    /// The network's gateway and flags, copied here so that the forwarding
    /// path needs no lookup of the network.
    pub gateway: u32,
    pub net_flags: u32,
}

/// The IPv6 side of an endpoint of a dual-stack network, keyed like
/// `ENDPOINTS` by host-side ifindex. An endpoint without one (an IPv4-only
/// network) gets no IPv6 through the datapath at all. IPv6 addresses are
/// their 16 octets, as in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint6 {
    /// Its address: with `link_local`, the only sources accepted from it.
    pub ip6: [u8; 16],
    /// fe80::/64 with the EUI-64 of its MAC (what its kernel configures).
    pub link_local: [u8; 16],
}

/// The IPv6 side of a dual-stack network, keyed by net id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network6 {
    /// The gateway address (a host address on `lo`).
    pub gateway6: [u8; 16],
}

/// Neighbour key of IPv6: an address (global or link-local) within one
/// network; the value is a [`Neighbour`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour6Key {
    pub net_id: u32,
    pub ip6: [u8; 16],
}

/// FDB key: a MAC within one network.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbKey {
    pub net_id: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Where a MAC lives: the host-side veth whose peer holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub ifindex: u32,
    /// Counter slot of the destination endpoint (its `tx` is counted here,
    /// because `bpf_redirect_peer` skips the destination's host-side egress).
    pub slot: u32,
}

/// Neighbour key: an IPv4 address within one network.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourKey {
    pub net_id: u32,
    pub ip: u32,
}

/// The MAC that answers ARP for a neighbour.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Network flags.
pub mod net_flags {
    /// Copy non-ARP broadcast and multicast to the other ports of the network.
    pub const FLOOD: u32 = 1 << 0;
    /// `--internal`: nothing leaves the network through the gateway but
    /// traffic to the gateway address itself.
    pub const INTERNAL: u32 = 1 << 1;
    /// `icc=false`: members open connections to each other only along links.
    pub const ICC_OFF: u32 = 1 << 2;
}

/// A policy entry: traffic from one endpoint to another, for a protocol
/// (0 = any) and destination port (0 = any).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub src_slot: u32,
    pub dst_slot: u32,
    pub dport: u16,
    pub proto: u8,
    pub _pad: u8,
}

pub mod action {
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    pub rule: u32,
    pub action: u32,
}

/// A connection, in the direction of the packet that opened it. ICMP echo
/// uses the identifier as `sport` and 0 as `dport` both ways.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtKey {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// An IPv4 datagram in fragments: only the first fragment carries the
/// ports, so they are remembered for the later ones under this key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragKey {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The ports of a fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtValue {
    /// The rule that allowed it (`RULE_LINK` for links).
    pub rule: u32,
    /// [`ct_state`] bits.
    pub state: u32,
    /// When the connection last carried a packet (`bpf_ktime_get_ns`,
    /// monotonic): an entry idle longer than its [`ct_timeout`] is gone.
    pub last_seen: u64,
    /// Slot of the endpoint that opened it: its quota ([`CT_QUOTA`]) is
    /// charged for the entry until the entry is removed.
    pub owner: u32,
    pub _pad: u32,
}

/// What conntrack has seen of a connection.
pub mod ct_state {
    /// A packet in the reply direction.
    pub const REPLIED: u32 = 1 << 0;
    /// A TCP FIN, either way.
    pub const FIN: u32 = 1 << 1;
    /// A TCP RST, either way.
    pub const RST: u32 = 1 << 2;
}

/// How long a connection may be idle, in seconds, by protocol and state
/// (Linux conntrack's defaults, rounded).
pub mod ct_timeout {
    /// TCP: SYN sent, nothing back yet.
    pub const TCP_OPENING: u64 = 60;
    /// TCP: answered (5 days, as Linux).
    pub const TCP_ESTABLISHED: u64 = 432_000;
    /// TCP after a FIN.
    pub const TCP_CLOSING: u64 = 120;
    /// TCP after a RST.
    pub const TCP_RESET: u64 = 10;
    /// UDP: one way only.
    pub const UDP_UNREPLIED: u64 = 30;
    /// UDP: answered.
    pub const UDP_REPLIED: u64 = 180;
    /// ICMP echo.
    pub const ICMP: u64 = 30;
}

/// One network, keyed by its id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkEntry {
    /// Gateway address (a host address).
    pub gateway: u32,
    /// Subnet address and prefix length.
    pub subnet: u32,
    pub prefix_len: u32,
    pub flags: u32,
    /// Number of valid entries in `FLOOD_PORTS` for this network.
    pub flood_ports: u32,
}

/// Key of `FLOOD_PORTS`: the n-th port of a network.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodKey {
    pub net_id: u32,
    pub index: u32,
}

/// Per-endpoint packet counters (per CPU, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Packets and bytes received from the sandbox (host-side ingress).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets and bytes delivered into the sandbox.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets from this sandbox redirected to another endpoint.
    pub forwarded: u64,
    /// Packets from this sandbox handed to the host stack.
    pub to_host: u64,
    /// Packets from or to this sandbox that were dropped.
    pub dropped: u64,
}

impl EndpointCounters {
    /// The total of per-CPU counters.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a EndpointCounters>) -> EndpointCounters {
        let mut sum = EndpointCounters::default();
        for c in per_cpu {
            sum.rx_packets += c.rx_packets;
            sum.rx_bytes += c.rx_bytes;
            sum.tx_packets += c.tx_packets;
            sum.tx_bytes += c.tx_bytes;
            sum.forwarded += c.forwarded;
            sum.to_host += c.to_host;
            sum.dropped += c.dropped;
        }
        sum
    }
}

/// Why a packet was dropped. The discriminant indexes `DROP_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    SpoofedMac = 0,
    SpoofedIp = 1,
    SpoofedArp = 2,
    ArpUnknownTarget = 3,
    ArpNotRequest = 4,
    UnknownUnicast = 5,
    CrossNetwork = 6,
    Broadcast = 7,
    Ipv6 = 8,
    UnsupportedEthertype = 9,
    Malformed = 10,
    InternalNetwork = 11,
    FromOtherNetwork = 12,
    NotAnEndpoint = 13,
    PolicyDenied = 14,
    IccDisabled = 15,
    TtlExceeded = 16,
    UnicastInGroupFrame = 17,
    OrphanFragment = 18,
    Ipv6Multicast = 19,
    NdUnknownTarget = 20,
    NdNotSolicitation = 21,
    RouterSolicitation = 22,
    SpoofedNd = 23,
    Ipv6ExtensionHeader = 24,
    ConntrackQuota = 25,
    ConntrackFull = 26,
}

impl DropReason {
    pub const COUNT: u32 = 27;
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::SpoofedArp,
        DropReason::ArpUnknownTarget,
        DropReason::ArpNotRequest,
        DropReason::UnknownUnicast,
        DropReason::CrossNetwork,
        DropReason::Broadcast,
        DropReason::Ipv6,
        DropReason::UnsupportedEthertype,
        DropReason::Malformed,
        DropReason::InternalNetwork,
        DropReason::FromOtherNetwork,
        DropReason::NotAnEndpoint,
        DropReason::PolicyDenied,
        DropReason::IccDisabled,
        DropReason::TtlExceeded,
        DropReason::UnicastInGroupFrame,
        DropReason::OrphanFragment,
        DropReason::Ipv6Multicast,
        DropReason::NdUnknownTarget,
        DropReason::NdNotSolicitation,
        DropReason::RouterSolicitation,
        DropReason::SpoofedNd,
        DropReason::Ipv6ExtensionHeader,
        DropReason::ConntrackQuota,
        DropReason::ConntrackFull,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Short name, as `bpfnet stats` and `bpfnet monitor` print it.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::SpoofedMac => "spoofed-source-mac",
            DropReason::SpoofedIp => "spoofed-source-ip",
            DropReason::SpoofedArp => "spoofed-arp-sender",
            DropReason::ArpUnknownTarget => "arp-unknown-target",
            DropReason::ArpNotRequest => "arp-not-request",
            DropReason::UnknownUnicast => "unknown-unicast",
            DropReason::CrossNetwork => "cross-network",
            DropReason::Broadcast => "broadcast-not-flooded",
            DropReason::Ipv6 => "ipv6-unsupported",
            DropReason::UnsupportedEthertype => "unsupported-ethertype",
            DropReason::Malformed => "malformed",
            DropReason::InternalNetwork => "internal-network",
            DropReason::FromOtherNetwork => "routed-from-other-network",
            DropReason::NotAnEndpoint => "not-an-endpoint",
            DropReason::PolicyDenied => "policy-denied",
            DropReason::IccDisabled => "icc-disabled",
            DropReason::TtlExceeded => "ttl-exceeded",
            DropReason::UnicastInGroupFrame => "unicast-ip-in-group-frame",
            DropReason::OrphanFragment => "fragment-without-first",
            DropReason::Ipv6Multicast => "ipv6-multicast",
            DropReason::NdUnknownTarget => "nd-unknown-target",
            DropReason::NdNotSolicitation => "nd-not-solicitation",
            DropReason::RouterSolicitation => "router-solicitation",
            DropReason::SpoofedNd => "spoofed-nd-sender",
            DropReason::Ipv6ExtensionHeader => "ipv6-extension-header",
            DropReason::ConntrackQuota => "conntrack-quota",
            DropReason::ConntrackFull => "conntrack-full",
        }
    }
}

/// Where a drop happened.
pub mod hook {
    pub const INGRESS: u32 = 0;
    pub const EGRESS: u32 = 1;
}

/// One dropped packet, as streamed through the `DROP_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub reason: u32,
    /// Host-side ifindex of the endpoint the packet came from or went to.
    pub ifindex: u32,
    pub hook: u32,
    /// The policy rule that denied it (0: no rule allowed it).
    pub rule: u32,
    pub src_ip: u32,
    pub dst_ip: u32,
    pub ethertype: u16,
    pub ip_proto: u8,
    pub _pad: u8,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // Every type here is #[repr(C)], made of plain integers and byte arrays,
    // with explicit padding fields, so every bit pattern is a valid value.
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for EndpointEntry {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for FdbKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for FdbEntry {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for NeighbourKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for Neighbour {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for NetworkEntry {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for FloodKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for EndpointCounters {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for DropEvent {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for PolicyValue {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for FragPorts {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for Endpoint6 {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for Network6 {}
    // SAFETY: #[repr(C)] plain data, every bit pattern valid (above).
    unsafe impl aya::Pod for Neighbour6Key {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// Guards MAP_LAYOUT_VERSION: if a size changes, this fails until the
    /// version is bumped and the table below updated with it.
    #[test]
    fn layout_change_requires_version_bump() {
        let sizes = [
            size_of::<EndpointEntry>(),
            size_of::<FdbKey>(),
            size_of::<FdbEntry>(),
            size_of::<NeighbourKey>(),
            size_of::<Neighbour>(),
            size_of::<NetworkEntry>(),
            size_of::<FloodKey>(),
            size_of::<EndpointCounters>(),
            size_of::<DropEvent>(),
            size_of::<PolicyKey>(),
            size_of::<PolicyValue>(),
            size_of::<CtKey>(),
            size_of::<CtValue>(),
            size_of::<FragKey>(),
            size_of::<FragPorts>(),
            size_of::<Endpoint6>(),
            size_of::<Network6>(),
            size_of::<Neighbour6Key>(),
        ];
        assert_eq!(
            (MAP_LAYOUT_VERSION, sizes),
            (
                7,
                [32, 12, 8, 8, 8, 20, 8, 56, 40, 12, 8, 16, 24, 12, 4, 32, 16, 20]
            )
        );
    }

    #[test]
    fn drop_reasons_round_trip() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_u32(r as u32), Some(r));
        }
        assert_eq!(DropReason::from_u32(DropReason::COUNT), None);
    }
}
