//! tc over netlink, synchronously: a `clsact` qdisc and direct-action
//! `cls_bpf` filters on the host side of each endpoint. Unlike a TCX link
//! (`BPF_LINK_CREATE`, which waits for an RCU grace period on every attach),
//! adding a filter costs one netlink round trip, and the qdisc plus both
//! filters go in one send. A filter holds its program and lives as long as
//! its block: nothing to pin for it to outlive the process, and deleting the
//! veth unbinds its qdisc (and the filters with the last device bound).
//!
//! Every endpoint's qdisc binds the same two *shared* tc blocks (one per
//! hook, `SHARED_BLOCKS`): the filters exist once per namespace and judge
//! every device bound to the block. A private block per qdisc would cost
//! each new qdisc a walk of the kernel's list of indirect flow blocks (one
//! entry per block on the host: `flow_indr_dev_setup_offload`), which grows
//! with the number of endpoints; binding an existing shared block does not.
//! The kernel lets a shared block's filters change only by the block's
//! index (`Hook::Block`); a listing by device shows them, with the block.
//! A qdisc an older bpfnet made has blocks of its own: its filters are
//! still changed by device and hook (`Hook::Device`).
use std::io;

use anyhow::{anyhow, bail, Context as _, Result};
use rtnetlink::{
    packet_core::{
        DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _, NLM_F_ACK,
        NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    },
    packet_route::{
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

/// The tc blocks every endpoint's clsact qdisc binds, ingress and egress
/// (their indexes are per network namespace; `tc filter show block N`).
pub const SHARED_BLOCKS: [u32; 2] = [0x6270_0001, 0x6270_0002];
/// `TCA_INGRESS_BLOCK`, `TCA_EGRESS_BLOCK` (include/uapi/linux/rtnetlink.h).
const TCA_BLOCKS: [u16; 2] = [13, 14];

const ETH_P_ALL: u16 = 0x0003;
/// The clsact qdisc's own handle (`ffff:`), as `tc` gives it.
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Direction::Ingress => TcHandle::MIN_INGRESS,
                Direction::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// One direct-action bpf filter to install.
pub struct NewFilter<'a> {
    pub direction: Direction,
    pub prio: u16,
    pub handle: u32,
    pub prog_fd: i32,
    pub name: &'a str,
}

/// A bpf filter as the kernel lists it.
#[derive(Clone, Debug)]
pub struct Filter {
    pub direction: Direction,
    pub prio: u16,
    pub handle: u32,
    pub name: String,
    pub prog_id: u32,
    /// The shared block it sits on (`None`: the device's own block). One
    /// filter of a shared block is listed once per device bound to it.
    pub block: Option<u32>,
}

impl Filter {
    /// Where a change of this filter (listed on `ifindex`) must be sent.
    pub fn hook(&self, ifindex: u32) -> Hook {
        match self.block {
            Some(block) => Hook::Block(block),
            None => Hook::Device(ifindex, self.direction),
        }
    }
}

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
pub struct Tc {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn tc_info(prio: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be())
}

/// Where a filter sits: one device's hook (its own block), or a shared
/// block, which the kernel lets change only by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Device(u32, Direction),
    Block(u32),
}

impl Hook {
    /// The shared block of `direction`.
    pub fn shared(direction: Direction) -> Hook {
        Hook::Block(SHARED_BLOCKS[direction as usize])
    }

    fn header(self, msg: &mut TcMessage) {
        match self {
            Hook::Device(ifindex, direction) => {
                msg.header.index = ifindex as i32;
                msg.header.parent = direction.parent();
            }
            Hook::Block(block) => {
                msg.header.index = TcHeader::TCM_IFINDEX_MAGIC_BLOCK as i32;
                msg.header.parent = block.into();
            }
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Device(ifindex, d) => write!(f, "ifindex {ifindex} {d:?}"),
            Hook::Block(b) => write!(f, "block {b:#x}"),
        }
    }
}

fn filter_message(hook: Hook, f: &NewFilter) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    hook.header(&mut msg);
    msg.header.handle = f.handle.into();
    msg.header.info = tc_info(f.prio);
    msg.attributes = vec![
        TcAttribute::Kind("bpf".into()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(f.prog_fd as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(f.name.into())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]),
    ];
    RouteNetlinkMessage::NewTrafficFilter(msg)
}

fn clsact_message(ifindex: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::CLSACT;
    msg.header.handle = CLSACT_HANDLE;
    msg.attributes = vec![TcAttribute::Kind("clsact".into())];
    msg
}

/// A new clsact qdisc bound to the shared blocks. (On a device that has a
/// clsact already, the kernel keeps it as it is: blocks cannot change.)
fn shared_clsact_message(ifindex: u32) -> TcMessage {
    let mut msg = clsact_message(ifindex);
    for (kind, block) in TCA_BLOCKS.into_iter().zip(SHARED_BLOCKS) {
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(
            kind,
            block.to_ne_bytes().to_vec(),
        )));
    }
    msg
}

/// Errors that mean "already gone" for a delete.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
    )
}

impl Tc {
    pub fn open() -> Result<Tc> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket for tc")?;
        socket
            .bind_auto()
            .context("binding the tc netlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connecting the tc netlink socket")?;
        Ok(Tc {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends all `msgs` in one datagram and waits for each one's answer;
    /// returns them in order (the kernel goes on after a failed message).
    fn batch(&mut self, msgs: Vec<(RouteNetlinkMessage, u16)>) -> Result<Vec<io::Result<()>>> {
        let first = self.seq.wrapping_add(1);
        let mut out = vec![];
        for (inner, flags) in msgs {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = self.seq;
            let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
            m.finalize();
            let start = out.len();
            out.resize(start + m.buffer_len(), 0);
            m.serialize(&mut out[start..]);
        }
        let n = self.seq.wrapping_sub(first).wrapping_add(1) as usize;
        self.socket.send(&out, 0).context("sending to netlink")?;
        let mut answers: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
        while answers.iter().any(Option::is_none) {
            for (seq, payload) in self.receive()? {
                let i = seq.wrapping_sub(first) as usize;
                if let (NetlinkPayload::Error(e), Some(slot)) = (payload, answers.get_mut(i)) {
                    *slot = Some(match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    });
                }
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("all answered"))
            .collect())
    }

    /// One datagram's messages.
    fn receive(&mut self) -> Result<Vec<(u32, NetlinkPayload<RouteNetlinkMessage>)>> {
        self.buf.clear();
        self.socket
            .recv(&mut self.buf, 0)
            .context("reading from netlink")?;
        let mut msgs = vec![];
        let mut off = 0;
        while off < self.buf.len() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..])
                .map_err(|e| anyhow!("decoding a netlink answer: {e}"))?;
            let len = m.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
            msgs.push((m.header.sequence_number, m.payload));
        }
        Ok(msgs)
    }

    fn dump(&mut self, request: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        self.socket.send(&buf, 0).context("sending to netlink")?;
        let mut out = vec![];
        loop {
            for (s, payload) in self.receive()? {
                if s != seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(e.to_io()).context("netlink dump")
                    }
                    _ => {}
                }
            }
        }
    }

    /// Adds the clsact qdisc, bound to the shared blocks, and installs (or
    /// atomically replaces, same prio and handle: on a block that has them,
    /// a replace by the same program) the given filters on those blocks:
    /// one send, one answer each. A device that has a clsact already keeps
    /// it: its filters go where its qdisc's blocks are (its own blocks, if
    /// an older bpfnet made it). On failure a qdisc this call made goes;
    /// never a shared block's filters, which judge the other devices.
    pub fn attach(&mut self, ifindex: u32, filters: &[NewFilter]) -> Result<()> {
        let mut msgs = vec![(
            RouteNetlinkMessage::NewQueueDiscipline(shared_clsact_message(ifindex)),
            NLM_F_CREATE | NLM_F_EXCL,
        )];
        for f in filters {
            msgs.push((
                filter_message(Hook::shared(f.direction), f),
                NLM_F_CREATE | NLM_F_REPLACE,
            ));
        }
        let mut answers = self.batch(msgs)?.into_iter();
        match answers.next().expect("one answer per message") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // The filters above went to the shared blocks whatever this
                // device binds (a replace by the same program, or no such
                // block yet): their answers do not tell about this device.
                return self.attach_existing(ifindex, filters);
            }
            Err(e) => return Err(e).context("adding the clsact qdisc"),
        }
        if let Some((f, Err(e))) = filters.iter().zip(answers).find(|(_, a)| a.is_err()) {
            let _ = self.delete_clsact(ifindex);
            return Err(e).with_context(|| format!("adding filter {}", f.name));
        }
        Ok(())
    }

    /// `attach` on a device with a clsact qdisc: the filters go to each
    /// hook's block, shared or the device's own.
    fn attach_existing(&mut self, ifindex: u32, filters: &[NewFilter]) -> Result<()> {
        let blocks = self.clsact_blocks(ifindex)?;
        for f in filters {
            let hook = match blocks[f.direction as usize] {
                Some(block) => Hook::Block(block),
                None => Hook::Device(ifindex, f.direction),
            };
            self.replace_at(hook, f, NLM_F_CREATE | NLM_F_REPLACE)
                .with_context(|| format!("adding filter {} ({hook})", f.name))?;
        }
        Ok(())
    }

    /// The shared blocks (ingress, egress) the clsact qdisc of `ifindex`
    /// binds; `None` for a hook with a block of its own.
    fn clsact_blocks(&mut self, ifindex: u32) -> Result<[Option<u32>; 2]> {
        let msgs = self.dump(RouteNetlinkMessage::GetQueueDiscipline(
            TcMessage::with_index(ifindex as i32),
        ))?;
        let mut blocks = [None, None];
        for m in msgs {
            let RouteNetlinkMessage::NewQueueDiscipline(m) = m else {
                continue;
            };
            if m.header.index as u32 != ifindex || m.header.parent != TcHandle::CLSACT {
                continue;
            }
            for a in &m.attributes {
                let TcAttribute::Other(nla) = a else { continue };
                let Some(i) = TCA_BLOCKS.iter().position(|k| *k == nla.kind()) else {
                    continue;
                };
                let mut v = [0u8; 4];
                if nla.value_len() == 4 {
                    nla.emit_value(&mut v);
                    blocks[i] = Some(u32::from_ne_bytes(v)).filter(|b| *b != 0);
                }
            }
        }
        Ok(blocks)
    }

    /// Atomically points an existing filter at another program (same
    /// hook, prio and handle: `tc filter replace`). No moment without a
    /// program.
    pub fn replace(&mut self, hook: Hook, f: &NewFilter) -> Result<()> {
        self.replace_at(hook, f, NLM_F_REPLACE)
            .with_context(|| format!("replacing filter {} of {hook}", f.name))
    }

    fn replace_at(&mut self, hook: Hook, f: &NewFilter, flags: u16) -> Result<()> {
        let answer = self
            .batch(vec![(filter_message(hook, f), flags)])?
            .remove(0);
        Ok(answer?)
    }

    /// Deletes the filters at `prio` (missing ones are fine).
    pub fn delete_filter(&mut self, hook: Hook, prio: u16) -> Result<()> {
        let mut msg = TcMessage::default();
        hook.header(&mut msg);
        msg.header.info = tc_info(prio);
        match self
            .batch(vec![(RouteNetlinkMessage::DelTrafficFilter(msg), 0)])?
            .remove(0)
        {
            Err(e) if !gone(&e) => {
                Err(e).with_context(|| format!("deleting filter prio {prio} of {hook}"))
            }
            _ => Ok(()),
        }
    }

    /// Deletes the clsact qdisc and with it every filter on both hooks
    /// (a missing device or qdisc is fine).
    pub fn delete_clsact(&mut self, ifindex: u32) -> Result<()> {
        let msg = RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex));
        match self.batch(vec![(msg, 0)])?.remove(0) {
            Err(e) if !gone(&e) => {
                Err(e).with_context(|| format!("deleting the clsact qdisc of ifindex {ifindex}"))
            }
            _ => Ok(()),
        }
    }

    /// The bpf filters on one hook of `ifindex` (none when it has no clsact).
    pub fn filters(&mut self, ifindex: u32, direction: Direction) -> Result<Vec<Filter>> {
        let mut req = TcMessage::with_index(ifindex as i32);
        req.header.parent = direction.parent();
        let msgs = match self.dump(RouteNetlinkMessage::GetTrafficFilter(req)) {
            Ok(m) => m,
            // No clsact qdisc (or the device just went): no filters.
            Err(e) if e.downcast_ref::<io::Error>().is_some_and(gone) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for m in msgs {
            let RouteNetlinkMessage::NewTrafficFilter(m) = m else {
                continue;
            };
            let handle: u32 = m.header.handle.into();
            // Each priority's chain head comes as a message without handle.
            if handle == 0 {
                continue;
            }
            let mut f = Filter {
                direction,
                prio: (m.header.info >> 16) as u16,
                handle,
                name: String::new(),
                prog_id: 0,
                // A shared block's filters come with the block's index in
                // place of the parent.
                block: (m.header.index as u32 == TcHeader::TCM_IFINDEX_MAGIC_BLOCK)
                    .then(|| m.header.parent.into()),
            };
            let mut bpf = false;
            for a in m.attributes {
                match a {
                    TcAttribute::Kind(k) => bpf = k == "bpf",
                    TcAttribute::Options(opts) => {
                        for o in opts {
                            match o {
                                TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.name = n,
                                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.prog_id = id,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if bpf {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Index and name of every veth of this namespace.
    pub fn veths(&mut self) -> Result<Vec<(u32, String)>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        let mut out = vec![];
        for m in msgs {
            let RouteNetlinkMessage::NewLink(m) = m else {
                continue;
            };
            let mut name = None;
            let mut veth = false;
            for a in m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n),
                    LinkAttribute::LinkInfo(infos) => {
                        veth = infos
                            .iter()
                            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                    }
                    _ => {}
                }
            }
            if let (true, Some(name)) = (veth, name) {
                out.push((m.header.index, name));
            }
        }
        Ok(out)
    }
}

/// The device (ENODEV) or the filter (ENOENT) is not there (any more).
pub fn is_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .is_some_and(|c| c == libc::ENODEV || c == libc::ENOENT)
}

/// The index of interface `name`, or None if there is none.
pub fn ifindex(name: &str) -> Result<Option<u32>> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(Some(i)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => bail!("looking up interface {name}: {e}"),
    }
}
