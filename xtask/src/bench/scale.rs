//! The scale stages of `cargo xtask bench`: grow one contender to thousands
//! of endpoints, many networks and many policy rules, each within a time
//! budget, and measure what changes with size.
use super::*;

/// Time left for one contender's scale runs: growing stops (with a note)
/// when it is spent, so the full run keeps to its ~15 minutes.
pub(super) struct Budget {
    deadline: Instant,
    pub(super) notes: Vec<String>,
}

impl Budget {
    pub(super) fn new(secs: u64) -> Budget {
        Budget {
            deadline: Instant::now() + Duration::from_secs(secs),
            notes: Vec::new(),
        }
    }

    /// True (once noted) when the time is up.
    fn spent(&mut self, rec: &Recorder, what: String) -> bool {
        if Instant::now() < self.deadline {
            return false;
        }
        let msg = format!("time budget spent: {what}");
        rec.progress(&msg);
        self.notes.push(msg);
        true
    }
}

/// Endpoint scale for one contender: grow the bench network to each count
/// and measure packet rate and latency there; also time set-up at 1,000 and
/// find where a kernel bridge stops taking ports.
pub(super) fn scale_endpoints(
    rec: &mut Recorder,
    cfg: &Config,
    c: &Contender,
    budget: &mut Budget,
) -> Result<Value> {
    let name = c.kind.name();
    let bridge_based = matches!(c.kind, Kind::LinuxBridge | Kind::Netavark | Kind::CniBridge);
    let mut times: Vec<f64> = Vec::new();
    let mut notes = json!({});
    let mut made = 0usize;
    for &n in cfg.endpoints {
        if bridge_based && n > 1024 {
            // A kernel bridge takes at most 1,024 ports (BR_MAX_PORTS): show
            // where it stops instead of measuring.
            let t = Instant::now();
            let mut stop = None;
            while made + 2 < 1030 {
                match c.add_sandbox(&extra_name(made), &extra_ip(made)) {
                    Ok(_) => made += 1,
                    Err(e) => {
                        stop = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            let msg = match &stop {
                Some(e) => format!("sandbox #{} (port {}) failed: {e}", made + 3, made + 3),
                None => format!("{} endpoints created without error", made + 2),
            };
            rec.progress(&format!("{name}: bridge port limit: {msg}"));
            notes["bridge_limit"] = json!({ "endpoints_ok": made + 2, "error": stop,
                                            "seconds": t.elapsed().as_secs_f64() });
            break;
        }
        if let Some(st) = report::stats(&times[times.len().saturating_sub(50)..]) {
            let est = (n - (made + 2)) as f64 * st.median / 1e3;
            if Instant::now() + Duration::from_secs_f64(est) > budget.deadline {
                let msg = format!(
                    "{name}: {n} endpoints skipped: ~{est:.0} s more at {:.0} ms per create \
                     exceeds the time budget",
                    st.median
                );
                rec.progress(&msg);
                budget.notes.push(msg);
                break;
            }
        }
        rec.progress(&format!("{name}: growing the network to {n} endpoints"));
        while made + 2 < n {
            if budget.spent(
                rec,
                format!("{name} stopped at {} of {n} endpoints", made + 2),
            ) {
                return Ok(notes);
            }
            let d = c
                .add_sandbox(&extra_name(made), &extra_ip(made))
                .with_context(|| format!("{name}: endpoint {} of {n}", made + 3))?;
            times.push(d.as_secs_f64() * 1e3);
            rec.series
                .entry(name.to_string())
                .or_default()
                .push(d.as_secs_f64() * 1e3);
            made += 1;
            if made.is_multiple_of(250) {
                rec.progress(&format!("{name}: {} endpoints", made + 2));
            }
            if made + 2 == 1000 {
                let last = &times[times.len().saturating_sub(100)..];
                let st = report::stats(last).context("no set-up times")?;
                let all = report::stats(&times).context("no set-up times")?;
                rec.add(
                    0,
                    name,
                    "setup_ms_1000",
                    st.median,
                    json!({ "median_all_ms": all.median, "max_ms": all.max,
                            "calls": times.len(), "total_s": times.iter().sum::<f64>() / 1e3 }),
                );
            }
        }
        if n == *cfg.endpoints.last().unwrap_or(&0) && times.len() >= 200 {
            // Flat with scale: the last 100 set-ups against the first 100.
            for (fig, part) in [
                ("setup_ms_first100", &times[..100]),
                ("setup_ms_last100", &times[times.len() - 100..]),
            ] {
                let st = report::stats(part).context("no set-up times")?;
                rec.add(
                    0,
                    name,
                    fig,
                    st.median,
                    json!({ "endpoints": n, "max_ms": st.max }),
                );
            }
        }
        c.check_path()?;
        if !c.kind.has_traffic() {
            continue;
        }
        let p = c.pair();
        for rep in 1..=2 {
            let r = twice(rec, &format!("{name} udp@{n}"), || {
                c.udp_flood(cfg.udp_secs)
            })?;
            rec.add(rep, name, &format!("udp64_pps_ep{n}"), r.pps, r.detail);
        }
        if n >= 1000 {
            let r = twice(rec, &format!("{name} rr@{n}"), || {
                traffic::tcp_rr(&p, cfg.secs)
            })?;
            rec.add(1, name, &format!("rr_p50_us_ep{n}"), r.p50_us, r.detail);
        }
    }
    Ok(notes)
}

/// Network scale: add empty networks of the same driver and measure again.
pub(super) fn scale_networks(
    rec: &mut Recorder,
    cfg: &Config,
    c: &mut Contender,
    budget: &mut Budget,
) -> Result<()> {
    let name = c.kind.name();
    for &n in cfg.networks {
        rec.progress(&format!("{name}: growing to {n} networks"));
        while c.extra_networks + 1 < n {
            let at = c.extra_networks + 1;
            if budget.spent(rec, format!("{name} stopped at {at} of {n} networks")) {
                return Ok(());
            }
            c.add_network()
                .with_context(|| format!("{name}: network {} of {n}", c.extra_networks + 2))?;
        }
        c.check_path()?;
        let p = c.pair();
        for rep in 1..=2 {
            let r = twice(rec, &format!("{name} udp@{n}nets"), || {
                c.udp_flood(cfg.udp_secs)
            })?;
            rec.add(rep, name, &format!("udp64_pps_net{n}"), r.pps, r.detail);
        }
        if n >= 1000 {
            let r = twice(rec, &format!("{name} rr@{n}nets"), || {
                traffic::tcp_rr(&p, cfg.secs)
            })?;
            rec.add(1, name, &format!("rr_p50_us_net{n}"), r.p50_us, r.detail);
        }
    }
    Ok(())
}

/// Policy scale (bpfnet): rules from bench-a to other networks (or to the
/// bench network) on ports the measured traffic does not use.
pub(super) fn scale_policies(
    rec: &mut Recorder,
    cfg: &Config,
    c: &Contender,
    budget: &mut Budget,
) -> Result<()> {
    let name = c.kind.name();
    let mut made = 0usize;
    for &n in cfg.policies {
        if budget.spent(rec, format!("{name} stopped at {made} of {n} rules")) {
            return Ok(());
        }
        rec.progress(&format!("{name}: importing policy rules up to {n}"));
        let took = c
            .add_policies(made, n)
            .with_context(|| format!("{name}: importing rules {made}..{n}"))?;
        let import_ms = took.as_secs_f64() * 1e3;
        rec.progress(&format!(
            "{name}: {n} rules ({import_ms:.0} ms for the import)"
        ));
        rec.add(
            1,
            name,
            &format!("policy_import_ms_pol{n}"),
            import_ms,
            json!({}),
        );
        made = n;
        c.check_path()?;
        let p = c.pair();
        for rep in 1..=2 {
            let r = twice(rec, &format!("{name} udp@{n}rules"), || {
                c.udp_flood(cfg.udp_secs)
            })?;
            rec.add(rep, name, &format!("udp64_pps_pol{n}"), r.pps, r.detail);
        }
        let r = twice(rec, &format!("{name} rr@{n}rules"), || {
            traffic::tcp_rr(&p, cfg.secs)
        })?;
        rec.add(
            1,
            name,
            &format!("rr_p50_us_pol{n}"),
            r.p50_us,
            json!({ "rr": r.detail, "policy_import_ms": import_ms }),
        );
    }
    Ok(())
}
