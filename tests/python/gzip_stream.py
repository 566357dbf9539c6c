#!/usr/bin/env python3
"""Read a pubsubd stream with ``Accept-Encoding: gzip`` and decode it with
Python's ``zlib`` as the bytes arrive, printing JSON lines on stdout.

Run by ``tests/compressed.rs`` (not a pytest module).

    python -u gzip_stream.py --url http://127.0.0.1:PORT/topic [--sse]

Prints ``{"head": {"content-encoding": ..., "vary": ...}}``, then for every
piece of the body read (``read1``: what one chunk brought) the complete
lines it decoded to, as ``{"lines": [...]}`` -- a piece that decodes to a
partial line would show as a line without its end, and the test would see
it -- and at the end ``{"eof": true|false, "unused": N}``: whether the gzip
member ended (trailer checked by zlib) with nothing after it.
"""

import argparse
import json
import sys
import urllib.request
import zlib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--sse", action="store_true")
    ap.add_argument("--timeout", type=float, default=20)
    args = ap.parse_args()
    headers = {"Accept-Encoding": "gzip"}
    if args.sse:
        headers["Accept"] = "text/event-stream"
    req = urllib.request.Request(args.url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=args.timeout) as resp:
        print(json.dumps({"head": {
            "content-encoding": resp.headers.get("Content-Encoding"),
            "vary": resp.headers.get("Vary"),
        }}), flush=True)
        inflate = zlib.decompressobj(wbits=31)  # gzip, header and trailer checked
        while True:
            piece = resp.read1(65536)
            if not piece:
                break
            text = inflate.decompress(piece).decode("utf-8")
            print(json.dumps({"lines": text.split("\n")[:-1], "rest": text.split("\n")[-1]}), flush=True)
        print(json.dumps({"eof": inflate.eof, "unused": len(inflate.unused_data)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
