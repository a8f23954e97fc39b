#![no_main]
//! The DNS responder's message handling: any bytes, from a member of two
//! networks, of one, or a stranger, over UDP or TCP (the first byte picks).
//! The handler must return, and whatever it sends back must be a DNS
//! response to that query: its id, QR set, parsable, within the transport's
//! size.
use std::{net::Ipv4Addr, sync::OnceLock};

use bpfnet::dns::{
    handler::{handle, QueryAction, Transport},
    table::Table,
};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let state = bpfnet::store::parse(include_bytes!("../sample-state.json"))
            .expect("the sample state parses");
        Table::build(&state, &["corp.example".into()])
    })
}

/// b (on net1 and net2), a (net1), a stranger.
const SOURCES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 11, 0, 2),
    Ipv4Addr::new(10, 10, 0, 2),
    Ipv4Addr::new(10, 12, 0, 9),
];

fn check_reply(query: &[u8], reply: &[u8], transport: Transport) {
    assert!(reply.len() >= 12, "reply shorter than a header: {reply:?}");
    assert_eq!(reply[..2], query[..2], "reply with another id");
    assert!(reply[2] & 0x80 != 0, "reply without QR");
    let limit = match transport {
        Transport::Udp => 1232,
        Transport::Tcp => usize::from(u16::MAX),
    };
    assert!(
        reply.len() <= limit,
        "{} bytes over {transport:?}",
        reply.len()
    );
    let m = Message::from_vec(reply).expect("our reply parses");
    assert_eq!(m.metadata.message_type, MessageType::Response);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let src = SOURCES[usize::from(sel & 0x7f) % SOURCES.len()];
    let transport = if sel & 0x80 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    match handle(table(), src, query, transport) {
        QueryAction::Reply(bytes) => check_reply(query, &bytes, transport),
        QueryAction::Forward { servfail, .. } => check_reply(query, &servfail, transport),
        QueryAction::Drop => {}
    }
    // The name lookups on their own, with names no DNS parser vetted.
    if let Ok(name) = std::str::from_utf8(query) {
        let _ = table().resolve(src, name);
        let _ = table().resolve_ptr(src, name);
    }
});
