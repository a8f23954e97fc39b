//! Small helpers: ids, timestamps, MACs.
use std::{collections::BTreeMap, io::Read, net::Ipv4Addr};

use anyhow::{bail, Result};

/// A 64-hex-digit random id, as Docker's.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as RFC 3339 in UTC with nanoseconds (Docker's `Created`).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Docker's MAC scheme: 02:42 followed by the four bytes of the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The conntrack address under which the datapath tracks the IPv6
/// connections of endpoint slot `slot` (0.0.x.y in packet byte order; no
/// IPv4 endpoint has one): the datapath's `policy::slot_key`.
pub fn slot_key(slot: u32) -> u32 {
    u32::from_ne_bytes([0, (slot >> 16) as u8, (slot >> 8) as u8, slot as u8])
}

/// The link-local address Linux gives an interface with this MAC
/// (`addr_gen_mode` eui64): fe80::/64 and the modified EUI-64.
pub fn link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    let m = mac;
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Address in the byte layout the datapath's maps use.
pub fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn ip_from_key(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

/// Longest name of a network, sandbox or alias: it becomes a file name
/// (`/run/netns/NAME`, `/etc/netns/NAME`) and a DNS label (at most 63 bytes)
/// in places, so the DNS limit rules.
pub const MAX_NAME_LEN: usize = 63;

/// Names of networks and sandboxes: Docker's rule, and short enough to be a
/// file name and a DNS label.
pub fn valid_name(name: &str) -> bool {
    check_name("", name).is_ok()
}

/// Checks a user-given name (`what` is "network", "sandbox" or "alias") and
/// says exactly what is wrong with it. Names end up as file names under
/// /run/netns and /etc/netns and as DNS names, hence no `/`, no leading `.`
/// or `-`, ASCII only.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    const RULE: &str = "use letters, digits, '_', '.' and '-', starting with a letter or digit";
    let Some(first) = name.chars().next() else {
        bail!("{what} name is empty; {RULE}");
    };
    if name.len() > MAX_NAME_LEN {
        bail!(
            "{what} name {name:?} is too long ({} bytes, at most {MAX_NAME_LEN})",
            name.len()
        );
    }
    if !first.is_ascii_alphanumeric() {
        bail!("invalid {what} name {name:?}: it starts with {first:?}; {RULE}");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        bail!("invalid {what} name {name:?}: {c:?} is not allowed; {RULE}");
    }
    Ok(())
}

/// Options of `bpfnet network create -o KEY=VALUE` that bpfnet honours, each
/// a boolean. Anything else is refused rather than silently ignored.
pub const NETWORK_OPTIONS: &[&str] = &[
    "icc",
    "com.docker.network.bridge.enable_icc",
    "bpfnet.flood",
    "com.docker.network.bridge.enable_ip_masquerade",
];

/// Parses `-o KEY=VALUE` options of `network create`.
pub fn parse_network_options(opts: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for o in opts {
        let Some((k, v)) = o.split_once('=') else {
            bail!("invalid option {o:?}: expected KEY=VALUE, e.g. -o icc=false");
        };
        if !NETWORK_OPTIONS.contains(&k) {
            bail!(
                "unknown option {k:?} (in -o {o:?}); bpfnet knows {}",
                NETWORK_OPTIONS.join(", ")
            );
        }
        if v != "true" && v != "false" {
            bail!("invalid value {v:?} for option {k}: use true or false");
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("option {k} is given twice; give it once");
        }
    }
    Ok(out)
}

/// One line out of clap's multi-line usage error (`error: …`, a tip, the
/// usage line, a pointer to --help): what is wrong and what to do, as every
/// other error of bpfnet.
pub fn one_line_usage_error(rendered: &str) -> String {
    let mut what = String::new();
    let mut tips = vec![];
    let mut usage = None;
    let mut in_error = false;
    for raw in rendered.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("error: ") {
            what = rest.to_string();
            in_error = true;
            continue;
        }
        // The indented lines right after `error:` belong to it (the missing
        // arguments, for one).
        if in_error && raw.starts_with("  ") && !line.starts_with("tip: ") && !line.starts_with('[')
        {
            what = format!("{} {line}", what.trim_end());
            continue;
        }
        in_error = false;
        if let Some(rest) = line.strip_prefix("tip: ") {
            tips.push(rest.to_string());
        } else if line.starts_with("[possible values:") {
            tips.push(line.trim_matches(['[', ']']).to_string());
        } else if let Some(rest) = line.strip_prefix("Usage: ") {
            usage = Some(rest.to_string());
        }
    }
    if what.is_empty() {
        what = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
    }
    let mut out = what;
    for t in tips {
        out.push_str(&format!("; {t}"));
    }
    if let Some(u) = usage {
        // "bpfnet network create [OPTIONS] <NAME>" → "bpfnet network create"
        let cmd: Vec<&str> = u
            .split_whitespace()
            .take_while(|w| !w.starts_with('[') && !w.starts_with('<') && !w.starts_with('-'))
            .collect();
        out.push_str(&format!("; usage: {u} (see `{} --help`)", cmd.join(" ")));
    }
    out
}

/// Marks a `/etc/netns/NAME` directory as bpfnet's: only such a directory is
/// ever written into or removed.
const ETC_NETNS_MARKER: &str = ".bpfnet";
/// The only files bpfnet writes into `/etc/netns/NAME`.
const ETC_NETNS_FILES: [&str; 2] = ["hosts", "resolv.conf"];

/// Refuses a sandbox name whose `/etc/netns/NAME` exists without bpfnet's
/// mark: another tool made it, and bpfnet would overwrite its files and
/// delete them with the sandbox.
pub fn check_etc_netns_free(name: &str) -> anyhow::Result<()> {
    let dir = crate::paths::etc_netns_path(name);
    if dir.symlink_metadata().is_ok() && !dir.join(ETC_NETNS_MARKER).is_file() {
        anyhow::bail!(
            "{} exists and was not made by bpfnet; remove it or pick another sandbox name",
            dir.display()
        );
    }
    Ok(())
}

/// `/etc/netns/NAME` of a sandbox in the state, made (with the mark) if
/// missing. Directories of sandboxes made before the mark existed get it.
pub fn etc_netns_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let dir = crate::paths::etc_netns_path(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let marker = dir.join(ETC_NETNS_MARKER);
    if !marker.is_file() {
        std::fs::write(&marker, "made by bpfnet; removed with the sandbox\n")
            .with_context(|| format!("writing {}", marker.display()))?;
    }
    Ok(dir)
}

/// Removes what bpfnet wrote into `/etc/netns/NAME` of a sandbox in the
/// state, then the directory if nothing else is left in it.
pub fn remove_etc_netns(name: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = crate::paths::etc_netns_path(name);
    for f in ETC_NETNS_FILES.iter().chain([&ETC_NETNS_MARKER]) {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(f).display()));
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(&dir) {
        // Someone else's files are left where they were.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_follows_docker_scheme() {
        assert_eq!(
            fmt_mac(&mac_for("172.17.0.2".parse().unwrap())),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("busybox1"));
        assert!(valid_name("my_net.2-a"));
        assert!(!valid_name("bad name!"));
        assert!(!valid_name("-leading"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(valid_name(&"a".repeat(63)));
        assert!(!valid_name("café"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(".."));
    }

    #[test]
    fn name_errors_say_what_is_wrong() {
        let e = |n: &str| check_name("sandbox", n).unwrap_err().to_string();
        assert!(e("").starts_with("sandbox name is empty"));
        assert!(e(&"a".repeat(64)).contains("too long (64 bytes, at most 63)"));
        assert!(e("a/b").contains("'/' is not allowed"));
        assert!(e("-x").contains("it starts with '-'"));
        assert!(e("x\ny").contains("'\\n' is not allowed"), "{}", e("x\ny"));
    }

    #[test]
    fn network_options_are_known_booleans_given_once() {
        let o = |v: &[&str]| {
            parse_network_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(o(&["icc=false"]).unwrap()["icc"], "false");
        assert!(o(&["icc"])
            .unwrap_err()
            .to_string()
            .contains("expected KEY=VALUE"));
        assert!(o(&["icc=no"])
            .unwrap_err()
            .to_string()
            .contains("use true or false"));
        assert!(o(&["=x"])
            .unwrap_err()
            .to_string()
            .contains("unknown option \"\""));
        assert!(o(&["icc=true", "icc=false"])
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <NAME>\n\nUsage: bpfnet network create <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered),
            "the following required arguments were not provided: <NAME>; usage: bpfnet network create <NAME> (see `bpfnet network create --help`)"
        );
        let rendered = "error: unexpected argument '--ip' found\n\n  tip: to pass '--ip' as a value, use '-- --ip'\n\nUsage: bpfnet network create [OPTIONS] <NAME>\n";
        assert_eq!(
            one_line_usage_error(rendered),
            "unexpected argument '--ip' found; to pass '--ip' as a value, use '-- --ip'; usage: bpfnet network create [OPTIONS] <NAME> (see `bpfnet network create --help`)"
        );
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }

    #[test]
    fn ip_keys_keep_packet_byte_order() {
        let ip: Ipv4Addr = "172.17.0.2".parse().unwrap();
        assert_eq!(ip_key(ip).to_ne_bytes(), [172, 17, 0, 2]);
        assert_eq!(ip_from_key(ip_key(ip)), ip);
    }
}
