//! The Docker Engine drives bpfnet: a real dockerd (Debian's docker.io 20.10,
//! started by the test with flags that keep it off the host's networking:
//! no bridge, no iptables, no forwarding) inside the test's throw-away host,
//! with `bpfnet docker-plugin` as its network driver. The seed's walkthrough
//! through `docker`, the plugin's recovery, and what is left afterwards.
//!
//! Inside the throw-away host, `/run/docker` and `/run/containerd` are
//! private tmpfs (the plugin socket and containerd's shims stay there), the
//! cgroup hierarchies are mounted again (the same ones as the host's: the
//! test removes the `docker` cgroups dockerd makes), and dockerd's data and
//! exec roots live in the test's scratch dir. dockerd is stopped by its pid
//! (it stops its containers), even when the test fails.
//!
//! Needs `/usr/sbin/dockerd` and `/usr/bin/docker` (apt-get install docker.io;
//! `cargo xtask bootstrap` does it) and `/bin/busybox` (busybox-static) for
//! the image. Slow (about two minutes: the plugin-down case waits out
//! Docker's 3 × 15 s retries).
use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use bpfnet_tests::{jstr, secs, Bg, Output, TestHost};

const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
const IMAGE: &str = "localhost/bnt-busybox";
/// The plugin's socket: where Docker looks for plugins (private to the host).
const SOCKET: &str = "/run/docker/plugins/bpfnet.sock";

/// What dockerd, containerd and runc keep under /run: private tmpfs here.
const PRIVATE_RUN: [&str; 2] = ["/run/docker", "/run/containerd"];

/// dockerd inside a test host; Drop removes its containers, stops it by pid
/// and removes the cgroups it made.
struct Dockerd<'a> {
    h: &'a TestHost,
    dir: String,
    /// Directories of the real /run this test made (mount points).
    made: Vec<String>,
    bg: Bg,
}

impl<'a> Dockerd<'a> {
    fn start(h: &'a TestHost) -> Dockerd<'a> {
        // Mount points for private tmpfs: made here when missing, removed
        // again by Drop.
        let made = PRIVATE_RUN
            .iter()
            .filter(|d| std::fs::create_dir(d).is_ok())
            .map(|d| d.to_string())
            .collect();
        for bin in [DOCKER, DOCKERD, "/bin/busybox"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install docker.io and busybox-static (`cargo xtask bootstrap`)"
            );
        }
        h.sh_ok(
            "set -e
             mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
             for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
               mkdir /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
             mkdir /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
             mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
             for d in docker containerd; do mount -t tmpfs tmpfs /run/$d; done",
        );
        let dir = h.dir.join("dk").to_string_lossy().into_owned();
        std::fs::create_dir_all(&dir).expect("mkdir dk");
        std::fs::write(
            format!("{dir}/daemon.json"),
            format!("{{\"deprecated-key-path\":\"{dir}/key.json\"}}"),
        )
        .expect("daemon.json");
        let bg = Self::daemon(h, &dir);
        let d = Dockerd { h, dir, made, bg };
        d.wait_for(secs(60), "dockerd to answer", || {
            d.run(&["version"]).success()
        });
        d
    }

    fn daemon(h: &TestHost, dir: &str) -> Bg {
        h.spawn(&[
            "sh",
            "-c",
            &format!(
                "exec {DOCKERD} --config-file {dir}/daemon.json --bridge=none --iptables=false \
                 --ip6tables=false --ip-forward=false --ip-masq=false --data-root {dir}/root \
                 --exec-root {dir}/exec --pidfile {dir}/pid -H unix://{dir}/docker.sock \
                 >>{dir}/dockerd.log 2>&1"
            ),
        ])
    }

    /// SIGTERM to dockerd (by the pid it wrote), then waits until it is gone.
    fn stop_daemon(&self) {
        let pid = std::fs::read_to_string(format!("{}/pid", self.dir)).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill(2) of dockerd, whose pid it wrote itself.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let until = Instant::now() + secs(60);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < until {
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn restart(&mut self) {
        self.stop_daemon();
        let _ = self.bg.finish(secs(10));
        self.bg = Self::daemon(self.h, &self.dir);
        self.wait_for(secs(60), "dockerd to answer again", || {
            self.run(&["version"]).success()
        });
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir)
    }

    fn run(&self, args: &[&str]) -> Output {
        let kv = format!("DOCKER_HOST={}", self.host());
        let mut v = vec!["env", kv.as_str(), DOCKER];
        v.extend_from_slice(args);
        self.h.run_full(&v, None, secs(120))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.success(), "docker failed:\n{o}\n{}", self.logs());
        o.stdout
    }

    fn fail(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(!o.success(), "docker unexpectedly succeeded:\n{o}");
        o
    }

    fn logs(&self) -> String {
        let plugin = std::fs::read_to_string(self.h.dir.join("plugin.log")).unwrap_or_default();
        format!("--- plugin.log ---\n{plugin}")
    }

    fn wait_for(&self, within: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + within;
        while !f() {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Dockerd::fail`] with the arguments in one string (split at blanks).
    fn fail_words(&self, line: &str) -> Output {
        self.fail(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// [`Dockerd::ok`] with the arguments in one string (split at blanks).
    fn ok_words(&self, line: &str) -> String {
        self.ok(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// `bpfnet gc`, told where dockerd is (DOCKER_HOST).
    fn bpfnet_gc(&self) -> String {
        let kv = format!("DOCKER_HOST={}", self.host());
        let o = self.h.run(&["env", kv.as_str(), self.h.bin_path(), "gc"]);
        assert!(o.success(), "bpfnet gc failed:\n{o}");
        o.stdout
    }

    /// `docker exec C ping -c1 -W2 DST` succeeds.
    fn pings(&self, from: &str, dst: &str) -> bool {
        self.run(&["exec", from, "ping", "-c1", "-W2", dst])
            .success()
    }
}

impl Drop for Dockerd<'_> {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut v = vec!["rm", "-f"];
            v.extend(ids);
            let _ = self.run(&v);
        }
        self.stop_daemon();
        // The same hierarchies as the host's: dockerd's cgroups go.
        let _ = self.h.sh("rmdir /sys/fs/cgroup/*/docker 2>/dev/null; true");
        for d in PRIVATE_RUN {
            let _ = self.h.run(&["umount", d]);
        }
        for d in &self.made {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The plugin in the background, its stderr in plugin.log.
fn plugin(h: &TestHost, d: &Dockerd) -> Bg {
    let log = h.dir.join("plugin.log");
    let bg = h.spawn(&[
        "sh",
        "-c",
        &format!(
            "exec {} docker-plugin --docker-host {} 2>>{}",
            h.bin_path(),
            d.host(),
            log.display()
        ),
    ]);
    d.wait_for(secs(30), "the plugin socket", || {
        h.sh(&format!("test -S {SOCKET}")).success()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("bpfnet docker-plugin: serving"))
    });
    bg
}

fn names(h: &TestHost, what: &[&str], field: &str) -> Vec<String> {
    let v = h.bpfnet_json(what);
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| {
            s[field]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string()
        })
        .collect()
}

fn sandboxes(h: &TestHost) -> Vec<String> {
    names(h, &["ps", "--format", "json"], "Names")
}

fn networks(h: &TestHost) -> Vec<String> {
    names(h, &["network", "ls", "--format", "json"], "Name")
}

/// The veths bpfnet made in the host (both ends).
fn bpfnet_links(h: &TestHost) -> Vec<String> {
    h.link_names(None)
        .into_iter()
        .filter(|l| l.starts_with("bn") || l.starts_with("bc"))
        .collect()
}

fn endpoint_of(h: &TestHost, sandbox: &str, net: &str) -> (String, String) {
    let v = h.inspect(sandbox);
    let n = &v["NetworkSettings"]["Networks"][net];
    (
        n["EndpointID"].as_str().unwrap_or_default().to_string(),
        n["IPAddress"].as_str().unwrap_or_default().to_string(),
    )
}

fn stats(v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    format!(
        "min {:.3} / median {:.3} / max {:.3}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

#[test]
fn docker_drives_bpfnet_through_the_remote_network_driver() {
    let h = TestHost::new("docker");
    let mut d = Dockerd::start(&h);
    let mut plug = plugin(&h, &d);
    h.sh_ok(&format!(
        "set -e; R={dir}/img; mkdir -p $R/bin; cp /bin/busybox $R/bin/; chroot $R /bin/busybox --install -s /bin; tar -C $R -cf {dir}/bb.tar .",
        dir = h.dir.display()
    ));
    d.ok(&["import", &format!("{}/bb.tar", h.dir.display()), IMAGE]);

    // Wrong uses: one clear line each, nothing left in bpfnet.
    let before = h.snapshot();
    let o = d.fail(&[
        "network",
        "create",
        "-d",
        "bpfnet",
        "--ipv6",
        "--subnet",
        "10.64.0.0/24",
        "--subnet",
        "fd64::/64",
        "--subnet",
        "fd65::/64",
        "v6",
    ]);
    assert!(o.stderr.contains("NetworkDriver.CreateNetwork: bpfnet networks have one IPv6 subnet; give one IPv6 --subnet"), "{o}");
    let o = d.fail(&[
        "network",
        "create",
        "-d",
        "bpfnet",
        "--subnet",
        "10.64.0.0/24",
        "-o",
        "mtu=9",
        "badmtu",
    ]);
    assert!(
        o.stderr
            .contains("invalid MTU \"9\" (option mtu): give a number from 68 to 65535"),
        "{o}"
    );
    assert_eq!(h.snapshot(), before, "a refused network changed bpfnet");

    // Two user networks, containers by name on each.
    d.ok(&[
        "network",
        "create",
        "-d",
        "bpfnet",
        "--subnet",
        "10.61.0.0/24",
        "net1",
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "bpfnet",
        "--subnet",
        "10.62.0.0/24",
        "-o",
        "mtu=1400",
        "net2",
    ]);
    // Subnets keep to the same rails as bpfnet's own networks.
    // (Docker refuses overlaps among its own networks; bpfnet's are news to it.)
    h.bpfnet_ok(&["network", "create", "--subnet", "10.66.0.0/24", "native"]);
    // The renaming from Docker's API is asynchronous: settled first, so
    // that the comparison below sees only what the refusals would change.
    d.wait_for(secs(15), "bpfnet to name Docker's networks", || {
        let n = networks(&h);
        n.contains(&"net1".into()) && n.contains(&"net2".into())
    });
    let before = h.snapshot();
    let o = d.fail_words("network create -d bpfnet --subnet 10.66.0.0/25 dup");
    assert!(
        o.stderr.contains("NetworkDriver.CreateNetwork: subnet 10.66.0.0/25 overlaps bpfnet network \"native\" (10.66.0.0/24); choose another --subnet"),
        "{o}"
    );
    h.ok(&["ip", "route", "add", "10.90.0.0/24", "dev", "lo"]);
    let o = d.fail_words("network create -d bpfnet --subnet 10.90.0.0/24 hostnet");
    assert!(o.stderr.contains("NetworkDriver.CreateNetwork: subnet 10.90.0.0/24 overlaps the host's own route 10.90.0.0/24 (dev lo); choose another --subnet"), "{o}");
    h.ok(&["ip", "route", "del", "10.90.0.0/24", "dev", "lo"]);
    assert_eq!(h.snapshot(), before, "a refused network changed bpfnet");
    h.bpfnet_ok(&["network", "rm", "native"]);
    for (c, net) in [("b1", "net1"), ("b2", "net1"), ("b3", "net2")] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            net,
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    d.wait_for(secs(15), "bpfnet ps to list the containers by name", || {
        let s = sandboxes(&h);
        ["b1", "b2", "b3"]
            .iter()
            .all(|c| s.contains(&c.to_string()))
    });
    let (_, b3_ip) = endpoint_of(&h, "b3", "net2");
    let (_, b1_ip) = endpoint_of(&h, "b1", "net1");
    assert_eq!(
        d.ok(&["exec", "b3", "cat", "/sys/class/net/eth0/mtu"])
            .trim(),
        "1400"
    );

    // Names within a network (Docker's embedded DNS), isolation across.
    assert!(
        d.pings("b1", "b2"),
        "b1 cannot ping b2 by name\n{}",
        d.logs()
    );
    assert!(d.pings("b2", "b1"));
    assert!(!d.pings("b1", &b3_ip), "b1 reaches b3 across networks");
    assert!(!d.pings("b3", &b1_ip), "b3 reaches b1 across networks");
    assert!(!d.pings("b1", "b3"), "b1 resolves b3 of another network");
    let s = h.bpfnet_json(&["stats", "b1", "--format", "json"]);
    assert!(
        s["endpoints"][0]["tx_packets"].as_u64().unwrap_or(0) > 0,
        "b1 counts nothing:\n{s:#}"
    );
    assert!(
        s["drops"]["cross-network"].as_u64().unwrap_or(0) > 0,
        "no cross-network drop:\n{s:#}"
    );

    // One system: bpfnet's exec enters the container's namespace; what
    // belongs to Docker is changed through Docker, with one line saying so.
    let (_, b2_ip) = endpoint_of(&h, "b2", "net1");
    h.bpfnet_ok(&["exec", "b1", "--", "ping", "-c1", "-W2", &b2_ip]);
    let before = h.snapshot();
    for (args, line) in [
        (vec!["rm", "b1"], "Error: sandbox \"b1\" is a Docker container; remove it with `docker rm -f b1`"),
        (vec!["network", "rm", "net1"], "Error: network \"net1\" is Docker's (docker network create -d bpfnet); remove it with `docker network rm net1`"),
        (vec!["network", "disconnect", "net1", "b1"], "Error: sandbox \"b1\" is a Docker container; disconnect it with `docker network disconnect net1 b1`"),
        (vec!["network", "connect", "net2", "b1"], "Error: sandbox \"b1\" is a Docker container; connect it with `docker network connect`"),
        (vec!["create", "--name", "x", "--network", "net1"], "Error: network \"net1\" is Docker's; run containers on it with `docker run --network net1`"),
    ] {
        let o = h.bpfnet_fail(&args);
        assert_eq!(o.stderr.trim(), line, "{o}");
    }
    assert_eq!(h.snapshot(), before, "a refused command changed bpfnet");

    // bpfnet policy between Docker's containers, by their Docker names.
    let rule = h.bpfnet_ok(&[
        "policy", "add", "--from", "b1", "--to", "net:net2", "--icmp",
    ]);
    assert!(d.pings("b1", &b3_ip), "the policy does not let b1 reach b3");
    assert!(
        !d.pings("b3", &b1_ip),
        "the policy opened the other direction"
    );
    h.bpfnet_ok(&["policy", "rm", rule.trim()]);
    assert!(!d.pings("b1", &b3_ip));

    // network connect / disconnect of a running container.
    d.ok(&["network", "connect", "net2", "b1"]);
    assert!(d.pings("b1", "b3"), "connected b1 cannot ping b3 by name");
    assert!(d.pings("b1", "b2"));
    let (_, on2) = endpoint_of(&h, "b1", "net2");
    assert!(
        on2.starts_with("10.62.0."),
        "b1 has no address on net2: {on2:?}"
    );
    d.ok(&["network", "disconnect", "net2", "b1"]);
    assert!(!d.pings("b1", &b3_ip), "disconnected b1 still reaches b3");
    assert!(d.pings("b1", "b2"));

    // -o icc=false: members do not reach each other, the gateway they do.
    d.ok_words("network create -d bpfnet --subnet 10.65.0.0/24 -o icc=false quiet");
    d.ok_words(&format!(
        "run -d --name q1 --network quiet {IMAGE} sleep 600"
    ));
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "quiet",
        IMAGE,
        "sh",
        "-c",
        "ping -c1 -W1 q1 && echo REACHED; ping -c1 -W1 10.65.0.1 && echo GATEWAY; true",
    ]);
    assert!(
        !out.contains("REACHED") && out.contains("GATEWAY"),
        "icc=false:\n{out}"
    );
    assert_eq!(h.network_inspect("quiet")["Options"]["icc"], "false");
    d.ok_words("rm -f q1");
    d.ok_words("network rm quiet");

    // --internal: no default route, the other networks out of reach.
    d.ok(&[
        "network",
        "create",
        "-d",
        "bpfnet",
        "--internal",
        "--subnet",
        "10.63.0.0/24",
        "inet",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "inet",
        IMAGE,
        "sh",
        "-c",
        &format!("ip route; ping -c1 -W1 {b1_ip} && echo REACHED; true"),
    ]);
    assert!(
        !out.contains("default"),
        "an internal container has a default route:\n{out}"
    );
    assert!(
        !out.contains("REACHED"),
        "an internal container reached b1:\n{out}"
    );

    // --ipv6: a dual-stack network with the addresses Docker's IPAM chose;
    // IPv6 to another container and to the gateway, a default IPv6 route.
    d.ok_words("network create -d bpfnet --ipv6 --subnet 10.67.0.0/24 --subnet fd67::/64 dual");
    d.ok_words(&format!(
        "run -d --name v1 --network dual {IMAGE} sleep 600"
    ));
    d.wait_for(secs(15), "v1 and dual in bpfnet", || {
        sandboxes(&h).contains(&"v1".into()) && networks(&h).contains(&"dual".into())
    });
    let v1 = h.inspect("v1");
    let v1_ip6 = jstr(&v1, "/NetworkSettings/Networks/dual/GlobalIPv6Address").to_string();
    assert!(v1_ip6.starts_with("fd67::"), "{v1:#}");
    let docker_ip6 = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}",
        "v1",
    ]);
    assert_eq!(docker_ip6.trim(), v1_ip6, "Docker and bpfnet disagree");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "dual",
        IMAGE,
        "sh",
        "-c",
        &format!(
            "ip -6 route; for i in 1 2 3; do ping -6 -c1 -W1 {v1_ip6} && echo REACHED6 && break; done; \
             ping -6 -c1 -W2 fd67::1 && echo GATEWAY6; true"
        ),
    ]);
    assert!(
        out.contains("REACHED6") && out.contains("GATEWAY6") && out.contains("default via fd67::1"),
        "dual-stack:\n{out}"
    );
    d.ok_words("rm -f v1");
    d.ok_words("network rm dual");

    // A restart: a new endpoint, the same address.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--network",
        "net1",
        "--ip",
        "10.61.0.50",
        IMAGE,
        "sleep",
        "600",
    ]);
    d.wait_for(secs(15), "r1 in bpfnet ps", || {
        sandboxes(&h).contains(&"r1".into())
    });
    let (ep1, ip1) = endpoint_of(&h, "r1", "net1");
    d.ok(&["restart", "-t", "1", "r1"]);
    d.wait_for(secs(15), "r1 back in bpfnet ps", || {
        sandboxes(&h).contains(&"r1".into())
    });
    let (ep2, ip2) = endpoint_of(&h, "r1", "net1");
    assert_ne!(ep1, ep2, "the restart kept the endpoint");
    assert_eq!((ip1.as_str(), ip2.as_str()), ("10.61.0.50", "10.61.0.50"));
    assert!(d.pings("b1", "r1"));

    // The plugin killed and restarted while containers run: traffic flows
    // on, and the next operations work and leak nothing.
    let mut ping = h.spawn(&[
        "env",
        &format!("DOCKER_HOST={}", d.host()),
        DOCKER,
        "exec",
        "b1",
        "ping",
        "-c",
        "30",
        "-i",
        "0.2",
        "b2",
    ]);
    thread::sleep(Duration::from_millis(1000));
    // SAFETY: kill(2) of the plugin's process (sh exec'd it), our child.
    unsafe { libc::kill(plug.pid() as i32, libc::SIGKILL) };
    let _ = plug.finish(secs(5));
    thread::sleep(Duration::from_millis(1500));
    plug = plugin(&h, &d);
    let out = ping.finish_ok(secs(30)).stdout;
    assert!(
        out.contains("30 packets transmitted, 30 packets received"),
        "traffic stopped while the plugin was down:\n{out}"
    );
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "net1",
        IMAGE,
        "ping",
        "-c1",
        "-W2",
        "b2",
    ]);
    let eps: usize = ["b1", "b2", "b3", "r1"].len();
    assert_eq!(
        bpfnet_links(&h).len(),
        eps,
        "links after the restart: {:?}",
        bpfnet_links(&h)
    );

    // The plugin down while a container goes: Docker's calls fail and the
    // endpoint leaks; gc removes it, and only it.
    let _ = plug.stop();
    d.ok(&["rm", "-f", "b3"]);
    plug = plugin(&h, &d);
    assert!(
        sandboxes(&h).contains(&"b3".into()),
        "bpfnet heard of b3's removal"
    );
    let gc = d.bpfnet_gc();
    assert!(gc.contains("removed sandbox b3 (its container's namespace is gone and Docker no longer lists its endpoints)"), "{gc}");
    assert!(!sandboxes(&h).contains(&"b3".into()));
    assert!(d.pings("b1", "b2"), "gc disturbed live containers");
    assert_eq!(d.bpfnet_gc().trim(), "nothing to remove");
    assert_eq!(bpfnet_links(&h).len(), 3, "links: {:?}", bpfnet_links(&h));

    // -p goes through bpfnet's own port publishing (ProgramExternalConnectivity
    // → nftables DNAT): reachable from an outside namespace on the host's
    // address, shown by `bpfnet port`, gone with the container.
    h.sh_ok(
        "set -e; ip netns add outside; ip -n outside link set lo up; \
         ip link add up0 type veth peer name up1 netns outside; \
         ip addr add 198.51.100.1/24 dev up0; ip link set up0 up; \
         ip -n outside addr add 198.51.100.2/24 dev up1; ip -n outside link set up1 up",
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--network",
        "net1",
        IMAGE,
        "sh",
        "-c",
        "echo hello-from-web > /index.html && exec httpd -f -p 80 -h /",
    ]);
    let fetch = "import sys, time, urllib.request\n\
                 for _ in range(50):\n\
                 \x20   try:\n\
                 \x20       print(urllib.request.urlopen('http://198.51.100.1:8080/index.html', timeout=1).read().decode()); sys.exit(0)\n\
                 \x20   except OSError:\n\
                 \x20       time.sleep(0.1)\n\
                 sys.exit(1)\n";
    let o = h.exec_in("outside", &["/usr/bin/python3", "-c", fetch]);
    assert!(o.success() && o.stdout.contains("hello-from-web"), "{o}");
    let deadline = std::time::Instant::now() + secs(10);
    let port = loop {
        let o = h.bpfnet(&["port", "web"]);
        if o.success() || std::time::Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(port.stdout.trim(), "80/tcp -> 0.0.0.0:8080", "{port}");
    d.ok(&["rm", "-f", "web"]);
    let table = h.ok(&["nft", "list", "table", "ip", "bpfnet"]);
    assert!(!table.contains("dnat to"), "{table}");
    let o = h.exec_in(
        "outside",
        &[
            "/usr/bin/python3",
            "-c",
            "import urllib.request; urllib.request.urlopen('http://198.51.100.1:8080/', timeout=1)",
        ],
    );
    assert!(!o.success(), "still published after rm -f:\n{o}");

    // No kernel bridge anywhere, no docker_gwbridge.
    h.assert_no_kernel_bridge();
    assert!(!d.ok(&["network", "ls"]).contains("docker_gwbridge"));

    // Seconds per `docker run --rm`: bpfnet against --network none; and
    // bpfnet's own time per container (CreateEndpoint + Join).
    let log_before = std::fs::read_to_string(h.dir.join("plugin.log"))
        .unwrap_or_default()
        .len();
    let (mut on_bpfnet, mut on_none) = (vec![], vec![]);
    for _ in 0..10 {
        for (net, v) in [("net1", &mut on_bpfnet), ("none", &mut on_none)] {
            let t = Instant::now();
            d.ok(&["run", "--rm", "--network", net, IMAGE, "true"]);
            v.push(t.elapsed().as_secs_f64());
        }
    }
    let log = std::fs::read_to_string(h.dir.join("plugin.log")).unwrap_or_default();
    let mut own: Vec<f64> = log[log_before..]
        .lines()
        .filter_map(|l| {
            l.split(" ms in bpfnet")
                .next()
                .filter(|_| l.contains(" ms in bpfnet"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    eprintln!("docker run --rm on bpfnet: {} s", stats(&mut on_bpfnet));
    eprintln!(
        "docker run --rm with --network none: {} s",
        stats(&mut on_none)
    );
    eprintln!(
        "bpfnet per container, CreateEndpoint + Join ({} joins): {} ms",
        own.len(),
        stats(&mut own)
    );

    // The plugin crashes in the middle of a Join (after the veth pair and
    // the datapath entry, before the programs): the container does not
    // start, the restarted plugin rolls the Join back from its journal,
    // nothing is left, and the next container starts.
    let links = bpfnet_links(&h);
    let _ = plug.stop();
    let crashing = h.spawn(&[
        "sh",
        "-c",
        &format!(
            "BPFNET_FAULT=ebpf-attach:endpoint-entry exec {} docker-plugin --docker-host {} 2>>{}",
            h.bin_path(),
            d.host(),
            h.dir.join("plugin.log").display()
        ),
    ]);
    d.wait_for(secs(30), "the crashing plugin's socket", || {
        h.sh(&format!("test -S {SOCKET}")).success()
    });
    let run = h.spawn(&[
        "env",
        &format!("DOCKER_HOST={}", d.host()),
        DOCKER,
        "run",
        "--rm",
        "--network",
        "net1",
        IMAGE,
        "true",
    ]);
    d.wait_for(secs(30), "the plugin to crash", || {
        std::fs::read_to_string(h.dir.join("plugin.log"))
            .unwrap_or_default()
            .contains("fault point")
    });
    drop(crashing);
    plug = plugin(&h, &d);
    let mut run = run;
    let o = run.finish(secs(60));
    assert!(
        !o.success(),
        "a container started through a crashed Join:\n{o}"
    );
    assert_eq!(bpfnet_links(&h), links, "the crashed Join left links");
    assert_eq!(d.bpfnet_gc().trim(), "nothing to remove");
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "net1",
        IMAGE,
        "ping",
        "-c1",
        "-W2",
        "b2",
    ]);

    // dockerd restarted: it stops its containers (their endpoints go) and
    // never sends CreateNetwork again; the networks are still there.
    d.restart();
    d.wait_for(secs(15), "the stopped containers to leave bpfnet", || {
        sandboxes(&h).is_empty()
    });
    d.ok(&["start", "b1", "b2"]);
    d.wait_for(secs(15), "b1 and b2 back in bpfnet ps", || {
        let s = sandboxes(&h);
        s.contains(&"b1".into()) && s.contains(&"b2".into())
    });
    assert!(
        d.pings("b1", "b2"),
        "after dockerd's restart b1 cannot ping b2"
    );

    // Everything goes with `docker rm -f` and `docker network rm`.
    d.ok(&["rm", "-f", "b1", "b2", "r1"]);
    d.ok(&["network", "rm", "net1", "net2", "inet"]);
    assert!(
        sandboxes(&h).is_empty(),
        "sandboxes left: {:?}",
        sandboxes(&h)
    );
    let mut nets = networks(&h);
    nets.sort();
    assert_eq!(nets, ["bridge", "host", "none"]);
    assert!(
        bpfnet_links(&h).is_empty(),
        "links left: {:?}",
        bpfnet_links(&h)
    );
    assert_eq!(d.bpfnet_gc().trim(), "nothing to remove");
    let _ = plug.stop();
    assert!(
        !h.sh(&format!("test -e {SOCKET}")).success(),
        "the plugin left its socket"
    );
}
