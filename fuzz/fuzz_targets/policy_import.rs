#![no_main]
//! `bpfnet policy import FILE`: any text is refused or yields rules whose
//! selectors are then checked and compiled against a real state (the
//! datapath entries the rules would become), without panicking.
use std::sync::OnceLock;

use bpfnet::{policy, state, store};
use libfuzzer_sys::fuzz_target;

fn sample() -> &'static state::State {
    static STATE: OnceLock<state::State> = OnceLock::new();
    STATE.get_or_init(|| {
        store::parse(include_bytes!("../sample-state.json")).expect("the sample state parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = policy::parse_import(text) else {
        return;
    };
    if policy::check_rules(sample(), &rules).is_err() {
        return;
    }
    let mut s = sample().clone();
    for (i, (from, to, traffic, action)) in rules.into_iter().enumerate() {
        let id = 100 + i as u32;
        s.policies.insert(
            id,
            policy::Rule {
                id,
                from,
                to,
                traffic,
                action,
            },
        );
    }
    let _ = policy::compile(&s);
});
