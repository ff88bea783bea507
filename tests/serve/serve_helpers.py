"""Test helpers for the serve tests: HTTP calls, test images, a strict Prometheus text parser.
Python 3.6 compatible (these tests also run in the device venv)."""
import hashlib
import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import warnings

import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spawn_serve(args):
    """`python -m edgeprune serve ARGS` as a real process (stdout: --json events)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "edgeprune", "serve"] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def event(proc, name):
    """Read the server's JSON lifecycle events until `name`."""
    for line in proc.stdout:
        found = json.loads(line)
        if found["event"] == name:
            return found
    raise AssertionError("server exited before '{}': {}".format(name, proc.stderr.read()))


def proc_memory_kb(pid):
    """{"VmRSS": kB, "VmHWM": kB} of a process, from /proc/<pid>/status (Linux)."""
    out = {}
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def scene(seed, h=120, w=160):
    """A deterministic RGB image: dark noise plus a few bright rectangles placed by `seed`."""
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
    for _ in range(4):
        y, x = rng.randint(0, h - 24), rng.randint(0, w - 24)
        img[y:y + rng.randint(8, 24), x:x + rng.randint(8, 24)] = rng.randint(150, 255, size=3)
    return img


def export_dynamic_bundle(root):
    """Host only (torch): the device tests' tiny bundle, re-exported with a symbolic batch (manifest
    input_shape[0] = -1, the exporter's convention). `python tests/serve/serve_helpers.py OUT` makes one
    for the 3.6 venv (EDGEPRUNE_TEST_DYNAMIC_BUNDLE)."""
    import torch
    from device_helpers import make_bundle
    root, model = make_bundle(root)
    manifest_path = os.path.join(root, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    onnx_path = os.path.join(root, manifest["model"]["file"])
    size = manifest["preprocess"]["size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.rand(1, 3, size[0], size[1]),), onnx_path, input_names=["images"],
                          output_names=["output"], opset_version=13, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    with open(onnx_path, "rb") as f:
        manifest["model"]["sha256"] = hashlib.sha256(f.read()).hexdigest()
    manifest["model"]["input_shape"][0] = -1
    manifest["model"]["dynamic_batch"] = True
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
    return root


def encoded(seed, ext=".png", h=120, w=160):
    from jetson.imageio import encode_image
    return encode_image(scene(seed, h, w), ext)


class Reply(object):
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def call(server, method, path, body=None, headers=None, timeout=30):
    """One request on a fresh connection; returns Reply(status, headers dict (lower-case), body bytes)."""
    host, port = server.address if hasattr(server, "address") else server
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def raw_call(address, request_bytes, timeout=30):
    """Send exactly `request_bytes` on a new socket and parse the answer (for requests http.client
    refuses to build: no Content-Length, odd headers, truncated bodies)."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.sendall(request_bytes)
        resp = http.client.HTTPResponse(sock, method=request_bytes.split(b" ", 1)[0].decode("latin-1"))
        resp.begin()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        sock.close()


def same_detections(got, want, tol=0.02):
    """Server JSON vs Detector.detect: same classes in the same order, boxes/scores within `tol`
    (both are rounded to 2 / 5 decimals; a batched call may differ in the last float bits)."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g["class_id"] != w["class_id"] or g["class_name"] != w["class_name"]:
            return False
        if abs(g["score"] - w["score"]) > 1e-3 or not np.allclose(g["box"], w["box"], atol=tol):
            return False
    return True


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\n"])*"'
_SAMPLE = re.compile(r"^({name})(\{{(?:{label}(?:,{label})*)?\}})? (\S+)$".format(name=_NAME, label=_LABEL))
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\n"])*)"')


def parse_prometheus(text):
    """Parse the Prometheus text exposition format strictly: every line is a HELP/TYPE comment or a
    sample; every sample belongs to a declared family. Returns {family: {"type", "samples":
    [(name, {labels}, value)]}}; raises AssertionError on any malformed line."""
    families = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.match("^" + _NAME + "$", name), "line {}: bad metric name".format(n)
            families.setdefault(name, {"type": None, "samples": []})
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), "line {}: type {}".format(n, kind)
            fam = families.setdefault(name, {"type": None, "samples": []})
            assert fam["type"] is None and not fam["samples"], "line {}: TYPE after samples or twice".format(n)
            fam["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, "line {}: not a valid sample: {!r}".format(n, line)
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            number = float(value.replace("+Inf", "inf").replace("-Inf", "-inf"))
            assert not math.isnan(number), "line {}: NaN".format(n)
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            fam = families.get(name) or families.get(base)
            assert fam is not None, "line {}: sample {} without # TYPE".format(n, name)
            fam["samples"].append((name, dict(_LABEL_PAIR.findall(labels)), number))
    return families


if __name__ == "__main__":
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.dirname(os.path.dirname(here)), os.path.join(os.path.dirname(here), "device")]
    print(export_dynamic_bundle(sys.argv[1]))
