#!/usr/bin/env python3
"""Writes a static Hugging Face Hub tree for mcache's hf:// tests (served by tests/lib/hf_hub.sh).

  hf_hub.py publish ROOT ORG/REPO --src DIR --sha SHA [--rev REV]... [--lie FILE]
  hf_hub.py answer ROOT ORG/REPO REV --json TEXT
  hf_hub.py sha WORD

publish: the files of DIR become commit SHA of ORG/REPO:
  ROOT/ORG/REPO/resolve/SHA/PATH            the bytes (what /resolve/SHA/PATH serves)
  ROOT/api/models/ORG/REPO/revision/X       the API answer, for X = SHA and every --rev
                                            ("refs/pr/1" becomes nested directories: nginx
                                            decodes the client's %2F before mapping to files)
The answer has the shape of GET /api/models/{repo}/revision/{rev}?blobs=true on the real Hub
(huggingface_hub's ModelInfo): "sha", and "siblings" with rfilename, size, blobId (the git blob
oid) and, for LFS files, lfs {sha256, size, pointerSize}. LFS files are *.safetensors, *.bin and
anything of 10 MiB or more, as the Hub's default .gitattributes does. --lie FILE publishes a
wrong sha256 for FILE (an integrity failure the cache must refuse).

answer: writes TEXT as the API answer for REV (malformed answers).
sha: prints a 40-hex commit id derived from WORD.
"""
import argparse
import hashlib
import json
import os
import sys

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".onnx", ".msgpack")
LFS_MIN = 10 << 20


def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256, size):
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
            % (sha256, size)).encode()


def write_answer(root, repo, rev, text):
    path = os.path.join(root, "api", "models", repo, "revision", *rev.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def publish(a):
    siblings = []
    dst = os.path.join(a.root, a.repo, "resolve", a.sha)
    for top, dirs, files in os.walk(a.src):
        dirs.sort()
        for name in sorted(files):
            src = os.path.join(top, name)
            rel = os.path.relpath(src, a.src)
            with open(src, "rb") as f:
                data = f.read()
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            with open(os.path.join(dst, rel), "wb") as f:
                f.write(data)
            sib = {"rfilename": rel, "size": len(data)}
            if rel.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN:
                sha256 = hashlib.sha256(data).hexdigest()
                if rel in a.lie:
                    sha256 = hashlib.sha256(data + b"lie").hexdigest()
                pointer = lfs_pointer(sha256, len(data))
                sib["blobId"] = git_blob_oid(pointer)
                sib["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": len(pointer)}
            else:
                sib["blobId"] = git_blob_oid(data)
            siblings.append(sib)
    siblings.sort(key=lambda s: s["rfilename"])
    answer = {
        "_id": hashlib.md5(a.repo.encode()).hexdigest()[:24],
        "id": a.repo,
        "modelId": a.repo,
        "author": a.repo.split("/")[0],
        "sha": a.sha,
        "lastModified": "2024-05-01T12:00:00.000Z",
        "private": False,
        "gated": "manual" if a.repo.startswith("gated/") else False,
        "disabled": False,
        "tags": ["safetensors"],
        "library_name": "transformers",
        "siblings": siblings,
        "spaces": [],
        "createdAt": "2024-04-01T12:00:00.000Z",
        "usedStorage": sum(s.get("lfs", s)["size"] for s in siblings),
    }
    text = json.dumps(answer)
    for rev in [a.sha] + a.rev:
        write_answer(a.root, a.repo, rev, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    p.add_argument("root")
    p.add_argument("repo")
    p.add_argument("--src", required=True)
    p.add_argument("--sha", required=True)
    p.add_argument("--rev", action="append", default=[])
    p.add_argument("--lie", action="append", default=[])
    p = sub.add_parser("answer")
    p.add_argument("root")
    p.add_argument("repo")
    p.add_argument("rev")
    p.add_argument("--json", required=True)
    p = sub.add_parser("sha")
    p.add_argument("word")
    a = ap.parse_args()
    if a.cmd == "publish":
        publish(a)
    elif a.cmd == "answer":
        write_answer(a.root, a.repo, a.rev, a.json)
    else:
        print(hashlib.sha1(a.word.encode()).hexdigest())


if __name__ == "__main__":
    sys.exit(main())
