#![no_main]
//! `--port` specs: any string is refused or parses to a range that prints
//! back to a spec parsing to the same range, and covers exactly its ports.
use bpfnet::policy::Traffic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
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
