//! `bpfnet docker-plugin`: the Docker Engine drives bpfnet through
//! libnetwork's remote NetworkDriver protocol (HTTP+JSON on a unix socket
//! under `/run/docker/plugins/`; the socket's name is the driver's name).
//! Docker's IPAM chooses addresses; bpfnet makes the veth pair and puts its
//! host end on the eBPF datapath; Docker moves the other end into the
//! container, names it `eth<N>` and sets its address and routes.
//!
//! The wire format ([`api`]), the options Docker passes ([`options`]), the
//! Docker API client that reads names ([`client`]), published ports
//! ([`ports`]) and the server ([`plugin`]).
pub mod api;
pub mod client;
pub mod plugin;
pub mod ports;

/// How Docker's network options become bpfnet's.
pub mod options {
    use std::collections::BTreeMap;

    use anyhow::{bail, Result};
    use serde_json::{Map, Value};

    use crate::ops::docker::MTU_OPTION;

    /// Docker's key for `--internal` among CreateNetwork's options.
    pub const INTERNAL: &str = "com.docker.network.internal";
    /// Docker's key for the `-o` options.
    pub const GENERIC: &str = "com.docker.network.generic";

    /// CreateNetwork's options: `(internal, options)`. `-o icc=…` and
    /// Docker's `com.docker.network.bridge.enable_icc` turn inter-container
    /// traffic off; `-o internal=true` is `--internal`; `-o mtu=N` and
    /// `com.docker.network.driver.mtu` set the veths' MTU; every other
    /// option is kept as given (`bpfnet network inspect` shows it).
    pub fn from_create(options: &Map<String, Value>) -> Result<(bool, BTreeMap<String, String>)> {
        let mut internal = options.get(INTERNAL).and_then(Value::as_bool) == Some(true);
        let mut out = BTreeMap::new();
        let generic = options.get(GENERIC).and_then(Value::as_object);
        for (k, v) in generic.into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let boolean = |v: &str| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => bail!("invalid value {v:?} for option {k}: use true or false"),
            };
            match k.as_str() {
                "icc" | "com.docker.network.bridge.enable_icc" => {
                    boolean(&v)?;
                    out.insert(k.clone(), v);
                }
                "internal" => internal |= boolean(&v)?,
                "mtu" | MTU_OPTION => match v.parse::<u32>() {
                    Ok(m) if (68..=65535).contains(&m) => {
                        out.insert(MTU_OPTION.into(), m.to_string());
                    }
                    _ => bail!("invalid MTU {v:?} (option {k}): give a number from 68 to 65535"),
                },
                _ => {
                    out.insert(k.clone(), v);
                }
            }
        }
        Ok((internal, out))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn docker_options_map_to_bpfnets() {
            let o = json!({"com.docker.network.enable_ipv6": false, "com.docker.network.internal": true,
                "com.docker.network.generic": {"icc": "false", "mtu": "1400", "dkt.foo": "bar"}});
            let (internal, opts) = from_create(o.as_object().unwrap()).unwrap();
            assert!(internal);
            assert_eq!(opts["icc"], "false");
            assert_eq!(opts[MTU_OPTION], "1400");
            assert_eq!(opts["dkt.foo"], "bar");
            assert!(!opts.contains_key("mtu"));
        }

        #[test]
        fn bad_mtu_and_bad_icc_are_refused() {
            let o = json!({"com.docker.network.generic": {"mtu": "9"}});
            let e = from_create(o.as_object().unwrap()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid MTU \"9\" (option mtu): give a number from 68 to 65535"
            );
            let o = json!({"com.docker.network.generic": {"icc": "no"}});
            let e = from_create(o.as_object().unwrap()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid value \"no\" for option icc: use true or false"
            );
        }
    }
}
