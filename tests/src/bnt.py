#!/usr/bin/python3
"""Traffic helpers for the bpfnet integration tests.

Run with /usr/bin/python3 (the only interpreter that imports scapy). Every
subcommand prints machine-readable lines on stdout; servers print a line
starting with "ready" once they listen. Only `arp-*` and `sendp` import scapy
(slow to start); the rest use plain sockets.
"""

import hashlib
import random
import signal
import socket
import sys
import time


def tcp_listener(addr, port, backlog):
    """A TCP socket listening on ADDR:PORT (also imported by flow.py)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(backlog)
    return s


def tcp_exchange(addr, port, msg, timeout):
    """Connects, sends MSG, half-closes and returns everything the peer sent
    back until it closed (also imported by flow.py)."""
    s = socket.create_connection((addr, int(port)), timeout=timeout)
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got


def tcp_echo_server(addr, port):
    s = tcp_listener(addr, port, 16)
    print("ready", flush=True)
    while True:
        c, peer = s.accept()
        data = c.recv(65536)
        c.sendall(data)
        c.close()
        print("served", peer[0], flush=True)


def tcp_hold6only(port):
    """Listen on [::]:PORT for IPv6 only (IPV6_V6ONLY): 0.0.0.0:PORT stays
    free. Prints `ready`, then holds it."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::", int(port)))
    s.listen(1)
    print("ready", flush=True)
    while True:
        time.sleep(60)


def tcp_echo_client(addr, port, msg, timeout="3"):
    print(tcp_exchange(addr, port, msg.encode(), float(timeout)).decode())


def tcp_echo6(name, port, msg, timeout="3"):
    """tcp-echo over IPv6 only: NAME resolved with AF_INET6 (AAAA); prints
    the address used, then the echo."""
    addr = socket.getaddrinfo(name, int(port), socket.AF_INET6, socket.SOCK_STREAM)[0][4]
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(float(timeout))
    s.connect(addr)
    s.sendall(msg.encode())
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    print(addr[0])
    print(got.decode())


def tcp_echo_try(addr, port, msg, timeout="2"):
    """Like tcp-echo, but prints `failed <reason>` instead of raising (for
    paths that must be closed)."""
    try:
        print(tcp_exchange(addr, port, msg.encode(), float(timeout)).decode())
    except OSError as e:
        print("failed", type(e).__name__, flush=True)


def udp_echo_server(addr, port):
    """Echo each datagram back; print `served <peer ip>` for each."""
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)
        print("served", peer[0], flush=True)


def udp_echo_client(addr, port, msg, timeout="2"):
    """Send MSG (three tries), print the echo or `failed timeout`."""
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(float(timeout) / 3)
    for _ in range(3):
        s.sendto(msg.encode(), (addr, int(port)))
        try:
            data, _ = s.recvfrom(65536)
            print(data.decode(), flush=True)
            return
        except socket.timeout:
            continue
    print("failed timeout", flush=True)


def sink(addr, port):
    """Accept one connection, read to EOF, print `<bytes> <sha256>`."""
    s = tcp_listener(addr, port, 1)
    print("ready", flush=True)
    c, _ = s.accept()
    h = hashlib.sha256()
    n = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        k = c.recv_into(buf)
        if k == 0:
            break
        h.update(view[:k])
        n += k
    c.close()
    print(n, h.hexdigest(), flush=True)


def source(addr, port, nbytes, seed):
    """Send `nbytes` deterministic pseudo-random bytes, print `<bytes> <sha256>`."""
    rng = random.Random(int(seed))
    total = int(nbytes)
    s = socket.create_connection((addr, int(port)), timeout=30)
    h = hashlib.sha256()
    sent = 0
    while sent < total:
        chunk = rng.randbytes(min(1 << 20, total - sent))
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.close()
    print(sent, h.hexdigest(), flush=True)


def sniff(iface, *markers):
    """Count frames received on `iface` that contain each marker, until
    SIGTERM; then print `count <marker> <n>` per marker."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    eth_p_all = 0x0003
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_all))
    s.bind((iface, 0))
    s.settimeout(0.05)
    counts = {m: 0 for m in markers}
    print("ready", flush=True)
    deadline = time.time() + 120
    while not stop and time.time() < deadline:
        try:
            frame, addr = s.recvfrom(65536)
        except (socket.timeout, InterruptedError):
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        for m in markers:
            if m.encode() in frame:
                counts[m] += 1
    for m in markers:
        print("count", m, counts[m], flush=True)


def sendp(iface, count, *specs):
    """Send ICMP echo requests with the given (possibly forged) addresses;
    each spec is `srcmac,dstmac,srcip,dstip,marker`."""
    from scapy.all import ICMP, IP, Ether, Raw, conf, sendp as scapy_sendp

    conf.verb = 0
    for spec in specs:
        src_mac, dst_mac, src_ip, dst_ip, marker = spec.split(",")
        pkt = (
            Ether(src=src_mac, dst=dst_mac)
            / IP(src=src_ip, dst=dst_ip)
            / ICMP(id=4242)
            / Raw(load=marker.encode() * 4)
        )
        scapy_sendp(pkt, iface=iface, count=int(count), inter=0.01)
        print("sent", count, marker, flush=True)


def sendp6(iface, count, *specs):
    """Send ICMPv6 echo requests with the given (possibly forged) addresses;
    each spec is `srcmac,dstmac,srcip,dstip,marker`."""
    from scapy.all import Ether, IPv6, ICMPv6EchoRequest, conf, sendp as scapy_sendp

    conf.verb = 0
    for spec in specs:
        src_mac, dst_mac, src_ip, dst_ip, marker = spec.split(",")
        pkt = (
            Ether(src=src_mac, dst=dst_mac)
            / IPv6(src=src_ip, dst=dst_ip)
            / ICMPv6EchoRequest(id=4242, data=marker.encode() * 4)
        )
        scapy_sendp(pkt, iface=iface, count=int(count), inter=0.01)
        print("sent", count, marker, flush=True)


def nd_who_has(iface, my_mac, my_ip, *targets):
    """For each target, a neighbour solicitation to its solicited-node
    group: `answer <ip> <mac> <flags> checksum-ok|checksum-bad` or
    `none <ip>`."""
    from socket import AF_INET6, inet_ntop, inet_pton

    from scapy.all import (
        Ether, IPv6, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptSrcLLAddr, conf, in6_getnsma, in6_getnsmac, srp,
    )

    conf.verb = 0
    for t in targets:
        group = inet_ntop(AF_INET6, in6_getnsma(inet_pton(AF_INET6, t)))
        ns = (
            Ether(src=my_mac, dst=in6_getnsmac(inet_pton(AF_INET6, group)))
            / IPv6(src=my_ip, dst=group, hlim=255)
            / ICMPv6ND_NS(tgt=t)
            / ICMPv6NDOptSrcLLAddr(lladdr=my_mac)
        )
        ans, _ = srp(ns, iface=iface, timeout=1, retry=1,
                     filter="icmp6 and ip6[40] == 136")
        if not ans:
            print("none", t, flush=True)
            continue
        na = ans[0][1]
        got = na[ICMPv6ND_NA].cksum
        na2 = na.copy()
        del na2[ICMPv6ND_NA].cksum
        want = Ether(bytes(na2))[ICMPv6ND_NA].cksum
        flags = ("R" if na[ICMPv6ND_NA].R else "") + ("S" if na[ICMPv6ND_NA].S else "") + ("O" if na[ICMPv6ND_NA].O else "")
        print("answer", na[ICMPv6ND_NA].tgt, na[ICMPv6NDOptDstLLAddr].lladdr, flags,
              "src=" + na[IPv6].src, "checksum-ok" if got == want else "checksum-bad", flush=True)


def nd_forge(iface, my_mac, my_ip, kind, claimed_ip, dst_mac, dst_ip):
    """Send forged ND: `na` (claims `claimed_ip` for my MAC), `rs` or `ra`."""
    from scapy.all import (
        Ether, IPv6, ICMPv6ND_NA, ICMPv6ND_RA, ICMPv6ND_RS, ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptSrcLLAddr, conf, sendp as scapy_sendp,
    )

    conf.verb = 0
    ip = IPv6(src=my_ip, dst=dst_ip, hlim=255)
    if kind == "na":
        pkt = ip / ICMPv6ND_NA(tgt=claimed_ip, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=my_mac)
    elif kind == "rs":
        pkt = ip / ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=my_mac)
    else:
        pkt = ip / ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr(lladdr=my_mac)
    scapy_sendp(Ether(src=my_mac, dst=dst_mac) / pkt, iface=iface, count=3, inter=0.01)
    print("sent", 3, kind, flush=True)


def ns_count(iface):
    """Count neighbour solicitations received on `iface` until SIGTERM;
    then print `count ns <n>`."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.settimeout(0.05)
    n = 0
    print("ready", flush=True)
    deadline = time.time() + 120
    while not stop and time.time() < deadline:
        try:
            frame, addr = s.recvfrom(65536)
        except (socket.timeout, InterruptedError):
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if len(frame) > 54 and frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 135:
            n += 1
    print("count ns", n, flush=True)


def arp_poison(iface, my_mac, victim_ip, target_ip, target_mac):
    """Claim `victim_ip` with `my_mac`: a unicast reply to the target, a
    gratuitous broadcast reply and a request carrying the forged sender."""
    from scapy.all import ARP, Ether, conf, sendp as scapy_sendp

    conf.verb = 0
    pkts = [
        Ether(src=my_mac, dst=target_mac)
        / ARP(op=2, hwsrc=my_mac, psrc=victim_ip, hwdst=target_mac, pdst=target_ip),
        Ether(src=my_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=2, hwsrc=my_mac, psrc=victim_ip, hwdst="ff:ff:ff:ff:ff:ff", pdst=victim_ip),
        Ether(src=my_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=my_mac, psrc=victim_ip, hwdst="00:00:00:00:00:00", pdst=target_ip),
    ]
    for p in pkts:
        scapy_sendp(p, iface=iface, count=3, inter=0.01)
    print("sent", 3 * len(pkts), flush=True)


def arp_who_has(iface, my_mac, my_ip, *targets):
    """For each target: `answer <ip> <mac>` or `none <ip>`."""
    from scapy.all import ARP, Ether, conf, srp

    conf.verb = 0
    for t in targets:
        ans, _ = srp(
            Ether(src=my_mac, dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=1, hwsrc=my_mac, psrc=my_ip, pdst=t),
            iface=iface,
            timeout=1,
            retry=1,
        )
        if ans:
            print("answer", t, ans[0][1][ARP].hwsrc, flush=True)
        else:
            print("none", t, flush=True)


COMMANDS = {
    "tcp-echo-server": tcp_echo_server,
    "tcp-echo": tcp_echo_client,
    "tcp-echo-try": tcp_echo_try,
    "tcp-hold6only": tcp_hold6only,
    "tcp-echo6": tcp_echo6,
    "udp-echo-server": udp_echo_server,
    "udp-echo": udp_echo_client,
    "sink": sink,
    "source": source,
    "sniff": sniff,
    "sendp": sendp,
    "arp-poison": arp_poison,
    "arp-who-has": arp_who_has,
    "sendp6": sendp6,
    "nd-who-has": nd_who_has,
    "nd-forge": nd_forge,
    "ns-count": ns_count,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
