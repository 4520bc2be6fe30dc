#!/usr/bin/env python3
"""A tiny DNS server for pk_static.sh, so that the static binary's resolver is tested against
real DNS answers inside an empty root.

    pk_dns.py ADDR LOG NAME...

Listens on ADDR:53 (UDP), answers an A query for each NAME with 127.0.0.1, any other query for
a NAME with no records (NOERROR), and everything else with NXDOMAIN. Appends "QNAME QTYPE" per
query to LOG. Prints "ready" once bound.
"""
import socket
import struct
import sys

addr, log_path, names = sys.argv[1], sys.argv[2], {n.lower().rstrip(".") for n in sys.argv[3:]}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print("ready", flush=True)
with open(log_path, "a", buffering=1) as log:
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        labels, i = [], 12
        while i < len(q) and q[i]:
            labels.append(q[i + 1 : i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        if i + 5 > len(q):
            continue
        qtype = struct.unpack(">H", q[i + 1 : i + 3])[0]
        question = q[12 : i + 5]
        qname = ".".join(labels).lower()
        log.write("%s %d\n" % (qname, qtype))
        known = qname in names
        answer = b""
        if known and qtype == 1:
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 1])
        flags = struct.pack(">BB", 0x80 | (q[2] & 0x79), 0x80 | (0 if known else 3))
        head = q[:2] + flags + struct.pack(">HHHH", 1, 1 if answer else 0, 0, 0)
        s.sendto(head + question + answer, peer)
