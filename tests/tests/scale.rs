//! The long tier (`cargo xtask test --long`, or `cargo test -p bpfnet-tests
//! --test scale -- --ignored --nocapture`): thousands of sandboxes created
//! and removed, and nothing left behind. It prints the time per call as it
//! goes (min/median/max) but asserts none: timing belongs in the bench.
//! `BPFNET_SCALE_COUNT` sets the number of sandboxes (default 2,000).
use std::time::{Duration, Instant};

use bpfnet_tests::TestHost;

/// "min/median/max ms" of some call times.
fn spread(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return "-".into();
    }
    format!(
        "{:.1}/{:.1}/{:.1} ms (min/median/max of {})",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    )
}

/// CPU time (user + system) of the finished children so far: on a busy
/// machine the wall time says more about the others than about bpfnet.
fn children_cpu() -> Duration {
    // SAFETY: rusage is plain data, all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

thread_local! {
    static CPU: std::cell::RefCell<Vec<Duration>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Wall time of `f`; its children's CPU time is kept for [`cpu_spread`].
fn timed(f: impl FnOnce()) -> Duration {
    let (t, c) = (Instant::now(), children_cpu());
    f();
    CPU.with(|v| v.borrow_mut().push(children_cpu() - c));
    t.elapsed()
}

/// The spread of the CPU times of the `n` calls before the last `skip`.
fn cpu_spread(skip: usize, n: usize) -> String {
    CPU.with(|v| {
        let v = v.borrow();
        let end = v.len() - skip;
        spread(&v[end - n..end])
    })
}

#[test]
#[ignore = "long tier: cargo xtask test --long"]
fn thousands_of_sandboxes_are_created_and_removed_leaving_nothing_behind() {
    let count: usize = std::env::var("BPFNET_SCALE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    assert!(count >= 200, "BPFNET_SCALE_COUNT must be at least 200");
    let h = TestHost::new("scale");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.40.0.0/16", "net1"]);
    let name = |i: usize| format!("s{i}");
    let mut creates = Vec::with_capacity(count);
    for i in 0..count {
        let n = name(i);
        creates.push(timed(|| {
            h.bpfnet_ok(&["create", "--name", &n, "--network", "net1"]);
        }));
        if (i + 1) % 500 == 0 {
            println!(
                "{} sandboxes; last 100 creates: {}; CPU {}",
                i + 1,
                spread(&creates[i - 99..]),
                cpu_spread(0, 100)
            );
        }
    }
    let cpu_first = CPU.with(|v| spread(&v.borrow()[..100]));
    println!(
        "create, first 100: {}; CPU {cpu_first}",
        spread(&creates[..100])
    );
    println!(
        "create, last 100: {}; CPU {}",
        spread(&creates[count - 100..]),
        cpu_spread(0, 100)
    );
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(count),
        "ps lists every sandbox"
    );
    // The first and the last still reach each other, by name.
    let last = name(count - 1);
    h.exec_ok("s0", &["ping", "-c1", "-W2", &last]);
    // A network made and removed next to them.
    let t = timed(|| {
        h.bpfnet_ok(&["network", "create", "net2"]);
    });
    let u = timed(|| {
        h.bpfnet_ok(&["network", "rm", "net2"]);
    });
    println!(
        "network create / rm at {count} sandboxes: {:.1} / {:.1} ms",
        t.as_secs_f64() * 1e3,
        u.as_secs_f64() * 1e3
    );
    // The last 100 go one by one, the rest with everything else.
    let mut rms = vec![];
    for i in (count - 100..count).rev() {
        let n = name(i);
        rms.push(timed(|| {
            h.bpfnet_ok(&["rm", &n]);
        }));
    }
    println!(
        "rm, 100 at {count} sandboxes: {}; CPU {}",
        spread(&rms),
        cpu_spread(0, 100)
    );
    let unload = timed(|| {
        h.bpfnet_ok(&["datapath", "unload"]);
    });
    println!(
        "datapath unload with {} sandboxes: {:.1} s",
        count - 100,
        unload.as_secs_f64()
    );
    // Nothing left: namespaces, links, /etc/netns, pins, state, NAT table.
    assert_eq!(h.netns_list(), Vec::<String>::new(), "namespaces left");
    assert_eq!(h.link_names(None), vec!["lo"], "links left");
    let etc = h.sh_ok("ls -A /etc/netns 2>/dev/null || true");
    assert_eq!(etc.trim(), "", "/etc/netns entries left");
    let pins = h.sh_ok("ls -A /sys/fs/bpf/");
    let ours: Vec<&str> = pins.lines().filter(|p| !p.ends_with(".debug")).collect();
    assert!(ours.is_empty(), "pins left in /sys/fs/bpf: {ours:?}");
    let left = h.sh_ok(&format!("ls -AR {} 2>/dev/null || true", h.root.display()));
    assert_eq!(left.trim(), "", "state files left");
    let tables = h.sh_ok("nft list tables 2>/dev/null || true");
    assert!(!tables.contains("bpfnet"), "NAT table left:\n{tables}");
}
