#!/usr/bin/env python3
"""Deterministic safetensors fixtures for mcache's tests and benchmark (python3 stdlib only).

A safetensors file is: 8 bytes little-endian header length N, N bytes of JSON header (padded
with spaces to a multiple of 8), then the tensors' bytes, contiguous and in offset order. The
header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
relative to the end of the header) and may hold "__metadata__" (string to string).

Every file has exactly the requested size. The bytes are pseudo-random and differ in every
1 MiB block and every file (a per-block PRNG seeded from the seed, the file name and the block
number), so a misplaced chunk or a mixed-up buffer changes the file. The same arguments always
produce the same bytes.

Usage:
  gen_safetensors.py model OUTDIR --size 160M [--shards 4] [--seed 1] [--prefix model]
      writes PREFIX-0000i-of-0000n.safetensors (or PREFIX.safetensors for one shard),
      PREFIX.safetensors.index.json (several shards) and config.json; OUTDIR/../ untouched.
      --size is the total of the shards; each shard gets an equal share (the last the rest).
  gen_safetensors.py file OUT --size 3M [--seed 1]     one safetensors file of exactly SIZE
      [--corrupt KIND]  ... then broken in one way (past-end, overlap, gap, shape, dtype,
                        length, json), for tests of verify --deep; its size then changes a little
  gen_safetensors.py check FILE...                      validates files, exit 1 on a problem
"""

import argparse
import json
import os
import random
import re
import struct
import sys

BLOCK = 1 << 20
TENSOR_BYTES = 8 << 20  # bytes per regular tensor (BF16 [2048, 2048])
DTYPE_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2,
              "I32": 4, "I64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def parse_size(text):
    """'4096', '40M', '1G', '16MiB', '16MB' (binary units, as mcache reads them)."""
    m = re.fullmatch(r"([0-9]+)([KMGT]?)(I?B)?", text.strip().upper())
    if not m or (m.group(3) == "IB" and not m.group(2)):
        raise argparse.ArgumentTypeError("bad size %r" % text)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


def plan_tensors(data_bytes, first_layer):
    """Tensors (name, dtype, shape, nbytes) filling exactly data_bytes bytes."""
    tensors = []
    layer = first_layer
    left = data_bytes
    kinds = ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")
    k = 0
    while left >= TENSOR_BYTES:
        name = "model.layers.%d.%s.weight" % (layer, kinds[k])
        tensors.append((name, "BF16", [2048, 2048], TENSOR_BYTES))
        left -= TENSOR_BYTES
        k += 1
        if k == len(kinds):
            k = 0
            layer += 1
    if left >= 2:
        n = left // 2
        tensors.append(("model.layers.%d.input_layernorm.weight" % layer, "BF16", [n], 2 * n))
        left -= 2 * n
    if left:
        tensors.append(("model.layers.%d.scale_u8" % layer, "U8", [left], left))
    return tensors, layer + 1


def header_bytes(tensors, metadata, padded_len):
    hdr = {"__metadata__": metadata}
    off = 0
    for name, dtype, shape, nbytes in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    if padded_len is None:
        return raw
    return raw + b" " * (padded_len - len(raw)) if len(raw) <= padded_len else None


def block_bytes(seed, tag, index, n):
    """n pseudo-random bytes, unique per (seed, tag, index)."""
    return random.Random("%s/%s/%d" % (seed, tag, index)).randbytes(n)


def write_safetensors(path, size, seed, first_layer=0, metadata=None):
    """Writes exactly `size` bytes; returns (tensor names, data bytes, next layer)."""
    metadata = dict(metadata or {})
    metadata.setdefault("format", "pt")
    tag = os.path.basename(path)
    # Fixed point: the header's length depends on the tensors, which fill what the header
    # leaves. A larger reserve never lengthens the header, so this settles in a step or two.
    reserve = 0
    hdr = None
    for _ in range(16):
        data_bytes = size - 8 - reserve
        if data_bytes < 0:
            break
        tensors, next_layer = plan_tensors(data_bytes, first_layer)
        need = len(header_bytes(tensors, metadata, None))
        if need <= reserve:
            hdr = header_bytes(tensors, metadata, reserve)
            break
        reserve = (need + 7) // 8 * 8
    if hdr is None:
        # Tiny files: no tensors, the header padded to fill the file (not 8-aligned then).
        tensors, next_layer, data_bytes = [], first_layer, 0
        hdr = header_bytes(tensors, metadata, size - 8) if size >= 8 else None
        if hdr is None:
            raise SystemExit("gen_safetensors: %d bytes is too small for a safetensors file"
                             % size)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        done = 0
        i = 0
        while done < data_bytes:
            n = min(BLOCK, data_bytes - done)
            f.write(block_bytes(seed, tag, i, n))
            done += n
            i += 1
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    assert os.path.getsize(path) == size, (path, os.path.getsize(path), size)
    return [t[0] for t in tensors], data_bytes, next_layer


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(path, 0o644)


def cmd_model(args):
    os.makedirs(args.outdir, exist_ok=True)
    os.chmod(args.outdir, 0o755)
    shards = args.shards
    if shards < 1:
        raise SystemExit("gen_safetensors: --shards must be >= 1")
    each = args.size // shards
    weight_map = {}
    total_data = 0
    layer = 0
    names = []
    for i in range(shards):
        size = each if i < shards - 1 else args.size - each * (shards - 1)
        if shards == 1:
            fname = "%s.safetensors" % args.prefix
        else:
            fname = "%s-%05d-of-%05d.safetensors" % (args.prefix, i + 1, shards)
        tnames, data, layer = write_safetensors(os.path.join(args.outdir, fname), size,
                                                args.seed, layer,
                                                {"shard": str(i + 1), "seed": str(args.seed)})
        for t in tnames:
            weight_map[t] = fname
        total_data += data
        names.append(fname)
    if shards > 1:
        write_json(os.path.join(args.outdir, "%s.safetensors.index.json" % args.prefix),
                   {"metadata": {"total_size": total_data}, "weight_map": weight_map})
        names.append("%s.safetensors.index.json" % args.prefix)
    write_json(os.path.join(args.outdir, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "num_hidden_layers": layer, "torch_dtype": "bfloat16", "mcache_test_seed": args.seed})
    names.append("config.json")
    for n in names:
        print(n)


# Structural faults `file --corrupt KIND` writes, for tests of mcache verify --deep. Each
# changes one thing about the last tensor (by offset) or the prefix, keeping the rest valid:
#   past-end  its shape and span grow by one row: it runs past the end of the file
#   overlap   it begins one row earlier and grows by one row: overlaps its predecessor
#   gap       its predecessor shrinks by one row: a gap before it
#   shape     its shape grows by one row, its span does not: shape x dtype != span
#   dtype     its dtype is "Q4", which safetensors does not know
#   length    the 8-byte header length exceeds the file
#   json      the header is not JSON (its first byte becomes '[')
CORRUPT_KINDS = ("past-end", "overlap", "gap", "shape", "dtype", "length", "json")


def corrupt_file(path, kind):
    """Rewrites the safetensors file at path with one structural fault (see CORRUPT_KINDS)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    names = sorted((k for k in hdr if k != "__metadata__"),
                   key=lambda k: hdr[k]["data_offsets"][0])
    if len(names) < 2:
        raise SystemExit("gen_safetensors: --corrupt needs a file of two tensors or more")
    last, prev = hdr[names[-1]], hdr[names[-2]]
    row = DTYPE_SIZE[last["dtype"]]
    for dim in last["shape"][1:]:
        row *= dim
    if kind == "past-end":
        last["shape"][0] += 1
        last["data_offsets"][1] += row
    elif kind == "overlap":
        last["shape"][0] += 1
        last["data_offsets"][0] -= row
    elif kind == "gap":
        prow = DTYPE_SIZE[prev["dtype"]]
        for dim in prev["shape"][1:]:
            prow *= dim
        prev["shape"][0] -= 1
        prev["data_offsets"][1] -= prow
    elif kind == "shape":
        last["shape"][0] += 1
    elif kind == "dtype":
        last["dtype"] = "Q4"
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    if kind == "json":
        raw = b"[" + raw[1:]
    length = len(raw) if kind != "length" else len(raw) + len(data) + 1
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", length))
        f.write(raw)
        f.write(data)
    os.replace(path + ".part", path)


def cmd_file(args):
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    write_safetensors(args.out, args.size, args.seed)
    if args.corrupt:
        corrupt_file(args.out, args.corrupt)
    print(args.out)


def check_file(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return "shorter than 8 bytes"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            return "header length %d past the end" % n
        try:
            hdr = json.loads(f.read(n).decode("utf-8"))
        except ValueError as e:
            return "header is not JSON: %s" % e
    if not isinstance(hdr, dict):
        return "header is not an object"
    meta = hdr.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return "__metadata__ is not a string map"
    spans = []
    for name, t in hdr.items():
        try:
            begin, end = t["data_offsets"]
            count = 1
            for dim in t["shape"]:
                count *= dim
            if (end - begin) != count * DTYPE_SIZE[t["dtype"]]:
                return "tensor %s: %d bytes for shape %s %s" % (name, end - begin, t["shape"],
                                                                 t["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            return "tensor %s: malformed entry (%s)" % (name, e)
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            return "tensors are not contiguous at offset %d" % pos
        pos = end
    if 8 + n + pos != size:
        return "tensors end at %d but the file has %d bytes" % (8 + n + pos, size)
    return None


def cmd_check(args):
    bad = 0
    for p in args.files:
        err = check_file(p)
        if err:
            print("%s: %s" % (p, err), file=sys.stderr)
            bad = 1
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="a sharded model directory")
    m.add_argument("outdir")
    m.add_argument("--size", type=parse_size, required=True, help="total bytes of the shards")
    m.add_argument("--shards", type=int, default=1)
    m.add_argument("--seed", default="1")
    m.add_argument("--prefix", default="model")
    f = sub.add_parser("file", help="one safetensors file")
    f.add_argument("out")
    f.add_argument("--size", type=parse_size, required=True)
    f.add_argument("--seed", default="1")
    f.add_argument("--corrupt", choices=CORRUPT_KINDS,
                   help="one structural fault (the size is then approximate)")
    c = sub.add_parser("check", help="validate safetensors files")
    c.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "model":
        return cmd_model(args)
    if args.cmd == "file":
        return cmd_file(args)
    return cmd_check(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
