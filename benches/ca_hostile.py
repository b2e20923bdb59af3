#!/usr/bin/env python3
"""The CA emulator under unauthenticated abuse (issue #18): SLOWLORIS connections that send a
request's headers one line every 5 s, and LARGE connections that each try to send a 2 MB body
without a token, while one normal client asks for the CA list (with its token) every second.

It starts `fleetsim emulate` (CA on a free port), measures the process's RSS idle, then during
the attack (sampled every 0.5 s from /proc), and prints: RSS idle / peak / peak above idle, how
many slowloris connections the server still held open at the end, what the large-body senders
were answered, and the normal client's successes and latency; with the load average.

    cargo build --release && python3 benches/ca_hostile.py
    BIN=target/debug/fleetsim SLOWLORIS=200 LARGE=100 SECONDS=60 python3 benches/ca_hostile.py

Only loopback; everything it starts stops at the end.
"""

import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("BIN", "target/release/fleetsim")
SLOWLORIS = int(os.environ.get("SLOWLORIS", "200"))
LARGE = int(os.environ.get("LARGE", "100"))
SECONDS = float(os.environ.get("SECONDS", "60"))
BODY = 2 * 1024 * 1024
STOP = threading.Event()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tls_context(trust):
    ctx = ssl.create_default_context(cafile=trust)
    ctx.check_hostname = False
    return ctx


def connect(addr, ctx):
    raw = socket.create_connection(addr, timeout=10)
    return ctx.wrap_socket(raw, server_hostname=addr[0])


def slowloris(addr, ctx, open_flags, i):
    """Sends a request line, then one header line every 5 s, never finishing the headers."""
    try:
        s = connect(addr, ctx)
        s.sendall(b"POST /api/CA/RequestSSLCertificate HTTP/1.1\r\nHost: ca\r\n")
        open_flags[i] = True
        n = 0
        while not STOP.wait(5):
            n += 1
            s.sendall(f"X-Slow-{n}: {'a' * 20}\r\n".encode())
    except (OSError, ssl.SSLError):
        pass
    open_flags[i] = False


def large_body(addr, ctx, answers, lock):
    """Again and again: headers of a 2 MB POST without a token, then the body as fast as the
    server takes it; records the status line it gets (or how the connection ended)."""
    chunk = b"x" * 65536
    while not STOP.is_set():
        try:
            s = connect(addr, ctx)
            s.sendall(
                b"POST /api/CA/RequestSSLCertificate HTTP/1.1\r\nHost: ca\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {BODY}\r\n\r\n".encode()
            )
            sent = 0
            s.settimeout(2)
            while sent < BODY - len(chunk) and not STOP.is_set():
                s.sendall(chunk)
                sent += len(chunk)
            reply = s.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed"
        except (OSError, ssl.SSLError) as e:
            reply = type(e).__name__
        with lock:
            answers[reply] = answers.get(reply, 0) + 1
        try:
            s.close()
        except Exception:
            pass
        STOP.wait(0.2)


def normal_client(addr, ctx, token, results):
    """One authenticated GET api/CA/GetAvailableSSLCAs a second, on a new connection each."""
    while not STOP.wait(1):
        start = time.monotonic()
        try:
            s = connect(addr, ctx)
            s.sendall(
                b"GET /api/CA/GetAvailableSSLCAs HTTP/1.1\r\nHost: ca\r\n"
                + f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while True:
                part = s.recv(65536)
                if not part:
                    break
                reply += part
            ok = reply.startswith(b"HTTP/1.1 200")
            s.close()
        except (OSError, ssl.SSLError):
            ok = False
        results.append((ok, time.monotonic() - start))


def main():
    out = tempfile.mkdtemp(prefix="fleetsim-ca-hostile.")
    emulate = subprocess.Popen(
        [BIN, "emulate", "--no-dps", "--ca-port", "0", "--mqtt-port", "0",
         "--websocket-port", "0", "--registry-port", "0", "--amqp-port", "0", "--dir", out],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = ""
        for line in emulate.stdout:
            banner += line
            if line.startswith("ready"):
                break
        m = re.search(r"EZCA:\s+https://([\d.]+):(\d+)/", banner)
        if not m:
            sys.exit(f"no EZCA address in:\n{banner}")
        addr = (m.group(1), int(m.group(2)))
        ctx = tls_context(os.path.join(out, "trust.pem"))
        token = open(os.path.join(out, "ezca-token")).read().strip()
        time.sleep(3)
        idle = rss_kib(emulate.pid)

        threads, open_flags, answers, lock, results = [], [False] * SLOWLORIS, {}, threading.Lock(), []
        for i in range(SLOWLORIS):
            threads.append(threading.Thread(target=slowloris, args=(addr, ctx, open_flags, i)))
        for _ in range(LARGE):
            threads.append(threading.Thread(target=large_body, args=(addr, ctx, answers, lock)))
        threads.append(threading.Thread(target=normal_client, args=(addr, ctx, token, results)))
        for t in threads:
            t.daemon = True
            t.start()
        peak, end = idle, time.monotonic() + SECONDS
        while time.monotonic() < end:
            peak = max(peak, rss_kib(emulate.pid))
            time.sleep(0.5)
        still_open = sum(open_flags)
        STOP.set()
        load = os.getloadavg()
        oks = [d for ok, d in results if ok]
        print(f"fleetsim emulate ({BIN}), CA at {addr[0]}:{addr[1]}, {SECONDS:.0f} s of attack")
        print(f"attack: {SLOWLORIS} slowloris (a header line every 5 s), "
              f"{LARGE} unauthenticated 2 MB-body senders (reconnecting)")
        print(f"RSS: idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"peak above idle {(peak - idle) / 1024:.1f} MiB")
        print(f"slowloris connections still open at the end: {still_open} of {SLOWLORIS}")
        print(f"large-body senders were answered: {dict(sorted(answers.items()))}")
        if oks:
            print(f"normal client: {len(oks)} of {len(results)} requests answered 200, "
                  f"p50 {statistics.median(oks) * 1000:.0f} ms, max {max(oks) * 1000:.0f} ms")
        else:
            print(f"normal client: 0 of {len(results)} requests answered 200")
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    finally:
        emulate.terminate()
        emulate.wait(timeout=30)


if __name__ == "__main__":
    main()
