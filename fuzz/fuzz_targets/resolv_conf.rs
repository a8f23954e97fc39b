#![no_main]
//! The host's resolv.conf as bpfnet reads it to write the sandboxes' own:
//! any text yields a resolv.conf whose first nameserver is bpfnet's
//! responder and that carries no line break inside a line it copied.
use std::net::Ipv4Addr;

use bpfnet::dns::{sandbox_resolv_conf, upstream::ResolvConf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ResolvConf::parse(text);
    let out = sandbox_resolv_conf(text, Ipv4Addr::new(10, 10, 0, 1));
    let first = out
        .lines()
        .find(|l| l.starts_with("nameserver"))
        .expect("a nameserver line");
    assert_eq!(first, "nameserver 10.10.0.1", "{out}");
    assert!(ResolvConf::parse(&out).nameservers[0] == Ipv4Addr::new(10, 10, 0, 1));
});
