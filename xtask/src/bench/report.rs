//! Samples → summary (min / median / max), the aligned table, results.json,
//! RESULTS.md and the PNG plot.
use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};
use plotters::prelude::*;
use serde_json::{json, Value};

/// A figure: its key in results.json, unit, whether more is better, and what
/// it is.
pub struct Figure {
    pub key: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub what: &'static str,
}

pub const FIGURES: &[Figure] = &[
    Figure {
        key: "tcp1_gbps",
        unit: "Gbit/s",
        higher_is_better: true,
        what: "TCP stream, 1 connection (iperf3), A→B",
    },
    Figure {
        key: "pub_tcp1_gbps",
        unit: "Gbit/s",
        higher_is_better: true,
        what: "TCP stream, 1 connection, from an outside netns to B's published port (host address, nftables DNAT)",
    },
    Figure {
        key: "tcp4_gbps",
        unit: "Gbit/s",
        higher_is_better: true,
        what: "TCP stream, 4 connections (iperf3 -P4)",
    },
    Figure {
        key: "udp64_pps",
        unit: "pkt/s",
        higher_is_better: true,
        what: "UDP 64 B frames forwarded, counted at B's UDP layer",
    },
    Figure {
        key: "tcp1_gbps_ipv6",
        unit: "Gbit/s",
        higher_is_better: true,
        what: "tcp1_gbps over IPv6 (fd42:90::2 → fd42:90::3)",
    },
    Figure {
        key: "udp64_pps_ipv6",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps over IPv6: the smallest IPv6/UDP frame, 62 B (66 on the wire; the IPv6 header is 20 B longer), counted at B's UDP6 layer",
    },
    Figure {
        key: "rr_p50_us",
        unit: "µs",
        higher_is_better: false,
        what: "TCP ping-pong round trip, median (sockperf --full-rtt)",
    },
    Figure {
        key: "rr_p99_us",
        unit: "µs",
        higher_is_better: false,
        what: "TCP ping-pong round trip, 99th percentile",
    },
    Figure {
        key: "cpu_s_per_gb",
        unit: "CPU-s/GB",
        higher_is_better: false,
        what: "CPU time of the iperf3 pair + ksoftirqd per GB moved during tcp1",
    },
    Figure {
        key: "prog_ns_per_pkt",
        unit: "ns",
        higher_is_better: false,
        what: "eBPF program run time per invocation during the UDP flood",
    },
    Figure {
        key: "setup_ms",
        unit: "ms",
        higher_is_better: false,
        what: "set-up per sandbox, median of a round's 10 (bpfnet: `create`; netavark: `setup`; CNI: bridge ADD + loopback ADD)",
    },
    Figure {
        key: "setup_p95_ms",
        unit: "ms",
        higher_is_better: false,
        what: "set-up per sandbox, 95th percentile of a round's 10",
    },
    Figure {
        key: "teardown_ms",
        unit: "ms",
        higher_is_better: false,
        what: "teardown per sandbox incl. its netns, median of a round's 10 (bpfnet: `rm -f`; netavark: `teardown`; CNI: bridge DEL)",
    },
    Figure {
        key: "teardown_p95_ms",
        unit: "ms",
        higher_is_better: false,
        what: "teardown per sandbox, 95th percentile of a round's 10",
    },
    Figure {
        key: "setup_ms_first100",
        unit: "ms",
        higher_is_better: false,
        what: "set-up per sandbox, median of the first 100 of the largest endpoint scale run",
    },
    Figure {
        key: "setup_ms_last100",
        unit: "ms",
        higher_is_better: false,
        what: "set-up per sandbox, median of the last 100 of the largest endpoint scale run (2,000 for bpfnet)",
    },
    Figure {
        key: "setup_ms_1000",
        unit: "ms",
        higher_is_better: false,
        what: "create+connect per sandbox with 900–1,000 on the network",
    },
    Figure {
        key: "udp64_pps_ep100",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 100 endpoints on the network",
    },
    Figure {
        key: "udp64_pps_ep1000",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 1,000 endpoints on the network",
    },
    Figure {
        key: "udp64_pps_ep2000",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 2,000 endpoints (past the bridge's 1,024 ports)",
    },
    Figure {
        key: "rr_p50_us_ep1000",
        unit: "µs",
        higher_is_better: false,
        what: "rr_p50_us with 1,000 endpoints on the network",
    },
    Figure {
        key: "rr_p50_us_ep2000",
        unit: "µs",
        higher_is_better: false,
        what: "rr_p50_us with 2,000 endpoints",
    },
    Figure {
        key: "udp64_pps_net100",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 100 networks",
    },
    Figure {
        key: "udp64_pps_net1000",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 1,000 networks",
    },
    Figure {
        key: "rr_p50_us_net1000",
        unit: "µs",
        higher_is_better: false,
        what: "rr_p50_us with 1,000 networks",
    },
    Figure {
        key: "udp64_pps_pol1000",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 1,000 policy rules",
    },
    Figure {
        key: "rr_p50_us_pol1000",
        unit: "µs",
        higher_is_better: false,
        what: "rr_p50_us with 1,000 policy rules",
    },
    Figure {
        key: "policy_import_ms_pol1000",
        unit: "ms",
        higher_is_better: false,
        what: "importing 1,000 policy rules (one `bpfnet policy import`)",
    },
    Figure {
        key: "policy_import_ms_pol10000",
        unit: "ms",
        higher_is_better: false,
        what: "importing 9,000 more rules, to 10,000 (compile + load of all)",
    },
    Figure {
        key: "udp64_pps_pol10000",
        unit: "pkt/s",
        higher_is_better: true,
        what: "udp64_pps with 10,000 policy rules",
    },
    Figure {
        key: "rr_p50_us_pol10000",
        unit: "µs",
        higher_is_better: false,
        what: "rr_p50_us with 10,000 policy rules",
    },
    Figure {
        key: "gen_sink_pps",
        unit: "pkt/s",
        higher_is_better: true,
        what: "the generator alone, into a sink veth in the sender's netns",
    },
];

/// The figures every run (also --quick) must produce.
pub const CORE: &[&str] = &[
    "tcp1_gbps",
    "tcp4_gbps",
    "pub_tcp1_gbps",
    "udp64_pps",
    "tcp1_gbps_ipv6",
    "udp64_pps_ipv6",
    "rr_p50_us",
    "rr_p99_us",
    "cpu_s_per_gb",
    "prog_ns_per_pkt",
    "setup_ms",
    "setup_p95_ms",
    "teardown_ms",
    "teardown_p95_ms",
];

pub const CONTENDERS: &[&str] = &[
    "bpfnet",
    "minimal-prog",
    "linux-bridge",
    "netavark",
    "cni-bridge",
    "direct-veth",
];

#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        min: v[0],
        median,
        max: v[n - 1],
        n,
    })
}

/// The `p` quantile (0..=1) by the nearest-rank method; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub type Summary = BTreeMap<String, BTreeMap<String, Stats>>;

/// Groups the runs (`{"figure","contender","value"}`) by figure and contender.
pub fn summarize(runs: &[Value]) -> Summary {
    let mut by: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in runs {
        let (Some(f), Some(c), Some(v)) = (
            r["figure"].as_str(),
            r["contender"].as_str(),
            r["value"].as_f64(),
        ) else {
            continue;
        };
        by.entry((f.to_string(), c.to_string()))
            .or_default()
            .push(v);
    }
    let mut out = Summary::new();
    for ((f, c), v) in by {
        if let Some(s) = stats(&v) {
            out.entry(f).or_default().insert(c, s);
        }
    }
    out
}

pub fn summary_json(s: &Summary) -> Value {
    let mut m = serde_json::Map::new();
    for (f, per) in s {
        let mut pm = serde_json::Map::new();
        for (c, st) in per {
            pm.insert(
                c.clone(),
                json!({ "min": st.min, "median": st.median, "max": st.max, "n": st.n }),
            );
        }
        m.insert(f.clone(), Value::Object(pm));
    }
    Value::Object(m)
}

/// Figures in display order: known ones first, then any other.
fn ordered(s: &Summary) -> Vec<&str> {
    let mut v: Vec<&str> = FIGURES
        .iter()
        .map(|f| f.key)
        .filter(|k| s.contains_key(*k))
        .collect();
    for k in s.keys() {
        if !v.contains(&k.as_str()) {
            v.push(k);
        }
    }
    v
}

fn contenders_of(per: &BTreeMap<String, Stats>) -> Vec<&str> {
    let mut v: Vec<&str> = CONTENDERS
        .iter()
        .copied()
        .filter(|c| per.contains_key(*c))
        .collect();
    for k in per.keys() {
        if !v.contains(&k.as_str()) {
            v.push(k);
        }
    }
    v
}

pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.3}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn ratio(per: &BTreeMap<String, Stats>, c: &str, against: &str) -> String {
    match (per.get(c), per.get(against)) {
        (Some(a), Some(b)) if c != against && b.median != 0.0 => {
            format!("{:.2}×", a.median / b.median)
        }
        _ => "–".into(),
    }
}

/// Rows: figure, contender, min, median, max, n, ×linux-bridge,
/// ×direct-veth, ×netavark, ×minimal-prog.
fn rows(s: &Summary) -> Vec<[String; 10]> {
    let mut out = Vec::new();
    for f in ordered(s) {
        let per = &s[f];
        for c in contenders_of(per) {
            let st = per[c];
            out.push([
                f.to_string(),
                c.to_string(),
                fmt_num(st.min),
                fmt_num(st.median),
                fmt_num(st.max),
                st.n.to_string(),
                ratio(per, c, "linux-bridge"),
                ratio(per, c, "direct-veth"),
                ratio(per, c, "netavark"),
                ratio(per, c, "minimal-prog"),
            ]);
        }
    }
    out
}

const HEAD: [&str; 10] = [
    "figure",
    "contender",
    "min",
    "median",
    "max",
    "n",
    "×linux-bridge",
    "×direct-veth",
    "×netavark",
    "×minimal-prog",
];

/// The aligned plain-text table (ratios are of medians).
pub fn table(s: &Summary) -> String {
    let rows = rows(s);
    let mut w = HEAD.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i < 2 {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            }
            l.push_str("  ");
        }
        l.trim_end().to_string()
    };
    let mut out = line(&HEAD.map(String::from));
    out.push('\n');
    let mut last = String::new();
    for r in &rows {
        if !last.is_empty() && last != r[0] {
            out.push('\n');
        }
        last = r[0].clone();
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The same table in Markdown.
pub fn markdown_table(s: &Summary) -> String {
    let mut out = format!("| {} |\n", HEAD.join(" | "));
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows(s) {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}

/// The IPv6 column: for each contender measured over IPv6, the medians of
/// the IPv4 figures next to their IPv6 counterparts, and IPv6 / IPv4.
/// `None` when the run has no IPv6 figures.
pub fn family_table(s: &Summary) -> Option<String> {
    let pairs = [
        ("tcp1_gbps", "tcp1_gbps_ipv6", "TCP 1 stream (Gbit/s)"),
        ("udp64_pps", "udp64_pps_ipv6", "UDP smallest frame (pkt/s)"),
    ];
    let mut six: BTreeMap<String, Stats> = BTreeMap::new();
    for (_, k6, _) in &pairs {
        six.extend(
            s.get(*k6)
                .into_iter()
                .flatten()
                .map(|(c, st)| (c.clone(), *st)),
        );
    }
    if six.is_empty() {
        return None;
    }
    let mut out = String::from("| contender |");
    for (_, _, what) in &pairs {
        let _ = write!(out, " {what} IPv4 | IPv6 | IPv6/IPv4 |");
    }
    out.push_str("\n|---|");
    out.push_str(&"--:|".repeat(3 * pairs.len()));
    out.push('\n');
    for c in contenders_of(&six) {
        let _ = write!(out, "| {c} |");
        for (k4, k6, _) in &pairs {
            let m = |k: &str| s.get(k).and_then(|per| per.get(c)).map(|st| st.median);
            let (v4, v6) = (m(k4), m(k6));
            let f = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "–".into());
            let r = match (v4, v6) {
                (Some(a), Some(b)) if a != 0.0 => format!("{:.2}×", b / a),
                _ => "–".into(),
            };
            let _ = write!(out, " {} | {} | {r} |", f(v4), f(v6));
        }
        out.push('\n');
    }
    Some(out)
}

pub fn figure_legend() -> String {
    let mut out = String::new();
    for f in FIGURES {
        let better = if f.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(out, "- `{}` ({}, {better}): {}", f.key, f.unit, f.what);
    }
    out
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(120, 120, 120),
];

fn colour_of(c: &str) -> RGBColor {
    CONTENDERS
        .iter()
        .position(|x| *x == c)
        .map(|i| COLOURS[i])
        .unwrap_or(RGBColor(200, 0, 200))
}

/// Loads a TTF for plot labels (ab_glyph needs font bytes; no fontconfig).
/// Without one the plot is drawn without text.
fn load_font() -> bool {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    for p in candidates {
        if let Ok(bytes) = fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// One panel per figure: the median of each contender as a bar, min–max as a
/// whisker.
pub fn plot(s: &Summary, path: &Path, title: &str) -> Result<()> {
    let text = load_font();
    let figs = ordered(s);
    let cols = 4usize;
    let nrows = figs.len().div_ceil(cols).max(1);
    let (w, h) = (1600u32, 60 + 330 * nrows as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, body) = root.split_vertically(60);
    if text {
        top.draw_text(
            title,
            &("sans-serif", 22).into_font().color(&BLACK),
            (20, 18),
        )
        .map_err(|e| err(&e))?;
        // Legend.
        for (i, c) in CONTENDERS.iter().enumerate() {
            let x = 640 + 155 * i as i32;
            top.draw(&Rectangle::new(
                [(x, 22), (x + 18, 40)],
                colour_of(c).filled(),
            ))
            .map_err(|e| err(&e))?;
            top.draw_text(
                c,
                &("sans-serif", 16).into_font().color(&BLACK),
                (x + 24, 22),
            )
            .map_err(|e| err(&e))?;
        }
    }
    let panels = body.split_evenly((nrows, cols));
    for (panel, f) in panels.iter().zip(figs.iter()) {
        let per = &s[*f];
        let cs = contenders_of(per);
        let ymax = cs.iter().map(|c| per[*c].max).fold(0.0f64, f64::max) * 1.15;
        let ymax = if ymax > 0.0 && ymax.is_finite() {
            ymax
        } else {
            1.0
        };
        let unit = FIGURES
            .iter()
            .find(|x| x.key == *f)
            .map(|x| x.unit)
            .unwrap_or("");
        let mut b = ChartBuilder::on(panel);
        b.margin(12);
        if text {
            b.caption(format!("{f} ({unit})"), ("sans-serif", 17))
                .y_label_area_size(62)
                .x_label_area_size(26);
        }
        let mut chart = b
            .build_cartesian_2d(0f64..cs.len() as f64, 0f64..ymax)
            .map_err(|e| err(&e))?;
        if text {
            let names = cs.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(cs.len() * 2 + 1)
                .x_label_formatter(&move |x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.01 && i < names.len() {
                        match names[i] {
                            "linux-bridge" => "bridge".into(),
                            "direct-veth" => "veth".into(),
                            "cni-bridge" => "cni".into(),
                            "minimal-prog" => "minimal".into(),
                            n => n.to_string(),
                        }
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| fmt_num(*y))
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| err(&e))?;
        }
        for (i, c) in cs.iter().enumerate() {
            let st = per[*c];
            let x0 = i as f64 + 0.15;
            let x1 = i as f64 + 0.85;
            let xm = i as f64 + 0.5;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, st.median)],
                    colour_of(c).filled(),
                )))
                .map_err(|e| err(&e))?;
            let whisker = [
                vec![(xm, st.min), (xm, st.max)],
                vec![(xm - 0.12, st.min), (xm + 0.12, st.min)],
                vec![(xm - 0.12, st.max), (xm + 0.12, st.max)],
            ];
            for seg in whisker {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        seg,
                        BLACK.stroke_width(2),
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Set-up time per call against the sandbox count, one line per contender
/// (rolling median of 25 calls, so that single slow calls do not hide the
/// trend).
pub fn plot_series(series: &BTreeMap<String, Vec<f64>>, path: &Path, title: &str) -> Result<()> {
    let text = load_font();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    let smooth = |v: &[f64]| -> Vec<(f64, f64)> {
        (0..v.len())
            .map(|i| {
                let part = &v[i.saturating_sub(12)..(i + 13).min(v.len())];
                let m = stats(part).map(|s| s.median).unwrap_or(f64::NAN);
                ((i + 3) as f64, m)
            })
            .collect()
    };
    let lines: Vec<(&String, Vec<(f64, f64)>)> =
        series.iter().map(|(c, v)| (c, smooth(v))).collect();
    let xmax = lines
        .iter()
        .map(|(_, l)| l.len() as f64 + 3.0)
        .fold(10.0, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(1.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("sandboxes on the network")
            .y_desc("set-up per sandbox (ms)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    }
    for (c, l) in &lines {
        let colour = colour_of(c);
        let s = chart
            .draw_series(std::iter::once(PathElement::new(
                l.iter()
                    .copied()
                    .filter(|p| p.1.is_finite())
                    .collect::<Vec<_>>(),
                colour.stroke_width(2),
            )))
            .map_err(|e| err(&e))?;
        if text {
            s.label(c.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes a file, making its directory; the error names it.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = stats(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.0, 3.0, 3));
        let s = stats(&[4.0, 1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.5, 4.0, 4));
        assert!(stats(&[f64::INFINITY]).is_none());
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert!(percentile(&[], 0.95).is_nan());
    }

    #[test]
    fn summary_groups_and_ratios() {
        let runs = vec![
            json!({"figure": "tcp1_gbps", "contender": "bpfnet", "value": 10.0}),
            json!({"figure": "tcp1_gbps", "contender": "linux-bridge", "value": 8.0}),
            json!({"figure": "tcp1_gbps", "contender": "direct-veth", "value": 10.0}),
        ];
        let s = summarize(&runs);
        let t = table(&s);
        assert!(t.contains("1.25×"), "{t}");
        assert!(t.contains("1.00×"), "{t}");
        let j = summary_json(&s);
        assert_eq!(j["tcp1_gbps"]["bpfnet"]["median"], 10.0);
        assert!(family_table(&s).is_none());
    }

    #[test]
    fn family_table_puts_ipv6_beside_ipv4() {
        let runs = vec![
            json!({"figure": "tcp1_gbps", "contender": "bpfnet", "value": 10.0}),
            json!({"figure": "tcp1_gbps_ipv6", "contender": "bpfnet", "value": 8.0}),
            json!({"figure": "udp64_pps_ipv6", "contender": "direct-veth", "value": 2e6}),
        ];
        let t = family_table(&summarize(&runs)).unwrap();
        assert!(
            t.contains("| bpfnet | 10.0 | 8.00 | 0.80× | – | – | – |"),
            "{t}"
        );
        assert!(
            t.contains("| direct-veth | – | – | – | – | 2.000M | – |"),
            "{t}"
        );
    }
}
