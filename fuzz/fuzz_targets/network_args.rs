#![no_main]
//! What `network create` and `create` take from the command line: names,
//! `--subnet`, `--gateway`, `-o KEY=VALUE` (one per line). Any input is
//! refused or accepted consistently: an accepted subnet is a usable,
//! canonical, non-reserved IPv4 (or IPv6) network; an accepted name is one bpfnet can
//! use as a file name.
use bpfnet::{ipam, util};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if util::check_name("sandbox", text).is_ok() {
        assert!(!text.is_empty() && text.len() <= util::MAX_NAME_LEN);
        assert!(!text.contains('/') && !text.starts_with('.') && !text.starts_with('-'));
        assert!(text.is_ascii());
    }
    if let Ok(net) = ipam::parse_subnet(text) {
        assert!(net.prefix_len() <= 30, "{text:?}");
        assert_eq!(net.trunc(), net, "{text:?}");
        assert!(!net.network().is_loopback() && !net.network().is_multicast());
        let gw = std::net::Ipv4Addr::from(u32::from(net.network()) + 1);
        ipam::check_gateway(&net, gw).expect("the first address is a usable gateway");
        if let Ok(g) = ipam::parse_gateway(text.split('/').next().unwrap_or_default()) {
            let _ = ipam::check_gateway(&net, g);
        }
    }
    let _ = ipam::parse_gateway(text);
    // IPv6 (`--ipv6 --subnet`): canonical, at most a /126, unicast, with a
    // usable first address.
    if let Ok(net) = ipam::parse_subnet6(text) {
        assert!(net.prefix_len() <= ipam::MAX_PREFIX6, "{text:?}");
        assert_eq!(net.trunc(), net, "{text:?}");
        assert!(!net.network().is_multicast() && !net.network().is_loopback());
        assert!(!net.network().is_unicast_link_local(), "{text:?}");
        ipam::check_gateway6(&net, ipam::first6(&net)).expect("the first address is usable");
    }
    let opts: Vec<String> = text.lines().map(str::to_string).collect();
    if let Ok(parsed) = util::parse_network_options(&opts) {
        assert_eq!(parsed.len(), opts.len());
        assert!(parsed.values().all(|v| v == "true" || v == "false"));
    }
    let line = util::one_line_usage_error(text);
    assert!(!line.contains('\n'), "{line:?}");
});
