//! A real CNI client: podman 4.3 with its CNI backend runs busybox
//! containers on bpfnet networks through `bpfnet-cni`. Podman's storage,
//! configuration and networks live in the test's scratch directory; it runs
//! inside the throw-away host (its namespaces under the host's private
//! /run/netns), with runc (crun refuses this machine's cgroup layout) and
//! its containers' cgroups under a parent of the test's own, removed after.
use std::time::{Duration, Instant};

use serde_json::json;

use bpfnet_tests::{bpfnet_bin, Output, TestHost, PYTHON};

/// Podman inside a test host.
struct Podman<'a> {
    h: &'a TestHost,
    dir: String,
    cgroup: String,
}

impl<'a> Podman<'a> {
    fn new(h: &'a TestHost) -> Self {
        let dir = format!("{}/podman", h.dir.display());
        let cgroup = format!("{}-podman", h.tag);
        let plugin = bpfnet_bin().with_file_name("bpfnet-cni");
        // The host's cgroup hierarchies (its sysfs is fresh, without them);
        // tmpfs where podman and libcni keep files of their own.
        h.sh_ok(
            "mount -t tmpfs tmpfs /sys/fs/cgroup && \
             for c in cpu cpuacct cpuset memory devices freezer blkio pids; do \
               mkdir /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done && \
             mkdir /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd && \
             mkdir /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified && \
             mount -t tmpfs tmpfs /dev/shm && mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /var/tmp",
        );
        // conmon runs podman's cleanup (and so DEL) with an environment of
        // its own: the plugin gets the test's BPFNET_ROOT from a wrapper.
        h.sh_ok(&format!(
            "set -e; d={dir}; mkdir -p $d/cni-bin $d/net.d $d/root $d/runroot $d/tmp $d/ipam \
             $d/rootfs/bin $d/rootfs/etc $d/rootfs/proc $d/rootfs/sys $d/rootfs/dev $d/rootfs/tmp $d/rootfs/www; \
             cp /bin/busybox $d/rootfs/bin/busybox; chroot $d/rootfs /bin/busybox --install -s /bin; \
             echo served-by-bpfnet > $d/rootfs/www/index.html; tar -C $d/rootfs -cf $d/bb.tar ."
        ));
        let wrapper = format!("{dir}/cni-bin/bpfnet-cni");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexport BPFNET_ROOT={}\nexec {} \"$@\"\n",
                h.root.display(),
                plugin.display()
            ),
        )
        .expect("write the plugin wrapper");
        h.ok(&["chmod", "+x", &wrapper]);
        std::fs::write(
            format!("{dir}/containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{dir}/cni-bin\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{dir}/net.d\"\ndefault_subnet = \"10.78.255.0/24\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n"
            ),
        )
        .expect("write containers.conf");
        let p = Podman { h, dir, cgroup };
        p.ok(&["import", &format!("{}/bb.tar", p.dir), "localhost/bb"]);
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let conf = format!("CONTAINERS_CONF={}/containers.conf", self.dir);
        let (root, runroot, tmp) = (
            format!("{}/root", self.dir),
            format!("{}/runroot", self.dir),
            format!("{}/tmp", self.dir),
        );
        let mut v = vec![
            "env",
            &conf,
            "podman",
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--tmpdir",
            &tmp,
            "--cgroup-manager",
            "cgroupfs",
        ];
        v.extend_from_slice(args);
        self.h.run_full(&v, None, Duration::from_secs(120))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.success(), "podman failed:\n{o}");
        o.stdout
    }

    /// `podman run -d` of the busybox image on `network`.
    fn start(&self, name: &str, network: &str, extra: &[&str], cmd: &[&str]) {
        let parent = format!("/{}", self.cgroup);
        let mut v = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--cgroup-parent",
            &parent,
        ];
        v.extend_from_slice(extra);
        v.push("localhost/bb");
        v.extend_from_slice(cmd);
        self.ok(&v);
    }

    fn conflist(&self, name: &str, plugins: serde_json::Value) {
        let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            format!("{}/net.d/{name}.conflist", self.dir),
            conf.to_string(),
        )
        .expect("write conflist");
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        // What is left in the test's cgroups is the test's; then the
        // cgroups go (they live in the machine's hierarchies).
        let _ = self.h.sh(&format!(
            "for i in 1 2 3 4 5; do \
               for d in /sys/fs/cgroup/*/{cg}; do [ -d $d ] || continue; \
                 find $d -name tasks -exec cat {{}} + | xargs -r kill -9 2>/dev/null; \
                 find $d -depth -type d -exec rmdir {{}} \\; 2>/dev/null; done; \
               ls -d /sys/fs/cgroup/*/{cg} >/dev/null 2>&1 || break; sleep 0.2; done; true",
            cg = self.cgroup
        ));
    }
}

fn ps_names(h: &TestHost) -> Vec<String> {
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    let mut names: Vec<String> = ps
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["Names"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// A Python one-liner that prints the body of `http://ADDR/`.
fn fetch(addr: &str) -> String {
    format!(
        "import urllib.request as u; print(u.urlopen('http://{addr}/', timeout=2).read().decode())"
    )
}

fn min_median_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Containers on a bpfnet-cni network reach and resolve each other; a
/// container on another network is isolated until `bpfnet policy` opens
/// it; `-p` with the stock portmap chained publishes a port; `podman rm -f`
/// leaves nothing in bpfnet. Prints seconds per `podman run --rm` against
/// the stock bridge plugin.
#[test]
fn podman_runs_containers_on_bpfnet() {
    let h = TestHost::new("podman");
    h.bpfnet_ok(&["network", "create", "web"]);
    h.bpfnet_ok(&["network", "create", "db"]);
    let p = Podman::new(&h);
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    p.conflist(
        "web",
        json!([{"type": "bpfnet-cni", "network": "web"}, portmap]),
    );
    p.conflist("db", json!([{"type": "bpfnet-cni", "network": "db"}]));
    let ipam_dir = format!("{}/ipam", p.dir);
    p.conflist(
        "stock",
        json!([{"type": "bridge", "bridge": "cni-stock0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "10.89.0.0/24", "dataDir": ipam_dir}},
               portmap]),
    );
    let sleep = ["sleep", "600"];
    p.start("c1", "web", &[], &sleep);
    p.start("c2", "web", &[], &sleep);
    p.start("d1", "db", &[], &sleep);
    assert_eq!(ps_names(&h), vec!["c1", "c2", "d1"]);
    let (c1, c2, d1) = (
        h.ip_on("c1", "web"),
        h.ip_on("c2", "web"),
        h.ip_on("d1", "db"),
    );
    let inspect = p.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.web.IPAddress}}",
        "c1",
    ]);
    assert_eq!(inspect.trim(), c1);

    // By name, through bpfnet's responder (podman took it from the result).
    for (from, to, ip) in [("c1", "c2", &c2), ("c2", "c1", &c1)] {
        let o = p.run(&["exec", from, "ping", "-c", "1", "-W", "2", to]);
        assert!(
            o.success() && o.stdout.contains(ip.as_str()),
            "{from} -> {to}:\n{o}"
        );
        let o = p.run(&["exec", from, "nslookup", to]);
        assert!(
            o.success() && o.stdout.contains(ip.as_str()),
            "{from} resolves {to}:\n{o}"
        );
    }
    // Another network: isolated, until a policy opens it.
    let o = p.run(&["exec", "c1", "ping", "-c", "2", "-W", "1", &d1]);
    assert!(!o.success(), "c1 reached d1 on another network:\n{o}");
    h.bpfnet_ok(&["policy", "add", "--from", "c1", "--to", "net:db", "--icmp"]);
    let o = p.run(&["exec", "c1", "ping", "-c", "1", "-W", "2", &d1]);
    assert!(o.success(), "the policy did not open c1 -> d1:\n{o}");
    let o = p.run(&["exec", "c2", "ping", "-c", "2", "-W", "1", &d1]);
    assert!(!o.success(), "the policy opened more than c1:\n{o}");

    // -p through the stock portmap chained after bpfnet-cni, from a
    // namespace outside (behind a veth to the test host, which forwards).
    h.sh_ok(
        "ip netns add pm-out && ip link add pmh type veth peer name pmo netns pm-out && \
         ip addr add 10.250.0.1/24 dev pmh && ip link set pmh up && \
         ip netns exec pm-out ip addr add 10.250.0.2/24 dev pmo && \
         ip netns exec pm-out ip link set pmo up && \
         ip netns exec pm-out ip route add default via 10.250.0.1 && \
         sysctl -qw net.ipv4.ip_forward=1",
    );
    p.start(
        "pub",
        "web",
        &["-p", "8080:80"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let mut served = String::new();
    for _ in 0..20 {
        let o = h.exec_in("pm-out", &[PYTHON, "-c", &fetch("10.250.0.1:8080")]);
        served = o.stdout.clone();
        if o.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        served.trim(),
        "served-by-bpfnet",
        "-p 8080:80 did not serve:\n{}\n{}\n{}",
        h.sh("iptables-save -t nat").stdout,
        p.run(&["ps", "-a"]),
        h.run(&[PYTHON, "-c", &fetch(&h.ip_on("pub", "web"))]),
    );

    // podman rm -f: nothing left in bpfnet.
    p.ok(&["rm", "-f", "-t", "0", "c1", "c2", "d1", "pub"]);
    assert!(ps_names(&h).is_empty(), "{:?}", ps_names(&h));
    let links = h.link_names(None);
    assert!(!links.iter().any(|l| l.starts_with("bn")), "{links:?}");

    // Seconds per `podman run --rm`, bpfnet-cni against the stock bridge
    // plugin (both with portmap chained), interleaved.
    let parent = format!("/{}", p.cgroup);
    let mut times: [(String, Vec<f64>); 2] = [("web".into(), vec![]), ("stock".into(), vec![])];
    for _ in 0..7 {
        for (net, t) in &mut times {
            let start = Instant::now();
            p.ok(&[
                "run",
                "--rm",
                "--network",
                net,
                "--cgroup-parent",
                &parent,
                "localhost/bb",
                "true",
            ]);
            t.push(start.elapsed().as_secs_f64());
        }
    }
    for (net, t) in times {
        let (min, med, max) = min_median_max(t);
        eprintln!(
            "podman run --rm on {:<14} min {min:.3} s  median {med:.3} s  max {max:.3} s",
            if net == "web" {
                "bpfnet-cni"
            } else {
                "stock bridge"
            }
        );
    }
    assert!(ps_names(&h).is_empty(), "{:?}", ps_names(&h));
}
