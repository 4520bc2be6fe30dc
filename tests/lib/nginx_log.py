#!/usr/bin/env python3
"""Summarises the requests in an nginx JSON access log written by tests/lib/nginx.sh.

  nginx_log.py LOG [--since N] [--uri-prefix P]

prints one JSON object about the requests after the first N lines (those matching P):
  requests, by_status {"200": n, "206": n, ...}, bytes (body bytes sent), ranged (requests
  with a Range header), full_body (200 responses with a body of more than 64 KiB),
  connections (distinct), if_range / if_match / conditional (requests with If-Range, If-Match,
  If-None-Match or If-Modified-Since),
  per_uri {uri: {"requests", "bytes", "ranges": [...]}}.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--since", type=int, default=0)
    ap.add_argument("--uri-prefix", default="")
    a = ap.parse_args()
    out = {"requests": 0, "by_status": {}, "bytes": 0, "ranged": 0, "full_body": 0,
           "connections": 0, "if_range": 0, "if_match": 0, "conditional": 0, "per_uri": {}}
    conns = set()
    with open(a.log) as f:
        lines = f.read().splitlines()[a.since:]
    for line in lines:
        r = json.loads(line)
        if not r["uri"].startswith(a.uri_prefix):
            continue
        out["requests"] += 1
        st = str(r["status"])
        out["by_status"][st] = out["by_status"].get(st, 0) + 1
        out["bytes"] += r["bytes"]
        if r["range"]:
            out["ranged"] += 1
        if r["status"] == 200 and r["bytes"] > 65536:
            out["full_body"] += 1
        if r["if_range"]:
            out["if_range"] += 1
        if r["if_match"]:
            out["if_match"] += 1
        if r.get("if_none_match") or r.get("if_modified_since"):
            out["conditional"] += 1
        conns.add(r["conn"])
        u = out["per_uri"].setdefault(r["uri"], {"requests": 0, "bytes": 0, "ranges": [],
                                                 "statuses": []})
        u["requests"] += 1
        u["statuses"].append(r["status"])
        u["bytes"] += r["bytes"]
        if r["range"]:
            u["ranges"].append(r["range"])
    out["connections"] = len(conns)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
