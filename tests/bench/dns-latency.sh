#!/bin/bash
# Query latency of bpfnet's DNS responder next to aardvark-dns (Debian's
# /usr/lib/podman/aardvark-dns, started by netavark with dns_enabled=true):
# the same client (tests/tests/dns.py latency: one query at a time, A for a
# peer's name) from a container to its gateway, both inside one throw-away
# host (mount + network namespace), runs interleaved.
#
#   tests/bench/dns-latency.sh BPFNET_BIN [RUNS=5] [QUERIES=5000]
#
# Prints one line per run and server: `lat p50 … p99 … min … max …` (µs).
set -euo pipefail
BIN=$(realpath "${1:?usage: $0 BPFNET_BIN [RUNS] [QUERIES]}")
RUNS=${2:-5}
N=${3:-5000}
PY=$(realpath "$(dirname "$0")/../tests/dns.py")
W=$(mktemp -d /tmp/dns-latency.XXXXXX)
trap 'rm -rf "$W"' EXIT
for c in a b; do
  cat > "$W/$c.json" <<JSON
{
  "container_id": "peer-$c", "container_name": "peer-$c",
  "networks": { "peernet": { "interface_name": "eth0", "static_ips": [ "10.77.0.$([ $c = a ] && echo 2 || echo 3)" ] } },
  "network_info": { "peernet": {
      "name": "peernet", "id": "e375930624a9dc1171d5ff109bb1e4fc42561ac2eccbb9404e2c0a81896de715",
      "driver": "bridge", "network_interface": "peerbr0",
      "subnets": [ { "subnet": "10.77.0.0/24", "gateway": "10.77.0.1" } ],
      "ipv6_enabled": false, "internal": false, "dns_enabled": true } }
}
JSON
done
unshare --mount --net --propagation private -- bash -s "$BIN" "$RUNS" "$N" "$PY" "$W" <<'INNER'
set -euo pipefail
BIN=$1 RUNS=$2 N=$3 PY=$4 W=$5
NV=/usr/lib/podman/netavark
mount -t tmpfs tmpfs /run/netns; mount --make-shared /run/netns
mount -t tmpfs tmpfs /etc/netns; mount -t sysfs sysfs /sys; mount -t bpf bpf /sys/fs/bpf
ip link set lo up
export BPFNET_ROOT=$W/state
cleanup() {
  for c in a b; do $NV --config "$W/nv" teardown /run/netns/peer-$c < "$W/$c.json" >/dev/null 2>&1 || true; done
  "$BIN" datapath unload >/dev/null 2>&1 || true
  me=$(readlink /proc/self/ns/net)
  for p in $(pgrep -f aardvark-dns) $(pgrep -f '^bpfnet dns-server'); do
    [ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
"$BIN" network create net1 >/dev/null
"$BIN" create --name c1 --network net1 >/dev/null
"$BIN" create --name c2 --network net1 >/dev/null
mkdir -p "$W/nv"
for c in a b; do
  ip netns add peer-$c
  $NV --config "$W/nv" setup /run/netns/peer-$c < "$W/$c.json" >/dev/null
done
# Warm both up (and check they answer) before measuring.
ip netns exec c1 /usr/bin/python3 "$PY" latency 172.18.0.1 200 c2 >/dev/null
ip netns exec peer-a /usr/bin/python3 "$PY" latency 10.77.0.1 200 peer-b >/dev/null
for r in $(seq "$RUNS"); do
  echo "bpfnet   run $r $(ip netns exec c1 /usr/bin/python3 "$PY" latency 172.18.0.1 "$N" c2)"
  echo "aardvark run $r $(ip netns exec peer-a /usr/bin/python3 "$PY" latency 10.77.0.1 "$N" peer-b)"
done
INNER
