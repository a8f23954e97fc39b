#![no_main]
//! state.json as bpfnet reads it: any bytes either are refused by
//! `store::parse` or make a state that every read-only consumer (IPAM,
//! policy compilation, the DNS table, inspect and ls output) handles
//! without panicking, and that writes back to itself.
use bpfnet::{dns, inspect, ipam, policy, store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = store::parse(data) else {
        return;
    };
    let _ = policy::compile(&s);
    let _ = dns::table::Table::build(&s, &[]);
    let _ = dns::needed(&s);
    let _ = inspect::ps_json(&s);
    let _ = inspect::network_ls_json(&s);
    let _ = inspect::network_rows(&s);
    let _ = inspect::sandbox_rows(&s);
    for name in s.networks.keys() {
        let _ = inspect::network_json(&s, name);
    }
    for sb in s.sandboxes.values() {
        let _ = inspect::sandbox_json(&s, sb);
    }
    let _ = ipam::next_subnet(&s, &[]);
    for net in s.networks.values() {
        let _ = ipam::allocate(&s, net, None);
        if let Some(gw) = net.gateway {
            let _ = ipam::allocate(&s, net, Some(gw));
        }
    }
    let _ = s.free_slot();
    let _ = s.free_net_id();
    // What bpfnet writes, it reads back as the same state.
    let bytes = serde_json::to_vec_pretty(&s).expect("a parsed state serialises");
    let again = store::parse(&bytes).expect("a written state parses");
    assert_eq!(
        serde_json::to_vec_pretty(&again).expect("serialises"),
        bytes,
        "state changes on a write/read round trip"
    );
});
