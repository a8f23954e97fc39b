//! bpfnet's control plane: Docker's libnetwork model (sandbox, endpoint,
//! network, driver) over an eBPF datapath on veth pairs.
pub mod controller;
pub mod datapath;
pub mod demo;
pub mod dns;
pub mod driver;
pub mod exec;
pub mod inspect;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod policy;
pub mod state;
pub mod stats;
pub mod tc;
pub mod util;
