#!/usr/bin/env python3
"""A scripted, misbehaving HTTP/1.1 origin for mcache's fault tests (stdlib only).

It serves files from a root directory with correct single-range semantics (206, Content-Range,
ETag, If-Match, If-Range), except where the request path asks for a fault:

    /f/<spec>/<file>      e.g. /f/reset=300000,times=2/model.bin
                          (<spec> is percent-decoded, so it may carry a URL: %2F for /)
    /__reset              forget all request counts and flipped files

<spec> is a comma-separated list; a fault applies to the first `times` requests (default: all)
for that spec+file, counted by the server, then the origin behaves. Selectors:

    times=K        only the first K requests (of those `at` selects) get the fault
    at=OFFSET      only requests whose Range starts at byte OFFSET get the fault (and count
                   towards `times`), e.g. at=8388608 for the third 4 MiB chunk
Faults:

    reset=N        send N body bytes, then a TCP reset (SO_LINGER 0)
    close=N        send N body bytes, then a clean close (a short body)
    full200        ignore Range, answer 200 with the whole file
    badrange       answer 206 with a Content-Range shifted by one byte
    norange        answer 206 without Content-Range
    status=C       answer status C (e.g. 503, 429, 403, 404, 416) with an empty body
    retry=S        add Retry-After: S (seconds); retrydate=S: the same as an HTTP-date
    stall=S        send the headers, then nothing for S seconds, then the body
    drip=B         send the body at B bytes per second
    long=N         send N bytes more than announced (past Content-Length), 50 ms after the
                   body: they wait on the kept-alive connection for the client's next request
    longcl=N       send N bytes more than the range, counted in Content-Length
    gzip           add Content-Encoding: gzip
    etagflip       after `times` requests, the file's ETag changes, and so does its content:
                   the first byte of every 1 MiB block is inverted (see flipped_bytes()); its
                   Last-Modified moves a day ahead
    noetag         send no ETag (validators: Last-Modified only, so clients use If-Range)
    redirect=N     a chain of N 302 redirects before the file
    redirectto=U   one 302 to URL U (e.g. ftp://...)

Every request is logged as one JSON line to --log when it ends: method, path, range, if_match,
if_range, status, bytes (body bytes sent), t (when the request arrived, Unix seconds), t_end
(when it ended), fault (whether a fault was applied), aborted (the client went away first) and
peer (the client's port: a new port is a new connection),
so tests count what the origin really sent and when. A stall ends early when the client hangs
up, so an aborted stall is logged at once. Prints "PORT <n>" on stdout once listening.

    fault_origin.py flip FILE OUT   writes the flipped version of FILE (what etagflip serves)
"""
import argparse
import email.utils
import json
import os
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTS = {}
FLIPPED = set()
MIB = 1 << 20


def flipped_bytes(body, start):
    """The flipped version of body (bytes at offset start): every MiB's first byte inverted."""
    b = bytearray(body)
    first = (start + MIB - 1) // MIB * MIB
    for off in range(first, start + len(b), MIB):
        b[off - start] ^= 0xFF
    return bytes(b)


def range_start(header):
    """The first byte a single-range "bytes=A-B" header asks for, or None."""
    unit, _, r = (header or "").partition("=")
    a = r.partition("-")[0].strip()
    if unit.strip() != "bytes" or "," in r or not a.isdigit():
        return None
    return int(a)


def parse_spec(spec):
    out = {}
    for item in spec.split(","):
        if not item:
            continue
        k, _, v = item.partition("=")
        out[k] = v if v else "1"
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-origin/1"

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    def record(self, status, sent, aborted=False):
        line = json.dumps({"method": self.command, "path": self.path,
                           "range": self.headers.get("Range", ""),
                           "if_match": self.headers.get("If-Match", ""),
                           "if_range": self.headers.get("If-Range", ""),
                           "status": status, "bytes": sent,
                           "t": round(self.t0, 4), "t_end": round(time.time(), 4),
                           "fault": bool(getattr(self, "fault", False)),
                           "aborted": aborted, "peer": self.client_address[1]})
        with LOCK:
            with open(self.server.log_path, "a") as f:
                f.write(line + "\n")

    def do_HEAD(self):
        self.handle_get(head=True)

    def do_GET(self):
        self.handle_get(head=False)

    def client_gone(self):
        """True when the client has closed its end (EOF) or reset the connection."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def handle_get(self, head):
        self.t0 = time.time()
        self.fault = False
        path = self.path.split("?", 1)[0]
        if path == "/__reset":
            with LOCK:
                COUNTS.clear()
                FLIPPED.clear()
            return self.simple(204)
        spec, name = {}, path.lstrip("/")
        key = name
        if name.startswith("f/"):
            _, raw, name = name.split("/", 2)
            spec = parse_spec(urllib.parse.unquote(raw))
            key = raw + "/" + name
        selected = "at" not in spec or range_start(self.headers.get("Range")) == int(spec["at"])
        with LOCK:
            n = COUNTS.get(key, 0)
            if selected:
                COUNTS[key] = n + 1
        times = int(spec.get("times", "1000000000"))
        active = selected and n < times
        if "etagflip" in spec:
            if selected and not active:
                with LOCK:
                    FLIPPED.add(name)
            active = False
        self.fault = active
        fpath = os.path.join(self.server.root, name)
        if not os.path.isfile(fpath):
            return self.simple(404)
        st = os.stat(fpath)
        size = st.st_size
        etag = '"%x-%x"' % (int(st.st_mtime), size)
        flipped = name in FLIPPED
        if flipped:
            etag = '"flipped-%x"' % size
        lastmod = email.utils.formatdate(st.st_mtime + (86400 if flipped else 0), usegmt=True)

        if active and "redirect" in spec:
            hops = int(spec["redirect"])
            rest = dict(spec)
            rest["redirect"] = str(hops - 1)
            if hops <= 1:
                del rest["redirect"]
            rest.pop("times", None)
            newspec = ",".join(k + "=" + v for k, v in rest.items())
            loc = "/f/%s/%s" % (newspec, name) if newspec else "/" + name
            return self.simple(302, {"Location": loc})
        if active and "redirectto" in spec:
            return self.simple(302, {"Location": spec["redirectto"]})
        if active and "status" in spec:
            extra = {}
            if "retry" in spec:
                extra["Retry-After"] = spec["retry"]
            if "retrydate" in spec:
                extra["Retry-After"] = email.utils.formatdate(
                    time.time() + float(spec["retrydate"]), usegmt=True)
            return self.simple(int(spec["status"]), extra)

        # Preconditions, as a real origin does them.
        im = self.headers.get("If-Match")
        if im and im.strip() != etag and im.strip() != "*":
            return self.simple(412)
        rng = self.headers.get("Range")
        ir = self.headers.get("If-Range")
        if ir and ir.strip() not in (etag, lastmod):
            rng = None
        start, end, status = 0, size, 200
        if rng and not (active and "full200" in spec):
            try:
                unit, _, r = rng.partition("=")
                a, _, b = r.partition("-")
                if unit.strip() != "bytes" or "," in r:
                    raise ValueError
                if a == "":
                    start, end = max(0, size - int(b)), size
                else:
                    start = int(a)
                    end = min(size, int(b) + 1) if b else size
                if start >= size:
                    return self.simple(416, {"Content-Range": "bytes */%d" % size})
                status = 206
            except ValueError:
                start, end, status = 0, size, 200
        with open(fpath, "rb") as f:
            f.seek(start)
            body = f.read(end - start)
        if flipped:
            body = flipped_bytes(body, start)  # a new version: other bytes too
        if active and "longcl" in spec:
            body += b"\0" * int(spec["longcl"])
        headers = {"ETag": etag, "Last-Modified": lastmod, "Accept-Ranges": "bytes",
                   "Content-Length": str(len(body))}
        if "noetag" in spec:
            del headers["ETag"]
        if status == 206:
            cr = "bytes %d-%d/%d" % (start, end - 1, size)
            if active and "badrange" in spec:
                cr = "bytes %d-%d/%d" % (start + 1, end, size)
            if not (active and "norange" in spec):
                headers["Content-Range"] = cr
        if active and "gzip" in spec:
            headers["Content-Encoding"] = "gzip"
        extra = b"\0" * int(spec["long"]) if active and "long" in spec else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return self.record(status, 0)
        sent = 0
        try:
            if active and "stall" in spec:
                self.wfile.flush()
                deadline = time.time() + float(spec["stall"])
                while time.time() < deadline:
                    if self.client_gone():
                        self.close_connection = True
                        return self.record(status, 0, aborted=True)
                    time.sleep(0.05)
            if active and ("reset" in spec or "close" in spec):
                cut = int(spec.get("reset", spec.get("close")))
                self.wfile.write(body[:cut])
                self.wfile.flush()
                sent = min(cut, len(body))
                if "reset" in spec:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                self.close_connection = True
                self.record(status, sent)
                self.connection.close()
                return
            if active and "drip" in spec:
                rate = max(1, int(spec["drip"]))
                step = max(1, rate // 10)
                for i in range(0, len(body), step):
                    if self.client_gone():
                        self.close_connection = True
                        return self.record(status, sent, aborted=True)
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    sent += len(body[i:i + step])
                    time.sleep(0.1)
            else:
                self.wfile.write(body)
                sent = len(body)
            if extra:
                self.wfile.flush()
                time.sleep(0.05)
                self.wfile.write(extra)
                sent += len(extra)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return self.record(status, sent, aborted=True)
        self.record(status, sent)

    def simple(self, status, extra=None):
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.record(status, 0)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that reset or hang up are what this origin is for


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "flip":
        with open(sys.argv[2], "rb") as f, open(sys.argv[3], "wb") as out:
            out.write(flipped_bytes(f.read(), 0))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.root = args.root
    srv.log_path = args.log
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
