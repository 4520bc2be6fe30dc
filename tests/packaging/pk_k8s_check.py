#!/usr/bin/env python3
"""Static checks of mcache's Kubernetes packaging (run by pk_k8s.sh; python3-yaml).

    pk_k8s_check.py [--kustomize-v2] SRC RENDER_DIR

SRC is the source tree; RENDER_DIR holds `kubectl kustomize` output as base.yaml,
staging.yaml, production.yaml and flux.yaml. --kustomize-v2: the renders come from Kustomize
v2.0.3 (Debian's kubectl 1.20), which leaves a document without kind where a `$patch: delete`
removed a resource; such documents are skipped instead of reported.

Checks, each reported as `FAIL: what` (exit 1 if any):
  rendered objects  kind, apiVersion, metadata.name; unique; namespace `inference`; every image
                    pinned (a tag other than latest, or a digest); ConfigMaps and Secrets that
                    pods reference exist (or are the documented out-of-Git Secrets)
  inference pods    the init container runs `init` from the mcache image with the promised
                    securityContext and mounts /models, which the server mounts too; base and
                    the example: MODEL_URL from model-credentials/url on the local-nvme PVC;
                    overlays: the manifest from a generated ConfigMap, the node cache on the
                    hostPath the HelmRelease's chart uses, --model /models/NAME of a listed model
  HelmRelease       its valuesFrom ConfigMap exists with the key; every value it sets is a key of
                    the chart's values.yaml; its chart path exists
  chart             Chart.yaml fields; values.yaml defaults (securityContext, seccomp); every
                    .Values path in the templates exists in values.yaml and every top-level
                    value is used; template actions balanced; included templates defined
  other YAML        every non-template YAML file in packaging/ parses; Kubernetes objects have
                    kind/apiVersion/name; Flux sync paths exist
  seccomp profile   RuntimeDefault plus io_uring: io_uring_* allowed, clone3 ENOSYS, none of
                    the syscalls RuntimeDefault withholds from a container without capabilities
This is not a template renderer: Helm templates are only scanned as text.
"""

import glob
import json
import os
import re
import sys

import yaml

ERRORS = []
NAMESPACE = "inference"
MCACHE_IMAGE = "ghcr.io/mcache/mcache"
UID = 65532
# Secrets the packaging references but never commits (packaging/README.md says how to make them).
EXTERNAL_SECRETS = {"model-credentials", "model-origin-credentials"}
MANIFEST_KEYS = {"name", "uri", "revision", "include", "exclude", "pin", "priority"}
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CLUSTER_KINDS = {"StorageClass", "PriorityClass", "ClusterRole", "ClusterRoleBinding",
                 "Namespace", "PersistentVolume", "CustomResourceDefinition"}


def check(cond, msg):
    if not cond:
        ERRORS.append(msg)
    return bool(cond)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def is_object(doc):
    return isinstance(doc, dict) and "apiVersion" in doc


def check_object_shape(doc, where):
    name = get(doc, "metadata", "name")
    ok = check(isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], f"{where}: no apiVersion")
    ok &= check(isinstance(doc.get("kind"), str) and doc["kind"], f"{where}: no kind")
    ok &= check(isinstance(name, str) and name, f"{where}: no metadata.name")
    return ok


def pod_spec(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return get(doc, "spec", "template", "spec")
    if kind == "CronJob":
        return get(doc, "spec", "jobTemplate", "spec", "template", "spec")
    if kind == "Pod":
        return doc.get("spec")
    return None


def containers(spec):
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def check_image(image, where):
    if not check(isinstance(image, str) and image, f"{where}: no image"):
        return
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    check(":" in last, f"{where}: image '{image}' has no tag (it would pull latest)")
    check(not last.endswith(":latest"), f"{where}: image '{image}' uses the latest tag")


def check_init_security(c, where):
    sc = c.get("securityContext") or {}
    check(sc.get("runAsNonRoot") is True, f"{where}: securityContext.runAsNonRoot is not true")
    check(sc.get("runAsUser") == UID, f"{where}: securityContext.runAsUser is not {UID}")
    check(sc.get("readOnlyRootFilesystem") is True,
          f"{where}: securityContext.readOnlyRootFilesystem is not true")
    check(sc.get("allowPrivilegeEscalation") is False,
          f"{where}: securityContext.allowPrivilegeEscalation is not false")
    check(get(sc, "capabilities", "drop") == ["ALL"],
          f"{where}: securityContext.capabilities.drop is not [ALL]")
    check(not get(sc, "capabilities", "add"), f"{where}: adds capabilities")
    prof = sc.get("seccompProfile") or {}
    check(prof.get("type") == "RuntimeDefault"
          or (prof.get("type") == "Localhost" and prof.get("localhostProfile")),
          f"{where}: seccompProfile is neither RuntimeDefault nor a Localhost profile")


def env_map(c):
    return {e.get("name"): e for e in c.get("env") or []}


def mount_of(c, path):
    for m in c.get("volumeMounts") or []:
        if m.get("mountPath") == path:
            return m
    return None


def volume(spec, name):
    for v in spec.get("volumes") or []:
        if v.get("name") == name:
            return v
    return None


def check_inference(objs, label, mode):
    """mode: 'url' (the seed's drop-in: MODEL_URL) or 'manifest' (overlays: node cache)."""
    deps = [d for d in objs if d.get("kind") == "Deployment"]
    if not check(len(deps) == 1, f"{label}: {len(deps)} Deployments, want 1"):
        return
    dep = deps[0]
    where = f"{label}: Deployment/{get(dep, 'metadata', 'name')}"
    spec = pod_spec(dep) or {}
    check(isinstance(get(dep, "spec", "replicas"), int) and dep["spec"]["replicas"] >= 1,
          f"{where}: replicas is not a positive integer")
    inits = [c for c in spec.get("initContainers") or []
             if str(c.get("image", "")).startswith(MCACHE_IMAGE + ":")]
    if not check(len(inits) == 1, f"{where}: {len(inits)} mcache init containers, want 1"):
        return
    init = inits[0]
    iw = f"{where}: init container {init.get('name')}"
    check(init.get("args") == ["init"] and not init.get("command"),
          f"{iw}: runs {init.get('command')} {init.get('args')}, want args [init]")
    check_init_security(init, iw)
    env = env_map(init)
    target = get(env, "MCACHE_TARGET", "value", default="/models")
    check(target == "/models", f"{iw}: MCACHE_TARGET is {target}, want /models")
    m = mount_of(init, "/models")
    if not check(m is not None and not m.get("readOnly"), f"{iw}: does not mount /models writable"):
        return
    main = [c for c in spec.get("containers") or []
            if (mount_of(c, "/models") or {}).get("name") == m["name"]]
    check(len(main) >= 1, f"{where}: no main container mounts volume '{m['name']}' at /models")
    vol = volume(spec, m["name"])
    check(vol is not None, f"{where}: volume '{m['name']}' is not defined")

    if mode == "url":
        ref = get(env, "MODEL_URL", "valueFrom", "secretKeyRef") or {}
        check(ref.get("name") == "model-credentials" and ref.get("key") == "url",
              f"{iw}: MODEL_URL is not from secret model-credentials, key url")
        check("MCACHE_MANIFEST" not in env, f"{iw}: sets both MODEL_URL and MCACHE_MANIFEST")
        claim = get(vol, "persistentVolumeClaim", "claimName")
        check(claim == "model-cache", f"{where}: /models is not the model-cache PVC ({claim})")
        pvcs = {get(d, "metadata", "name"): d for d in objs
                if d.get("kind") == "PersistentVolumeClaim"}
        if label != "example" and check(claim in pvcs, f"{label}: PVC {claim} is not rendered"):
            check(get(pvcs[claim], "spec", "storageClassName") == "local-nvme",
                  f"{label}: PVC {claim} is not on storage class local-nvme")
        return

    check("MODEL_URL" not in env, f"{iw}: MODEL_URL is set with a manifest (init refuses both)")
    path = get(env, "MCACHE_MANIFEST", "value")
    if not check(isinstance(path, str), f"{iw}: MCACHE_MANIFEST is not set"):
        return
    mdir, mfile = os.path.split(path)
    mm = mount_of(init, mdir)
    cm_name = get(volume(spec, (mm or {}).get("name")), "configMap", "name")
    cms = {get(d, "metadata", "name"): d for d in objs if d.get("kind") == "ConfigMap"}
    if not check(cm_name in cms, f"{iw}: {path} is not mounted from a rendered ConfigMap"):
        return
    text = get(cms[cm_name], "data", mfile)
    if not check(isinstance(text, str), f"{label}: ConfigMap {cm_name} has no key {mfile}"):
        return
    names = check_manifest(yaml.safe_load(text), f"{label}: ConfigMap {cm_name}")
    model_args = [a for c in main for a in (c.get("args") or []) if str(a).startswith("/models/")]
    check(any(a[len("/models/"):] in names for a in model_args),
          f"{where}: the server's --model /models/NAME names no model of the manifest {names}")
    cache_dir = get(env, "MCACHE_DIR", "value")
    cm = mount_of(init, cache_dir) if cache_dir else None
    host = get(volume(spec, (cm or {}).get("name")), "hostPath", "path")
    check(host is not None, f"{iw}: MCACHE_DIR is not a hostPath mount (the node cache)")
    for hr in (d for d in objs if d.get("kind") == "HelmRelease"):
        chart_host = get(hr, "spec", "values", "cache", "hostPath", "path")
        check(chart_host == host, f"{label}: HelmRelease/{get(hr, 'metadata', 'name')} caches in "
              f"{chart_host}, the pods in {host}: prewarm would not warm them")


def check_manifest(man, where):
    names = []
    models = get(man, "models")
    if not check(isinstance(models, list) and models, f"{where}: no `models:` list"):
        return names
    for i, m in enumerate(models):
        w = f"{where}: models[{i}]"
        if not check(isinstance(m, dict), f"{w}: not a mapping"):
            continue
        check(not set(m) - MANIFEST_KEYS, f"{w}: unknown keys {sorted(set(m) - MANIFEST_KEYS)}")
        check(isinstance(m.get("name"), str) and NAME_RE.match(m["name"]), f"{w}: bad name")
        uri = m.get("uri")
        uris = uri if isinstance(uri, list) else [uri]
        check(uris and all(isinstance(u, str) and re.match(r"^(https?|s3|hf)://", u) for u in uris),
              f"{w}: uri must be http(s)://, s3:// or hf:// (or a list of them)")
        check(not isinstance(m.get("include"), str), f"{w}: include must be a list")
        check("pin" not in m or isinstance(m["pin"], bool), f"{w}: pin must be true or false")
        check("priority" not in m or isinstance(m["priority"], int), f"{w}: priority: integer")
        names.append(m.get("name"))
    return names


def leaf_paths(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaf_paths(v, prefix + (k,))
        else:
            yield prefix + (k,)


def has_path(values, path):
    cur = values
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return False
        cur = cur[p]
    return True


def check_rendered(objs, label, chart_values, src, v2):
    seen = set()
    kept = []
    for i, d in enumerate(objs):
        where = f"{label}: document {i + 1}"
        if d is None:
            continue
        if v2 and isinstance(d, dict) and "kind" not in d and set(d) <= {"metadata"}:
            continue  # what Kustomize v2 leaves of a resource `$patch: delete` removed
        if not check(isinstance(d, dict), f"{where}: not a mapping"):
            continue
        if not check_object_shape(d, where):
            continue
        key = (d["kind"], get(d, "metadata", "namespace"), d["metadata"]["name"])
        check(key not in seen, f"{label}: {d['kind']}/{key[2]} appears twice")
        seen.add(key)
        if d["kind"] not in CLUSTER_KINDS and label != "flux":
            check(get(d, "metadata", "namespace") == NAMESPACE,
                  f"{label}: {d['kind']}/{key[2]} is not in namespace {NAMESPACE}")
        kept.append(d)
    check(kept, f"{label}: rendered no objects")
    names = {(d["kind"], d["metadata"]["name"]) for d in kept}
    for d in kept:
        spec = pod_spec(d)
        if spec is None:
            continue
        where = f"{label}: {d['kind']}/{d['metadata']['name']}"
        for c in containers(spec):
            check_image(c.get("image"), f"{where}: container {c.get('name')}")
            for e in c.get("env") or []:
                ref = get(e, "valueFrom", "configMapKeyRef", "name")
                check(ref is None or ("ConfigMap", ref) in names, f"{where}: no ConfigMap {ref}")
                ref = get(e, "valueFrom", "secretKeyRef", "name")
                check(ref is None or ("Secret", ref) in names or ref in EXTERNAL_SECRETS,
                      f"{where}: Secret {ref} is neither rendered nor documented")
            for e in c.get("envFrom") or []:
                ref = get(e, "secretRef", "name")
                check(ref is None or ("Secret", ref) in names or ref in EXTERNAL_SECRETS,
                      f"{where}: Secret {ref} is neither rendered nor documented")
        for v in spec.get("volumes") or []:
            ref = get(v, "configMap", "name")
            check(ref is None or ("ConfigMap", ref) in names, f"{where}: no ConfigMap {ref}")
            ref = get(v, "persistentVolumeClaim", "claimName")
            check(ref is None or ("PersistentVolumeClaim", ref) in names, f"{where}: no PVC {ref}")
    for hr in (d for d in kept if d["kind"] == "HelmRelease"):
        where = f"{label}: HelmRelease/{hr['metadata']['name']}"
        values = get(hr, "spec", "values") or {}
        for p in leaf_paths(values):
            check(has_path(chart_values, p), f"{where}: values.{'.'.join(p)} is not a chart value")
        tag = get(values, "image", "tag")
        check(tag is None or (str(tag) and str(tag) != "latest"), f"{where}: image.tag {tag}")
        chart = get(hr, "spec", "chart", "spec", "chart")
        ref = get(hr, "spec", "chart", "spec", "sourceRef") or {}
        if ref.get("kind") == "GitRepository" and label != "flux":
            check(("GitRepository", ref.get("name")) in names, f"{where}: no source {ref}")
        if ref.get("kind") == "GitRepository":
            check(os.path.isfile(os.path.join(src, str(chart), "Chart.yaml")),
                  f"{where}: chart path {chart} has no Chart.yaml in this repository")
        for vf in get(hr, "spec", "valuesFrom") or []:
            if label == "flux":
                continue  # the overlays supply the ConfigMap
            cms = [d for d in kept if d["kind"] == vf.get("kind") and
                   d["metadata"]["name"] == vf.get("name")]
            if check(cms, f"{where}: valuesFrom {vf.get('kind')}/{vf.get('name')} not rendered"):
                text = get(cms[0], "data", vf.get("valuesKey", "values.yaml"))
                if check(isinstance(text, str), f"{where}: valuesFrom key missing"):
                    vals = yaml.safe_load(text)
                    for p in leaf_paths(vals):
                        check(has_path(chart_values, p[:1]),
                              f"{where}: valuesFrom sets {'.'.join(p)}, not a chart value")
    return kept


TEMPLATE_COMMENT = re.compile(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", re.S)
ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)


def check_chart(chart_dir):
    label = "chart"
    meta = load_all(os.path.join(chart_dir, "Chart.yaml"))[0]
    check(meta.get("apiVersion") == "v2", f"{label}: Chart.yaml apiVersion is not v2")
    check(meta.get("name") == os.path.basename(chart_dir), f"{label}: Chart.yaml name != dir")
    check(re.match(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$",
                   str(meta.get("version", ""))), f"{label}: Chart.yaml version is not SemVer")
    check(isinstance(meta.get("appVersion"), str) and meta["appVersion"],
          f"{label}: Chart.yaml appVersion missing or not a string")
    check(meta.get("type") in ("application", "library"), f"{label}: Chart.yaml type")
    check(meta.get("description"), f"{label}: Chart.yaml description missing")
    for f in ("values.yaml", ".helmignore", "templates/_helpers.tpl", "templates/NOTES.txt"):
        check(os.path.isfile(os.path.join(chart_dir, f)), f"{label}: {f} missing")

    values = load_all(os.path.join(chart_dir, "values.yaml"))[0]
    check(get(values, "image", "repository") == MCACHE_IMAGE, f"{label}: image.repository")
    check(get(values, "image", "tag") != "latest", f"{label}: image.tag is latest")
    psc, sc = values.get("podSecurityContext") or {}, values.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID,
          f"{label}: podSecurityContext is not runAsNonRoot, runAsUser {UID}")
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and get(sc, "capabilities", "drop") == ["ALL"],
          f"{label}: securityContext is not read-only, no escalation, drop ALL")
    check(get(values, "seccomp", "ioUring") is False, f"{label}: seccomp.ioUring is not false")
    check(os.path.basename(str(get(values, "seccomp", "localhostProfile"))) ==
          "mcache-io-uring.json", f"{label}: seccomp.localhostProfile is not mcache-io-uring.json")

    used, defines, includes = set(), set(), set()
    texts = {}
    for path in sorted(glob.glob(os.path.join(chart_dir, "templates", "*"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        texts[name] = raw
        text = TEMPLATE_COMMENT.sub("", raw)
        check(text.count("{{") == text.count("}}"), f"{label}: {name}: unbalanced {{{{ }}}}")
        opens = ends = 0
        for act in ACTION.findall(text):
            word = (act.split() or [""])[0]
            if word in ("if", "range", "with", "define", "block"):
                opens += 1
            elif word == "end":
                ends += 1
        check(opens == ends, f"{label}: {name}: {opens} if/range/with/define, {ends} end")
        defines |= set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', text))
        includes |= set(re.findall(r'(?:include|template)\s+"([^"]+)"', text))
        for m in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            p = tuple(m.group(1).lstrip(".").split("."))
            used.add(p[0])
            check(has_path(values, p), f"{label}: {name}: .Values.{'.'.join(p)} not in values.yaml")
        check(":latest" not in text, f"{label}: {name}: an image with the latest tag")
    check(not includes - defines, f"{label}: templates included but not defined: "
          f"{sorted(includes - defines)}")
    for k in values:
        check(k in used, f"{label}: values.yaml key '{k}' is used by no template")
    for want in ("mcache.initContainer", "mcache.initVolumes"):
        check(want in defines, f"{label}: helper {want} is not defined")
    kinds = " ".join(texts.values())
    for kind in ("DaemonSet", "ConfigMap"):
        check(f"kind: {kind}" in kinds, f"{label}: no {kind} template")
    for name, want in (("prewarm-daemonset.yaml", ["- prewarm", "- --watch"]),
                       ("audit-daemonset.yaml", ["- verify", "- metrics", "- --watch"])):
        for w in want:
            check(w in texts.get(name, ""), f"{label}: {name} does not run `{w[2:]}`")
    return values


def check_other_yaml(src, packaging):
    paths = sorted(glob.glob(os.path.join(packaging, "**", "*.yaml"), recursive=True))
    # Files that are not Kubernetes objects: Kustomize's own, the chart's, Kustomize patches
    # (partial objects), manifests.
    not_objects = set()
    for path in paths:
        base = os.path.basename(path)
        if base in ("kustomization.yaml", "kustomizeconfig.yaml", "Chart.yaml", "values.yaml"):
            not_objects.add(path)
        if base == "kustomization.yaml":
            k = load_all(path)[0] or {}
            for p in (k.get("patchesStrategicMerge") or []) + [
                    c.get("path") for c in k.get("patchesJson6902") or []] + [
                    f.split("=")[-1] for g in k.get("configMapGenerator") or []
                    for f in g.get("files") or []]:
                if isinstance(p, str):
                    not_objects.add(os.path.normpath(os.path.join(os.path.dirname(path), p)))
    for path in paths:
        rel = os.path.relpath(path, src)
        if "/templates/" in rel:
            continue
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            check(False, f"{rel}: does not parse: {e}")
            continue
        for i, d in enumerate(docs):
            if path in not_objects or not is_object(d):
                continue
            where = f"{rel}: document {i + 1}"
            if not check_object_shape(d, where):
                continue
            spec = pod_spec(d)
            for c in containers(spec or {}):
                check_image(c.get("image"), f"{where}: container {c.get('name')}")
            if d["kind"] == "Kustomization" and "toolkit.fluxcd.io" in d["apiVersion"]:
                p = get(d, "spec", "path", default="")
                check(os.path.isfile(os.path.join(src, p, "kustomization.yaml")),
                      f"{where}: Flux path {p} is no kustomization in this repository")
        with open(path, encoding="utf-8") as f:
            check(not re.search(r"^\s*image:\s*\S+:latest\s*$", f.read(), re.M),
                  f"{rel}: a latest image tag")


# What containerd's RuntimeDefault never allows a container without capabilities.
WITHHELD = {"mount", "umount", "umount2", "unshare", "setns", "bpf", "keyctl", "add_key",
            "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
            "delete_module", "open_by_handle_at", "name_to_handle_at", "reboot", "swapon",
            "swapoff", "pivot_root", "chroot", "perf_event_open", "userfaultfd", "acct",
            "settimeofday", "clock_settime", "iopl", "ioperm", "quotactl", "fsopen", "fsmount",
            "move_mount", "open_tree", "lookup_dcookie", "sethostname", "setdomainname",
            "process_vm_readv", "process_vm_writev", "kcmp", "vhangup", "syslog"}
IO_URING = {"io_uring_setup", "io_uring_enter", "io_uring_register"}


def check_seccomp(path):
    label = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        prof = json.load(f)
    check(prof.get("defaultAction") == "SCMP_ACT_ERRNO", f"{label}: defaultAction")
    arches = set(prof.get("architectures") or [])
    check({"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= arches, f"{label}: architectures")
    allowed, conditional = set(), set()
    for rule in prof.get("syscalls") or []:
        names = rule.get("names") or []
        check(all(re.match(r"^[a-z0-9_]+$", n) for n in names), f"{label}: odd syscall name")
        if rule.get("action") == "SCMP_ACT_ALLOW":
            (conditional if rule.get("args") else allowed).update(names)
        elif "clone3" in names:
            check(rule.get("action") == "SCMP_ACT_ERRNO" and rule.get("errnoRet") == 38,
                  f"{label}: clone3 must fail with ENOSYS (38) so libc falls back to clone")
    check(IO_URING <= allowed, f"{label}: io_uring syscalls not allowed")
    check(not WITHHELD & (allowed | conditional),
          f"{label}: allows {sorted(WITHHELD & (allowed | conditional))}")
    check("clone" in conditional and "clone" not in allowed,
          f"{label}: clone must be restricted (no new namespaces)")
    check("personality" in conditional and "personality" not in allowed,
          f"{label}: personality must be restricted")
    for basic in ("read", "write", "openat", "pwrite64", "fdatasync", "linkat", "renameat2",
                  "copy_file_range", "ioctl", "statx", "epoll_pwait", "socket", "connect"):
        check(basic in allowed, f"{label}: {basic} is not allowed (mcache needs it)")


def main(argv):
    v2 = "--kustomize-v2" in argv
    args = [a for a in argv if a != "--kustomize-v2"]
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, renders = args
    packaging = os.path.join(src, "packaging")
    chart_values = check_chart(os.path.join(packaging, "helm", "mcache"))
    rendered = {}
    for label in ("base", "staging", "production", "flux"):
        objs = load_all(os.path.join(renders, label + ".yaml"))
        rendered[label] = check_rendered(objs, label, chart_values, src, v2)
    check_inference(rendered["base"], "base", "url")
    for label in ("staging", "production"):
        check_inference(rendered[label], label, "manifest")
        check(any(d["kind"] == "HelmRelease" for d in rendered[label]), f"{label}: no HelmRelease")
    example = [d for d in load_all(os.path.join(packaging, "helm", "mcache", "examples",
                                                "vllm-deployment.yaml")) if is_object(d)]
    check_inference(example, "example", "url")
    check_other_yaml(src, packaging)
    check_seccomp(os.path.join(packaging, "seccomp", "mcache-io-uring.json"))
    for e in ERRORS:
        print(f"FAIL: {e}", file=sys.stderr)
    counts = ", ".join(f"{k} {len(v)}" for k, v in rendered.items())
    print(f"pk_k8s_check: objects rendered: {counts}; {len(ERRORS)} problem(s)")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
