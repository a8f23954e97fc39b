//! bpfnet's control plane: Docker's libnetwork model (sandbox, endpoint,
//! network, driver) over an eBPF datapath on veth pairs.
pub mod datapath;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod util;
