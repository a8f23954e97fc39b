#![no_main]
//! `--port` specs: any string is refused or parses to a range that prints
//! back to a spec parsing to the same range, and covers exactly its ports.
//! `--publish`/`--expose` specs: refused or parsed to ranges in 1..=65535
//! whose expansion pairs each container port with host ports in range.
use bpfnet::policy::Traffic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    publish(spec);
    let Ok(t) = Traffic::parse_port(spec) else {
        return;
    };
    let Traffic::Ports { first, last, .. } = t else {
        panic!("a port spec parsed to {t:?}");
    };
    assert!(1 <= first && first <= last, "{spec:?} → {t:?}");
    let again = Traffic::parse_port(&t.display()).expect("printed spec parses");
    assert_eq!(again, t, "{spec:?} prints as {:?}", t.display());
    for proto in [6u8, 17] {
        assert!(t.covers(proto, first) == t.covers(proto, last));
        if first > 1 {
            assert!(!t.covers(proto, first - 1));
        }
    }
});

fn publish(spec: &str) {
    if let Ok(p) = bpfnet::ports::parse_publish(spec) {
        let (c0, c1) = p.container_ports;
        assert!(1 <= c0 && c0 <= c1, "{spec:?} → {p:?}");
        let expanded = p.expand();
        assert_eq!(expanded.len(), usize::from(c1 - c0) + 1, "{spec:?}");
        for (port, host) in expanded {
            assert!((c0..=c1).contains(&port.port));
            if let (Some((h0, h1)), Some((r0, r1))) = (p.host_ports, host) {
                assert!(h0 <= r0 && r1 <= h1 && r0 >= 1, "{spec:?}: {r0}-{r1} outside {h0}-{h1}");
            }
        }
    }
    if let Ok(ports) = bpfnet::ports::parse_expose(spec) {
        assert!(!ports.is_empty() && ports.iter().all(|p| p.port >= 1), "{spec:?}");
    }
}
