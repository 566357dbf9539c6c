#!/usr/bin/env python3
"""Subscribe to a pubsubd stream with the real ``asfpy`` client and print
every payload it hands over as one JSON line on stdout.

Run by ``tests/asfpy.rs`` (not a pytest module: it defines no tests).

    python -u test_asfpy.py --url http://127.0.0.1:PORT/topic \
        --mode listen|listener --count N --timeout SECONDS

``listen``   -- ``asfpy.pubsub.listen()`` (aiohttp); prints whole payloads,
               pings excluded.
``listener`` -- the deprecated ``asfpy.pubsub.Listener(url).attach(func)``
               (requests); asfpy hands over ``payload["payload"]`` only.

Exits 0 after COUNT payloads, 3 on timeout.
"""

import argparse
import json
import os
import sys
import threading
import warnings


def run_listen(url, count, timeout):
    import asyncio
    from asfpy.pubsub import listen

    async def consume():
        seen = 0
        async for payload in listen(url, timeout=timeout):
            if isinstance(payload, dict) and "stillalive" in payload:
                continue
            print(json.dumps(payload), flush=True)
            seen += 1
            if seen >= count:
                return

    try:
        asyncio.run(asyncio.wait_for(consume(), timeout))
    except asyncio.TimeoutError:
        print("timeout waiting for payloads", file=sys.stderr, flush=True)
        sys.exit(3)


def run_listener(url, count, timeout):
    from asfpy.pubsub import Listener

    seen = [0]

    def on_payload(payload):
        print(json.dumps(payload), flush=True)
        seen[0] += 1
        if seen[0] >= count:
            sys.stdout.flush()
            os._exit(0)

    warnings.simplefilter("ignore", DeprecationWarning)
    Listener(url).attach(on_payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=["listen", "listener"], default="listen")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()

    # Whatever happens inside asfpy, never outlive the timeout.
    def give_up():
        print("timeout waiting for payloads", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(args.timeout + 2.0, give_up)
    timer.daemon = True
    timer.start()

    if args.mode == "listen":
        run_listen(args.url, args.count, args.timeout)
    else:
        run_listener(args.url, args.count, args.timeout)
    sys.exit(0)


if __name__ == "__main__":
    main()
