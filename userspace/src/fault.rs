//! Fault points for the crash-safety tests. Every mutating step passes
//! through [`point`]; built with the `fault-injection` feature and run with
//! `BPFNET_FAULT=N` (the N-th point this process reaches) or
//! `BPFNET_FAULT=NAME` (a named point), the process kills itself with SIGKILL
//! right there: a crash, not an error return, so nothing gets to clean up.
//! `BPFNET_FAULT_LIST=1` prints every point reached to stderr. Without the
//! feature, `point` compiles to nothing.

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var_os("BPFNET_FAULT_LIST").is_some() {
        eprintln!("fault point {n} {name}");
    }
    let Ok(spec) = std::env::var("BPFNET_FAULT") else {
        return;
    };
    let hit = match spec.parse::<usize>() {
        Ok(k) => k == n,
        Err(_) => spec == name,
    };
    if hit {
        eprintln!("fault point {n} {name}: crashing");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
