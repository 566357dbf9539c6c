#!/usr/bin/env python3
"""Subscribe to a pubsubd stream over WebSocket with the real ``websockets``
library (its asyncio client) and print what happens as JSON lines.

Run by ``tests/websocket.rs`` and ``tests/tls.rs`` (not a pytest module).

    python -u ws_client.py --url ws://127.0.0.1:PORT/topic
        [--deflate] [--ca FILE (for wss://)] [--header NAME:VALUE]...
        [--count N] [--until-close] [--timeout SECONDS]

Prints ``{"open": true, "extensions": HEADER-OR-NULL}`` once connected
(permessage-deflate only with ``--deflate``), then each message as
``{"message": <the event>}``, then ``{"closed": CODE}`` when the server
closes (``--until-close``) or after COUNT messages once its own close
handshake completed. Exits 0, or 3 on a timeout.

It uses the library's asyncio client, not its threaded ``sync`` one: over
TLS the sync client can fail its own close handshake. Its reading thread
sits in a blocking ``SSLSocket.recv`` when ``close()`` in the other thread
sets a socket timeout; if OpenSSL then needs a second read for a record,
CPython's ``ssl`` module, which decided at the start of the read that the
socket had no timeout, raises ``TimeoutError`` at once, and the client
reports 1006 without having read the server's close frame.
"""

import argparse
import asyncio
import json
import ssl
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--deflate", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--until-close", action="store_true")
    ap.add_argument("--timeout", type=float, default=20)
    return asyncio.run(run(ap.parse_args()))


async def run(args):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
    headers = [tuple(h.split(":", 1)) for h in args.header]
    try:
        ws = await connect(
            args.url,
            compression="deflate" if args.deflate else None,
            ssl=context,
            additional_headers=headers,
            open_timeout=args.timeout,
            close_timeout=args.timeout,
            # The server pings; this client need not.
            ping_interval=None,
        )
    except TimeoutError:
        return 3
    async with ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        print(json.dumps({"open": True, "extensions": extensions}), flush=True)
        seen = 0
        try:
            while args.until_close or seen < args.count:
                message = await asyncio.wait_for(ws.recv(), args.timeout)
                print(json.dumps({"message": json.loads(message)}), flush=True)
                seen += 1
        except TimeoutError:
            return 3
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            print(json.dumps({"closed": code}), flush=True)
            return 0
        await ws.close()
        print(json.dumps({"closed": ws.close_code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
