#!/usr/bin/python3
"""DNS helpers for tests/tests/security_dns.rs (plain sockets, raw DNS bytes).

  fake-upstream ADDR PORT IP      UDP and TCP; answers A queries with IP,
                                  other types with an empty NOERROR, and never
                                  answers names that start with `slow`;
                                  prints `ready`, then `query NAME TYPE udp|tcp`
  flood SERVER SECONDS            unique `slowN.flood.example` A queries from
                                  one socket, 50 every 25 ms, for SECONDS;
                                  prints `started`, `refused` at the first
                                  SERVFAIL (its limit reached), then
                                  `result sent S servfail F elapsed E`
  tcphold SERVER N SECONDS        opens N TCP connections to SERVER:53 and
                                  sends nothing; after 1 s prints
                                  `holding open O closed C failed F`, then
                                  keeps them SECONDS
"""

import select
import socket
import struct
import sys
import threading
import time

from dns import query  # dns.py, written next to this script


def question(d):
    """(name, type, end of the question) of a message."""
    labels, i = [], 12
    while d[i]:
        labels.append(d[i + 1:i + 1 + d[i]].decode(errors="replace"))
        i += d[i] + 1
    qtype = struct.unpack(">H", d[i + 1:i + 3])[0]
    return ".".join(labels).lower(), qtype, i + 5


def fake_answer(d, ip, proto):
    if len(d) < 12:
        return None
    name, qtype, end = question(d)
    print("query", name, qtype, proto, flush=True)
    if name.startswith("slow"):
        return None
    ans = b""
    if qtype == 1:
        ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
    hdr = struct.pack(">HHHHHH", struct.unpack(">H", d[:2])[0], 0x8180, 1, 1 if ans else 0, 0, 0)
    return hdr + d[12:end] + ans


def fake_upstream(addr, port, ip):
    port = int(port)

    def tcp():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(64)
        while True:
            c, _ = s.accept()
            c.settimeout(3)
            try:
                n = struct.unpack(">H", c.recv(2))[0]
                d = b""
                while len(d) < n:
                    chunk = c.recv(n - len(d))
                    if not chunk:
                        break
                    d += chunk
                r = fake_answer(d, ip, "tcp")
                if r:
                    c.sendall(struct.pack(">H", len(r)) + r)
            except (OSError, struct.error):
                pass
            c.close()

    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    threading.Thread(target=tcp, daemon=True).start()
    time.sleep(0.1)
    print("ready", flush=True)
    while True:
        d, peer = u.recvfrom(4096)
        r = fake_answer(d, ip, "udp")
        if r:
            u.sendto(r, peer)


def flood(server, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.connect((server, 53))
    s.setblocking(False)
    sent = servfail = 0
    start = time.monotonic()
    end = start + float(seconds)
    while time.monotonic() < end:
        for _ in range(50):
            try:
                s.send(query(sent & 0xFFFF, f"slow{sent}.flood.example"))
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
        if sent <= 50:
            print("started", flush=True)
        deadline = time.monotonic() + 0.025
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            try:
                d = s.recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            if len(d) >= 4 and d[3] & 0xF == 2:
                servfail += 1
                if servfail == 1:
                    print("refused", flush=True)
    elapsed = time.monotonic() - start
    print(f"result sent {sent} servfail {servfail} elapsed {elapsed:.2f}", flush=True)


def tcphold(server, n, seconds):
    socks, failed = [], 0
    for _ in range(int(n)):
        t = socket.socket()
        t.settimeout(2)
        try:
            t.connect((server, 53))
            socks.append(t)
        except OSError:
            failed += 1
    time.sleep(1)
    open_, closed = [], 0
    for t in socks:
        # The server closes a connection it will not serve: readable, EOF.
        r, _, _ = select.select([t], [], [], 0)
        eof = False
        if r:
            try:
                eof = t.recv(1) == b""
            except OSError:
                eof = True
        if eof:
            closed += 1
            t.close()
        else:
            open_.append(t)
    print(f"holding open {len(open_)} closed {closed} failed {failed}", flush=True)
    time.sleep(float(seconds))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"fake-upstream": fake_upstream, "flood": flood, "tcphold": tcphold}[cmd](*args)
