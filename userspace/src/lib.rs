//! bpfnet's control plane: Docker's libnetwork model (sandbox, endpoint,
//! network, driver) over an eBPF datapath on veth pairs. The CLI (and any
//! other front end) calls [`ops::Controller`]; everything it decides lives
//! in this library.
pub mod cni;
pub mod datapath;
pub mod demo;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod exec;
pub mod fault;
pub mod fsutil;
pub mod inspect;
pub mod ipam;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod ops;
pub mod paths;
pub mod policy;
pub mod ports;
pub mod rule;
pub mod state;
pub mod stats;
pub mod store;
pub mod tc;
pub mod util;
