#!/usr/bin/python3
"""DNS helpers for tests/tests/names.rs (plain sockets, raw DNS bytes).

  burst SERVER N WINDOW NAME=IP...   N A queries at full speed, WINDOW in
                                      flight, no retries; prints
                                      `result sent S answered A wrong W lost L qps Q`
  garbage SERVER N                    N random / mangled datagrams and some
                                      TCP junk; prints `done`
  first-answer SERVER NAME TIMEOUT    asks every 20 ms until answered; prints
                                      `answered after MS` or `no answer`
  latency SERVER N NAME...            N sequential queries; prints
                                      `lat p50 P50 p99 P99 min MIN max MAX` (µs)
  fake-upstream ADDR PORT IP          answers every A query with IP; prints
                                      `ready`, then `query NAME TYPE` per query
"""

import random
import select
import socket
import struct
import sys
import time


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name, qtype=1):
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, 1)


def skip_name(d, i):
    while True:
        n = d[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def parse_answer(d):
    """(id, rcode, [A addresses]) of a response."""
    qid, flags, qd, an = struct.unpack(">HHHH", d[:8])
    i = 12
    for _ in range(qd):
        i = skip_name(d, i) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(d, i)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", d[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(d[i:i + 4]))
        i += rdlen
    return qid, flags & 0xF, addrs


def udp_to(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.connect((server, 53))
    return s


def burst(server, n, window, *pairs):
    n, window = int(n), int(window)
    names = [p.split("=") for p in pairs]
    s = udp_to(server)
    s.setblocking(False)
    expect = {}
    answered = wrong = sent = 0
    start = time.monotonic()
    last_progress = start
    while answered + wrong < n:
        while sent < n and sent - answered - wrong < window:
            name, ip = names[sent % len(names)]
            expect[sent] = ip
            try:
                s.send(query(sent, name))
            except BlockingIOError:
                break
            sent += 1
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            if time.monotonic() - last_progress > 3:
                break  # the rest is lost
            continue
        while True:
            try:
                d = s.recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                break
            qid, rcode, addrs = parse_answer(d)
            if qid in expect:
                ok = rcode == 0 and addrs == [expect.pop(qid)]
                answered += ok
                wrong += not ok
                last_progress = time.monotonic()
    elapsed = time.monotonic() - start
    print(f"result sent {sent} answered {answered} wrong {wrong} lost {len(expect)} qps {int(answered / elapsed)}", flush=True)


def garbage(server, n):
    rnd = random.Random(5)
    s = udp_to(server)
    seeds = [query(1, "a"), query(2, "some.name.example", 28), query(3, "x" * 63 + ".y", 255)]
    for i in range(int(n)):
        kind = i % 4
        if kind == 0:
            d = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 600)))
        elif kind == 1:
            q = seeds[i % len(seeds)]
            d = q[:rnd.randrange(0, len(q) + 1)]
        elif kind == 2:
            d = bytearray(seeds[i % len(seeds)])
            for _ in range(rnd.randrange(1, 5)):
                d[rnd.randrange(len(d))] ^= 1 << rnd.randrange(8)
            d = bytes(d)
        else:
            # A header that promises many records, then noise; or a pointer loop.
            d = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, rnd.randrange(65536), rnd.randrange(65536),
                            rnd.randrange(65536), rnd.randrange(65536))
            d += b"\xc0\x0c" * rnd.randrange(0, 50) if i % 8 == 3 else bytes(rnd.getrandbits(8) for _ in range(40))
        try:
            s.send(d)
        except OSError:
            pass
        if i % 64 == 0:
            time.sleep(0.001)
    for i in range(50):
        try:
            t = socket.create_connection((server, 53), timeout=2)
            if i % 3 == 0:
                t.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))))
            elif i % 3 == 1:
                t.sendall(b"\xff\xff" + b"short")
            else:
                q = seeds[i % len(seeds)]
                t.sendall(struct.pack(">H", len(q)) + q[:len(q) // 2])
            t.close()
        except OSError:
            pass
    print("done", flush=True)


def first_answer(server, name, timeout):
    s = udp_to(server)
    s.settimeout(0.02)
    start = time.monotonic()
    qid = 0
    while time.monotonic() - start < float(timeout):
        qid += 1
        try:
            s.send(query(qid, name))
            while True:
                rid, rcode, addrs = parse_answer(s.recv(4096))
                if rid == qid and rcode == 0 and addrs:
                    print(f"answered after {int((time.monotonic() - start) * 1000)}", flush=True)
                    return
        except (socket.timeout, ConnectionRefusedError, OSError):
            continue
    print("no answer", flush=True)


def latency(server, n, *names):
    s = udp_to(server)
    s.settimeout(2)
    lat = []
    for i in range(int(n)):
        q = query(i, names[i % len(names)])
        t0 = time.perf_counter_ns()
        s.send(q)
        while True:
            rid, _, _ = parse_answer(s.recv(4096))
            if rid == i:
                break
        lat.append((time.perf_counter_ns() - t0) / 1000)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"lat p50 {p(0.5):.1f} p99 {p(0.99):.1f} min {lat[0]:.1f} max {lat[-1]:.1f}", flush=True)


def fake_upstream(addr, port, ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    print("ready", flush=True)
    while True:
        d, peer = s.recvfrom(4096)
        if len(d) < 12:
            continue
        end = skip_name(d, 12)
        labels, i = [], 12
        while d[i]:
            labels.append(d[i + 1:i + 1 + d[i]].decode(errors="replace"))
            i += d[i] + 1
        qtype = struct.unpack(">H", d[end:end + 2])[0]
        print("query", ".".join(labels).lower(), qtype, flush=True)
        ans = b""
        if qtype == 1:
            ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
        hdr = struct.pack(">HHHHHH", struct.unpack(">H", d[:2])[0], 0x8180, 1, 1 if ans else 0, 0, 0)
        s.sendto(hdr + d[12:end + 4] + ans, peer)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"burst": burst, "garbage": garbage, "first-answer": first_answer, "latency": latency,
     "fake-upstream": fake_upstream}[cmd](*args)
