//! The JSON of the CNI specification (SPEC.md of containernetworking/cni,
//! spec 1.1.0): the plugin configuration bpfnet-cni reads, the results and
//! errors it prints. Field names are the spec's; what a version leaves out
//! (the `version` of an IP before 1.0.0) is decided when printing.
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every version whose results bpfnet-cni prints, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A version as (major, minor, patch), for comparisons.
pub fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// The plugin's configuration as the runtime passes it on stdin (the
/// conflist's plugin object with `cniVersion`, `name` and, when chained,
/// `prevResult` added). Keys bpfnet-cni does not know are ignored, as the
/// spec allows (`args`, `capabilities`, `runtimeConfig`…).
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The network configuration's name (what `GC` is per).
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The bpfnet network to attach to (made with `bpfnet network create`).
    #[serde(default)]
    pub network: Option<String>,
    /// Refused when it names an IPAM plugin: addresses are bpfnet's.
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub mtu: Option<Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// An entry of `cni.dev/valid-attachments` (`GC`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `interfaces` of a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// `ips` of a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": results before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation: the address and its subnet's prefix length.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// `routes` of a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// `dns` of a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The result of `ADD` (and the `prevResult` of a chain).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Absent in a `prevResult` (the spec's examples have none).
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// The result as `version` spells it: IPs carry `version` before 1.0.0
    /// and not from 1.0.0 on.
    pub fn for_version(mut self, version: &str) -> Self {
        let old = version_tuple(version).is_some_and(|v| v < (1, 0, 0));
        for ip in &mut self.ips {
            ip.version = old.then(|| {
                if ip.address.contains(':') {
                    "6".into()
                } else {
                    "4".into()
                }
            });
        }
        self.cni_version = version.into();
        self
    }
}

/// `VERSION`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// The spec's well-known error codes, and bpfnet-cni's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// `ADD` of an interface the container has already.
    pub const INTERFACE_EXISTS: u32 = 100;
    /// `CHECK` found the attachment differs from `prevResult` or is broken.
    pub const CHECK_FAILED: u32 = 101;
    /// bpfnet failed (the details say what and what to do).
    pub const INTERNAL: u32 = 999;
}

/// An error result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ADD example of SPEC.md (the bridge plugin's result, as the
    /// tuning plugin receives it in `prevResult`) reads and prints back as
    /// it was.
    #[test]
    fn spec_add_example_round_trips() {
        let example = r#"{
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }"#;
        let r: CniResult = serde_json::from_str(example).expect("parses");
        assert_eq!(r.interfaces[2].sandbox, "/var/run/netns/blue");
        assert_eq!(r.ips[0].interface, Some(2));
        let back: Value = serde_json::to_value(&r).expect("prints");
        let want: Value = serde_json::from_str(example).expect("json");
        assert_eq!(back, want);
    }

    /// Before 1.0.0 an IP names its version; from 1.0.0 on it does not.
    #[test]
    fn ip_version_follows_the_result_version() {
        let r = CniResult {
            ips: vec![IpConfig {
                address: "10.1.0.5/16".into(),
                ..IpConfig::default()
            }],
            ..CniResult::default()
        };
        let old = serde_json::to_value(r.clone().for_version("0.4.0")).expect("json");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        let new = serde_json::to_value(r.for_version("1.0.0")).expect("json");
        assert!(new["ips"][0].get("version").is_none(), "{new}");
    }

    /// The error example of SPEC.md.
    #[test]
    fn spec_error_example_parses() {
        let e: CniError = serde_json::from_str(
            r#"{"cniVersion": "1.1.0", "code": 7, "msg": "Invalid Configuration",
                "details": "Network 192.168.0.0/31 too small to allocate from."}"#,
        )
        .expect("parses");
        assert_eq!(e.code, code::INVALID_CONFIG);
    }

    #[test]
    fn versions_compare() {
        assert!(version_tuple("0.4.0") < version_tuple("1.0.0"));
        assert_eq!(version_tuple("1.1"), None);
        assert_eq!(version_tuple("1.1.0.0"), None);
    }
}
