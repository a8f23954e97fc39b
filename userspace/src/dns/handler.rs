//! One DNS message in, one decision out: the pure core of the responder,
//! shared by UDP and TCP and fuzzed by the tests.
use std::{net::Ipv4Addr, sync::Arc};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        rdata::{A, AAAA, PTR},
        Name, RData, Record, RecordType,
    },
};

use super::table::{Resolution, Table};

/// TTL of our answers: names move, nothing should cache them.
pub const TTL: u32 = 0;
/// EDNS payload size we announce (the DNS flag day's value).
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, PartialEq, Eq)]
pub enum QueryAction {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: relay the query upstream, within the limits of `sandbox`
    /// (the requester's); send `servfail` if that fails.
    Forward {
        servfail: Vec<u8>,
        sandbox: Arc<str>,
    },
    /// No answer at all.
    Drop,
}

/// Handles one query from `src`.
pub fn handle(table: &Table, src: Ipv4Addr, query: &[u8], transport: Transport) -> QueryAction {
    if !table.is_requester(src) {
        return QueryAction::Drop;
    }
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return formerr_raw(query),
    };
    if req.metadata.message_type != MessageType::Query {
        return QueryAction::Drop; // never answer answers
    }
    if req.metadata.op_code != OpCode::Query {
        return reply(&req, ResponseCode::NotImp, vec![], transport);
    }
    let [q] = req.queries.as_slice() else {
        return reply(&req, ResponseCode::FormErr, vec![], transport);
    };
    let qname = q.name().to_ascii();
    let qtype = q.query_type();
    let res = if qtype == RecordType::PTR {
        table.resolve_ptr(src, &qname)
    } else {
        table.resolve(src, &qname)
    };
    let owner = q.name().clone();
    match res {
        Resolution::NotRequester => QueryAction::Drop,
        Resolution::Unknown { forward: true } => match table.sandbox_of(src) {
            Some(sandbox) => QueryAction::Forward {
                servfail: encode(&response(&req, ResponseCode::ServFail, vec![])),
                sandbox,
            },
            None => QueryAction::Drop,
        },
        // Not authoritative: we claim nothing about the name, only that this
        // requester gets no answer from outside.
        Resolution::Unknown { forward: false } => {
            reply(&req, ResponseCode::NXDomain, vec![], transport)
        }
        Resolution::Addrs(addrs) => {
            let mut answers: Vec<Record> = vec![];
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                answers.extend(
                    addrs
                        .into_iter()
                        .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(ip)))),
                );
            }
            // AAAA on dual-stack networks; elsewhere (and for the other
            // types) the name exists with no data.
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                answers.extend(
                    table
                        .resolve6(src, &qname)
                        .into_iter()
                        .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(ip)))),
                );
            }
            reply(&req, ResponseCode::NoError, answers, transport)
        }
        Resolution::Ptr(name) => {
            let answers = match Name::from_ascii(format!("{name}.")) {
                Ok(target) => vec![Record::from_rdata(owner, TTL, RData::PTR(PTR(target)))],
                Err(_) => vec![],
            };
            reply(&req, ResponseCode::NoError, answers, transport)
        }
    }
}

fn response(req: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.response_code = code;
    // NOERROR is only ever an answer from our own names; errors and
    // NXDOMAIN (internal requesters) claim nothing about the name.
    m.metadata.authoritative = code == ResponseCode::NoError;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.queries = req.queries.clone();
    m.answers = answers;
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.edns = Some(e);
    }
    m
}

fn reply(req: &Message, code: ResponseCode, answers: Vec<Record>, t: Transport) -> QueryAction {
    let limit = match t {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(req.max_payload().clamp(512, EDNS_PAYLOAD)),
    };
    let m = response(req, code, answers);
    let bytes = encode(&m);
    if bytes.len() <= limit {
        return QueryAction::Reply(bytes);
    }
    // Too big for UDP: truncated, the client retries over TCP.
    let mut m = m;
    m.answers.clear();
    m.metadata.truncation = true;
    QueryAction::Reply(encode(&m))
}

fn encode(m: &Message) -> Vec<u8> {
    // Encoding our own, well-formed messages does not fail; an empty reply
    // would be dropped by the caller.
    m.to_vec().unwrap_or_default()
}

/// FORMERR for a query we cannot parse, if at least its header is there
/// and it claims to be a query; otherwise nothing.
fn formerr_raw(query: &[u8]) -> QueryAction {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return QueryAction::Drop;
    }
    let mut h = [0u8; 12];
    h[..2].copy_from_slice(&query[..2]);
    // QR, the query's opcode and RD; RA; RCODE 1.
    h[2] = 0x80 | (query[2] & 0x79);
    h[3] = 0x80 | ResponseCode::FormErr.low();
    QueryAction::Reply(h.to_vec())
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;
    use crate::dns::table::tests::sample;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn query(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn answer(a: QueryAction) -> Message {
        match a {
            QueryAction::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_query_for_a_visible_name_is_answered_with_its_id() {
        let t = Table::build(&sample(), &[]);
        let m = answer(handle(
            &t,
            ip("172.18.0.2"),
            &query("db.", RecordType::A, 4242),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_records(&m), [ip("172.18.0.3")]);
        assert_eq!(m.queries.len(), 1);
    }

    /// On a dual-stack network: AAAA for the name, PTR for its IPv6
    /// address (ip6.arpa), ANY with both families.
    #[test]
    fn aaaa_and_ipv6_ptr_on_a_dual_stack_network() {
        let mut state = sample();
        let db6: std::net::Ipv6Addr = "fd42:18::3".parse().unwrap();
        for sb in state.sandboxes.values_mut() {
            for ep in &mut sb.endpoints {
                if ep.ip == ip("172.18.0.3") {
                    ep.ip6 = Some(db6);
                }
            }
        }
        let t = Table::build(&state, &[]);
        let aaaa = |m: &Message| -> Vec<std::net::Ipv6Addr> {
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
                .collect()
        };
        let q = |name: &str, qt| {
            answer(handle(
                &t,
                ip("172.18.0.2"),
                &query(name, qt, 7),
                Transport::Udp,
            ))
        };
        assert_eq!(aaaa(&q("db.", RecordType::AAAA)), [db6]);
        assert!(a_records(&q("db.", RecordType::AAAA)).is_empty());
        let any = q("db.", RecordType::ANY);
        assert_eq!(
            (a_records(&any), aaaa(&any)),
            (vec![ip("172.18.0.3")], vec![db6])
        );
        let rev: String = db6
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0xf, b >> 4])
            .map(|n| format!("{n:x}."))
            .collect();
        let m = q(&format!("{rev}ip6.arpa."), RecordType::PTR);
        let RData::PTR(p) = &m.answers[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(p.0.to_ascii(), "db.");
    }

    #[test]
    fn aaaa_for_our_names_is_empty_noerror() {
        let t = Table::build(&sample(), &[]);
        let m = answer(handle(
            &t,
            ip("172.18.0.2"),
            &query("db.", RecordType::AAAA, 1),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn names_of_other_networks_are_forwarded_like_unknown_ones() {
        let t = Table::build(&sample(), &[]);
        // `web` exists on net1 only; api (net2) gets the same treatment for
        // it as for a name nobody has: a forward, keyed by api's sandbox.
        for (name, id) in [("web.", 7), ("example.org.", 9)] {
            let QueryAction::Forward { servfail, sandbox } = handle(
                &t,
                ip("172.19.0.2"),
                &query(name, RecordType::A, id),
                Transport::Udp,
            ) else {
                panic!("expected a forward for {name}");
            };
            assert_eq!(&*sandbox, "api000000000ffffffffffff");
            let m = Message::from_vec(&servfail).unwrap();
            assert_eq!(m.metadata.id, id);
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            assert!(!m.metadata.authoritative);
        }
    }

    #[test]
    fn internal_only_requesters_get_nxdomain_over_udp_and_tcp_never_a_forward() {
        let t = Table::build(&sample(), &[]);
        for (name, qtype) in [
            ("secret-payload.exfil.example.", RecordType::A),
            ("secret-payload.exfil.example.", RecordType::TXT),
            ("web.", RecordType::A),
            ("8.8.8.8.in-addr.arpa.", RecordType::PTR),
        ] {
            for tr in [Transport::Udp, Transport::Tcp] {
                let m = answer(handle(&t, ip("172.20.0.2"), &query(name, qtype, 3), tr));
                assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
                assert!(!m.metadata.authoritative, "{name}");
                assert!(m.answers.is_empty());
            }
        }
        // Its peers still resolve.
        let m = answer(handle(
            &t,
            ip("172.20.0.2"),
            &query("keeper.", RecordType::A, 4),
            Transport::Tcp,
        ));
        assert_eq!(a_records(&m), [ip("172.20.0.3")]);
    }

    #[test]
    fn strangers_get_nothing() {
        let t = Table::build(&sample(), &[]);
        for src in ["172.17.0.2", "172.18.0.1", "127.0.0.1"] {
            assert_eq!(
                handle(&t, ip(src), &query("db.", RecordType::A, 1), Transport::Udp),
                QueryAction::Drop
            );
        }
    }

    #[test]
    fn ptr_answers_the_sandbox_name() {
        let t = Table::build(&sample(), &[]);
        let m = answer(handle(
            &t,
            ip("172.18.0.2"),
            &query("3.0.18.172.in-addr.arpa.", RecordType::PTR, 1),
            Transport::Udp,
        ));
        let RData::PTR(p) = &m.answers[0].data else {
            panic!("no PTR: {m:?}");
        };
        assert_eq!(p.0.to_ascii(), "db.");
    }

    #[test]
    fn responses_are_never_answered_and_other_opcodes_are_notimp() {
        let t = Table::build(&sample(), &[]);
        let mut q = query("db.", RecordType::A, 1);
        q[2] |= 0x80;
        assert_eq!(
            handle(&t, ip("172.18.0.2"), &q, Transport::Udp),
            QueryAction::Drop
        );
        let mut q = query("db.", RecordType::A, 1);
        q[2] |= 2 << 3; // STATUS
        let m = answer(handle(&t, ip("172.18.0.2"), &q, Transport::Udp));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn unparsable_queries_get_formerr_with_their_id() {
        let t = Table::build(&sample(), &[]);
        let mut q = query("db.", RecordType::A, 0xabcd);
        q.truncate(15);
        let QueryAction::Reply(r) = handle(&t, ip("172.18.0.2"), &q, Transport::Udp) else {
            panic!("expected FORMERR");
        };
        assert_eq!(&r[..2], &[0xab, 0xcd]);
        assert_eq!(r[3] & 0x0f, 1);
        assert_eq!(
            handle(&t, ip("172.18.0.2"), &q[..5], Transport::Udp),
            QueryAction::Drop
        );
    }

    /// Random bytes, truncations and bit flips of real queries: the handler
    /// returns, whatever it is fed.
    #[test]
    fn fuzzed_input_never_panics() {
        let t = Table::build(&sample(), &["corp.example".into()]);
        let src = ip("172.18.0.2");
        // xorshift: reproducible without a rand dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = [
            ("db.", RecordType::A),
            ("store.corp.example.", RecordType::ANY),
            ("3.0.18.172.in-addr.arpa.", RecordType::PTR),
            ("example.org.", RecordType::AAAA),
        ]
        .iter()
        .map(|(n, t)| query(n, *t, 77))
        .collect();
        for i in 0..200_000u32 {
            let input: Vec<u8> = match i % 4 {
                0 => (0..rnd() % 600).map(|_| rnd() as u8).collect(),
                1 => {
                    let s = &seeds[i as usize / 4 % seeds.len()];
                    s[..(rnd() as usize % (s.len() + 1))].to_vec()
                }
                2 => {
                    let mut s = seeds[i as usize / 4 % seeds.len()].clone();
                    for _ in 0..(1 + rnd() % 4) {
                        let p = rnd() as usize % s.len();
                        s[p] ^= 1 << (rnd() % 8);
                    }
                    s
                }
                _ => {
                    // A valid header claiming many records, then garbage.
                    let mut s = seeds[0][..12].to_vec();
                    s[4..12].copy_from_slice(&(rnd()).to_be_bytes());
                    s.extend((0..rnd() % 100).map(|_| rnd() as u8));
                    s
                }
            };
            for tr in [Transport::Udp, Transport::Tcp] {
                let _ = handle(&t, src, &input, tr);
            }
        }
    }

    #[test]
    fn oversized_udp_answers_are_truncated() {
        let mut s = sample();
        // 60 sandboxes sharing one alias do not fit in 512 bytes.
        for i in 0..60u8 {
            let mut sb = s.sandboxes["cache"].clone();
            sb.name = format!("c{i}");
            sb.endpoints[0].ip = Ipv4Addr::new(172, 18, 1, i);
            sb.endpoints[0].aliases = vec!["many".into()];
            s.sandboxes.insert(sb.name.clone(), sb);
        }
        let t = Table::build(&s, &[]);
        let q = query("many.", RecordType::A, 5);
        let m = answer(handle(&t, ip("172.18.0.2"), &q, Transport::Udp));
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = answer(handle(&t, ip("172.18.0.2"), &q, Transport::Tcp));
        assert_eq!(a_records(&m).len(), 60);
    }
}
