#!/usr/bin/env python3
"""Instructions per publish and per delivery, counted by callgrind.

A regression guard (issue 15): timing benchmarks are noisy on a shared
machine, instruction counts are not. Each workload runs in a fresh
pubsubd under `valgrind --tool=callgrind`; the totals of the workloads
are subtracted so that start-up, the readiness probe and shutdown cancel:

  idle        start, HEAD / -> 204, stop
  publish     idle + N publishes on one keep-alive connection, each
              waiting for its 202
  subscribed  idle + S subscribers (connected one after the other, each
              waiting for its response head) and one idle publisher
              connection, then stop
  fanout      subscribed + M events published in lockstep: one publish,
              then wait until every subscriber has read it, then the next
              (one write per subscriber per event, whatever the timing)

  subscribed-tls, fanout-tls
              the same with the S subscribers on the TLS port (a throw-away
              ECDSA certificate made with the openssl command); the
              publisher stays on plaintext

  per publish      = (publish - idle) / N
  per delivery     = (fanout - subscribed - M * per publish) / (M * S)
  per TLS delivery = (fanout-tls - subscribed-tls - M * per publish) / (M * S)

The TLS figure is skipped (and not checked) without the openssl command.

Nothing in the run depends on time: pings, request and write timeouts are
an hour away, every step waits for the server's answer before the next.

Called by bench/instructions.sh (which builds the server and checks that
valgrind is there); stdlib only.
"""

import argparse
import datetime
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

CONFIG = """\
server:
  bind: 127.0.0.1
  port: 0
  ping_interval: 1h
  request_timeout: 1h
  write_timeout: 1h
  max_queued_bytes: 67108864
clients:
  payloaders: [127.0.0.0/8]
  tokens: {secret: "0123456789abcdef0123456789abcdef", cookie: pubsub_token, query: access_token}
"""

# A fixed ~200-byte event; "n" is replaced by the event's number so a
# subscriber can tell when it has read a given event.
BODY = (
    '{"project":"pubsubd","kind":"commit","author":"bench@example.org",'
    '"subject":"a fixed event of about two hundred bytes for the callgrind guard",'
    '"files":["src/hub/fanout.rs","src/reactor.rs"],"n":"%06d"}'
)

START_TIMEOUT = 120.0  # valgrind start-up on a busy machine
STEP_TIMEOUT = 60.0  # any one answer
STOP_TIMEOUT = 60.0


class Failure(Exception):
    pass


def connect(addr):
    s = socket.create_connection(addr, timeout=STEP_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, buf):
    """Reads one response with a Content-Length body; returns (status, rest)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while b"\r\n\r\n" not in buf:
        buf += recv(sock, deadline)
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        rest += recv(sock, deadline)
    return status, rest[length:]


def recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise Failure("no answer from the server in time")
    sock.settimeout(left)
    data = sock.recv(65536)
    if not data:
        raise Failure("the server closed the connection")
    return data


def read_head(sock):
    """Reads until the end of a response head; returns what was read."""
    deadline = time.monotonic() + STEP_TIMEOUT
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv(sock, deadline)
    return buf


def probe(addr):
    with connect(addr) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        buf = read_head(s)
        if not buf.startswith(b"HTTP/1.1 204"):
            raise Failure(f"HEAD / answered {buf[:40]!r}")


def publish_request(n):
    body = (BODY % n).encode()
    return (
        b"PUT /topic/bench/x HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def publish(sock, buf, n):
    sock.sendall(publish_request(n))
    status, buf = read_response(sock, buf)
    if status != 202:
        raise Failure(f"publish {n} answered {status}")
    return buf


def subscribe(addr, count, tls=None):
    subs = []
    for _ in range(count):
        s = connect(addr)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname="localhost")
        subs.append(s)
        s.sendall(b"GET /topic/bench HTTP/1.1\r\nHost: bench\r\n\r\n")
        buf = read_head(s)
        if not buf.startswith(b"HTTP/1.1 200"):
            raise Failure(f"subscribe answered {buf[:40]!r}")
    return subs


def wait_all(subs, marker, bufs):
    """Reads every subscriber until each has `marker` in its buffer."""
    deadline = time.monotonic() + STEP_TIMEOUT
    sel = selectors.DefaultSelector()
    try:
        for i, s in enumerate(subs):
            if marker in bufs[i]:
                bufs[i] = b""
            else:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, i)
        waiting = len(sel.get_map())
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"{waiting} subscribers did not get {marker!r} in time")
            for key, _ in sel.select(left):
                i = key.data
                bufs[i] += read_available(key.fileobj)
                if marker in bufs[i]:
                    # Later events cannot have arrived: lockstep.
                    bufs[i] = b""
                    sel.unregister(key.fileobj)
                    waiting -= 1
    finally:
        sel.close()


def read_available(sock):
    """All a non-blocking socket has now (for TLS, what its buffer holds
    too: the selector does not see decrypted bytes waiting there)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return data
        if not chunk:
            raise Failure("the server closed a subscriber")
        data += chunk


def make_certificate(directory):
    """A throw-away self-signed ECDSA P-256 certificate for localhost;
    returns (cert, key) paths, or None without the openssl command."""
    if shutil.which("openssl") is None:
        return None
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return cert, key


def run(binary, name, workload, args, certificate=None):
    """One fresh server under callgrind; returns its total instructions.
    With `certificate`, the server also listens for TLS and the workload
    gets that address and a client context as `args.tls_addr`,
    `args.tls_context`."""
    with tempfile.TemporaryDirectory(prefix="pubsubd-instr.") as tmp:
        conf = os.path.join(tmp, "pypubsub.yaml")
        config = CONFIG
        if certificate is not None:
            tls = "  tls: {port: 0, cert: %s, key: %s}\n" % certificate
            config = config.replace("clients:\n", tls + "clients:\n")
        with open(conf, "w") as f:
            f.write(config)
        out = os.path.join(tmp, "callgrind.out")
        log_path = os.path.join(tmp, "server.log")
        log = open(log_path, "w")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             binary, "--config", conf],
            cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        socks = []
        try:
            addr = None
            deadline = time.monotonic() + START_TIMEOUT
            while addr is None:
                if proc.poll() is not None:
                    raise Failure("the server exited at start:\n" + open(log_path).read())
                if time.monotonic() > deadline:
                    raise Failure("the server did not start in time:\n" + open(log_path).read())
                text = open(log_path).read()
                m = re.search(r"listening on (127\.0\.0\.1):(\d+)", text)
                t = re.search(r"listening for TLS on (127\.0\.0\.1):(\d+)", text)
                if m and (certificate is None or t):
                    addr = (m.group(1), int(m.group(2)))
                    if certificate is not None:
                        args.tls_addr = (t.group(1), int(t.group(2)))
                        args.tls_context = ssl.create_default_context(cafile=certificate[0])
                else:
                    time.sleep(0.1)
            probe(addr)
            socks = workload(addr, args)
            proc.send_signal(signal.SIGTERM)
            # Read the streams' ends so the server's closes are orderly.
            for s in socks:
                s.settimeout(STOP_TIMEOUT)
                try:
                    while s.recv(65536):
                        pass
                except OSError:
                    pass
            proc.wait(timeout=STOP_TIMEOUT)
        finally:
            for s in socks:
                s.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        text = open(log_path).read()
        if "panicked" in text:
            raise Failure("the server panicked:\n" + text)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(out, os.path.join(args.keep, f"callgrind.out.{name}"))
        return callgrind_total(out)


def callgrind_total(path):
    total = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        raise Failure(f"no summary/totals line in {path}")
    return total


def w_idle(addr, args):
    return []


def w_publish(addr, args):
    s = connect(addr)
    buf = b""
    for n in range(args.publishes):
        buf = publish(s, buf, n)
    return [s]


def w_subscribed(addr, args):
    subs = subscribe(addr, args.subscribers)
    return subs + [connect(addr)]


def w_fanout(addr, args, tls=False):
    if tls:
        subs = subscribe(args.tls_addr, args.subscribers, args.tls_context)
    else:
        subs = subscribe(addr, args.subscribers)
    pub = connect(addr)
    bufs = [b""] * len(subs)
    buf = b""
    for n in range(args.events):
        buf = publish(pub, buf, n)
        wait_all(subs, b'"n":"%06d"' % n, bufs)
    return subs + [pub]


def w_subscribed_tls(addr, args):
    subs = subscribe(args.tls_addr, args.subscribers, args.tls_context)
    return subs + [connect(addr)]


def w_fanout_tls(addr, args):
    return w_fanout(addr, args, tls=True)


def read_baseline(path):
    figures = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                key, value = line.split()
                figures[key] = float(value)
    return figures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True, help="the pubsubd binary")
    p.add_argument("--publishes", type=int, default=2000, help="N")
    p.add_argument("--subscribers", type=int, default=100, help="S")
    p.add_argument("--events", type=int, default=300, help="M")
    p.add_argument("--check", metavar="FILE", help="exit 1 if a figure is >10%% above FILE's")
    p.add_argument("--record", metavar="FILE", help="write the figures to FILE")
    p.add_argument("--commit", default="", help="named in the recorded file")
    p.add_argument("--keep", metavar="DIR",
                   help="copy each workload's callgrind.out here (for callgrind_annotate)")
    args = p.parse_args()

    t0 = time.monotonic()
    totals = {}
    for name, workload in (("idle", w_idle), ("publish", w_publish),
                           ("subscribed", w_subscribed), ("fanout", w_fanout)):
        totals[name] = run(args.bin, name, workload, args)
        print(f"total {name}: {totals[name]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pubsubd-instr-pki.") as pki:
        certificate = make_certificate(pki)
        if certificate is None:
            print("instructions: the TLS workloads skipped (no openssl command)")
        else:
            for name, workload in (("subscribed-tls", w_subscribed_tls),
                                   ("fanout-tls", w_fanout_tls)):
                totals[name] = run(args.bin, name, workload, args, certificate)
                print(f"total {name}: {totals[name]}", flush=True)
    n, s, m = args.publishes, args.subscribers, args.events
    per_publish = (totals["publish"] - totals["idle"]) / n
    per_delivery = (totals["fanout"] - totals["subscribed"] - m * per_publish) / (m * s)
    print(f"workloads: N={n} publishes, S={s} subscribers, M={m} events "
          f"({time.monotonic() - t0:.0f} s)")
    print(f"instructions per publish: {per_publish:.0f}")
    print(f"instructions per delivery: {per_delivery:.0f}")
    figures = {"per_publish": per_publish, "per_delivery": per_delivery}
    if "fanout-tls" in totals:
        per_tls = (totals["fanout-tls"] - totals["subscribed-tls"] - m * per_publish) / (m * s)
        print(f"instructions per TLS delivery: {per_tls:.0f}")
        figures["per_tls_delivery"] = per_tls

    if args.record:
        today = datetime.date.today().isoformat()
        with open(args.record, "w") as f:
            f.write("# bench/instructions.sh baseline: instructions counted by callgrind,\n")
            f.write(f"# measured at {args.commit or 'an unnamed commit'} on {today} "
                    f"(N={n}, S={s}, M={m}).\n")
            f.write("# bench/instructions.sh --check fails past 110 % of these.\n")
            for key, value in figures.items():
                f.write(f"{key} {value:.0f}\n")
        print(f"recorded in {args.record}")

    status = 0
    if args.check:
        base = read_baseline(args.check)
        for key in base:
            if key not in figures:
                print(f"{key}: not measured here, not checked")
        for key, value in figures.items():
            if key not in base:
                print(f"instructions: {key} missing from {args.check}")
                status = 1
                continue
            limit = base[key] * 1.10
            verdict = "ok" if value <= limit else "FAILED (more than 10 % above the baseline)"
            print(f"{key}: {value:.0f} (baseline {base[key]:.0f}, limit {limit:.0f}) {verdict}")
            if value > limit:
                status = 1
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"instructions: error: {e}", file=sys.stderr)
        sys.exit(2)
