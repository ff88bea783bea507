"""Load test for `edgeprune serve`: N concurrent clients for T seconds against a server it starts itself.

Starts `python -m edgeprune serve BUNDLE --port 0 --json` on 127.0.0.1, waits until it is ready, runs
a warm-up (so the backend's first-call allocations are not counted as growth), then N client threads
POST the same image with urllib until the time is up. Reports throughput, latency percentiles (all
answers and 200s only), counts by status, and the server's RSS (VmRSS from /proc/<pid>/status) after
warm-up, at the end and its maximum, then stops the server with SIGTERM and records its exit code.
`--slow-clients N` adds N attackers that trickle a never-ending request head one byte a second (reconnecting
whenever the server drops them), and a prober times GET /healthz twice a second during the measured phase.
Python 3.6 compatible (it runs on the device too).

example:
  python benchmarks/serve_load.py runs/exp/bundle --clients 8 --duration 60 --out benchmarks/serve_load.json \
      -- --max-queue 16 --max-batch 4     (flags after `--` go to `edgeprune serve`)
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MAX_CLIENTS = 256
MAX_DURATION_S = 600.0


def rss_kb(pid):
    """Resident set size of `pid` in KiB (Linux /proc), or None if it cannot be read."""
    try:
        with open("/proc/{}/status".format(pid)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def start_server(bundle, server_args, ready_timeout=120.0):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "edgeprune", "serve", bundle, "--host", "127.0.0.1", "--port", "0", "--json"]
    proc = subprocess.Popen(cmd + list(server_args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            universal_newlines=True)
    watchdog = threading.Timer(ready_timeout, proc.kill)  # a server that never gets ready must not hang us
    watchdog.start()
    url = None
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("event") == "listening":
                url = event["url"]
            if event.get("event") == "ready":
                return proc, url
    finally:
        watchdog.cancel()
    proc.kill()
    raise SystemExit("serve_load: the server did not become ready (exit code {})".format(proc.wait()))


class Client(threading.Thread):
    def __init__(self, url, body, headers, stop_at, timeout):
        super(Client, self).__init__(daemon=True)
        self.url, self.body, self.headers, self.stop_at, self.timeout = url, body, headers, stop_at, timeout
        self.samples = []  # (status or error name, seconds)

    def run(self):
        while time.monotonic() < self.stop_at:
            req = urllib.request.Request(self.url, data=self.body, headers=self.headers, method="POST")
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                    status = str(resp.status)
            except urllib.error.HTTPError as exc:
                exc.read()
                status = str(exc.code)
                if exc.code == 503:
                    time.sleep(0.01)  # a polite client backs off on Retry-After; keep the test bounded too
            except (urllib.error.URLError, OSError) as exc:
                status = "error:" + type(getattr(exc, "reason", exc)).__name__
            self.samples.append((status, time.monotonic() - t0))


class SlowClient(threading.Thread):
    """Holds a connection by sending a request head one byte a second; counts how often the server drops it."""

    def __init__(self, address, stop_at):
        super(SlowClient, self).__init__(daemon=True)
        self.address, self.stop_at = address, stop_at
        self.connections = 0
        self.dropped = 0  # connections the server closed (head deadline) before we gave up

    def run(self):
        while time.monotonic() < self.stop_at:
            try:
                sock = socket.create_connection(self.address, timeout=2)
            except OSError:
                time.sleep(0.2)
                continue
            self.connections += 1
            try:
                while time.monotonic() < self.stop_at:
                    sock.send(b"G")
                    sock.settimeout(max(min(1.0, self.stop_at - time.monotonic()), 0.01))
                    try:
                        if sock.recv(4096) == b"":
                            self.dropped += 1
                            break
                    except socket.timeout:
                        pass
            except OSError:
                self.dropped += 1
            finally:
                sock.close()


class HealthProber(threading.Thread):
    """GET /healthz every 0.5 s until `stop_at`: (status or error name, seconds) per probe."""

    def __init__(self, url, stop_at):
        super(HealthProber, self).__init__(daemon=True)
        self.url, self.stop_at = url + "/healthz", stop_at
        self.samples = []

    def run(self):
        while time.monotonic() < self.stop_at:
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    resp.read()
                    status = str(resp.status)
            except urllib.error.HTTPError as exc:
                exc.read()
                status = str(exc.code)
            except (urllib.error.URLError, OSError) as exc:
                status = "error:" + type(getattr(exc, "reason", exc)).__name__
            self.samples.append((status, time.monotonic() - t0))
            time.sleep(max(0.5 - (time.monotonic() - t0), 0.0))


def run_phase(url, body, headers, clients, seconds, timeout):
    stop_at = time.monotonic() + seconds
    threads = [Client(url, body, headers, stop_at, timeout) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    return [s for t in threads for s in t.samples], time.monotonic() - t0


def test_image(path, size):
    if path:
        with open(path, "rb") as f:
            return f.read()
    import numpy as np

    from jetson.imageio import encode_image
    rng = np.random.RandomState(0)
    img = rng.randint(0, 60, size=(size[1], size[0], 3)).astype(np.uint8)
    for _ in range(8):
        y, x = rng.randint(0, size[1] - 40), rng.randint(0, size[0] - 40)
        img[y:y + rng.randint(10, 40), x:x + rng.randint(10, 40)] = rng.randint(150, 255, size=3)
    return encode_image(img, ".jpg")


def plot(report, latencies_ms, path):
    """RSS samples (one a second) and the latency histogram of the 200s, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeprune.fsio import AtomicFile
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    rss = [r / 1024.0 for r in report["server"]["rss_kb_samples"] if r is not None]
    ax1.plot(range(1, len(rss) + 1), rss, marker=".")
    if rss:
        ax1.set_ylim(0, max(rss) * 1.15)  # from zero, so growth is shown at its true scale
    ax1.set_xlabel("seconds of measured load")
    ax1.set_ylabel("server RSS (MiB)")
    ax1.set_title("memory: {} clients".format(report["clients"]))
    ax2.hist(latencies_ms, bins=40)
    ax2.set_xlabel("latency of 200 answers (ms)")
    ax2.set_ylabel("requests")
    ax2.set_title("p50 {:.0f} ms, p99 {:.0f} ms, {:.1f} req/s".format(
        report["latency_ms_200"]["p50"] or 0, report["latency_ms_200"]["p99"] or 0, report["ok_rps"]))
    fig.tight_layout()
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds (after warm-up)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before RSS 'start' is read")
    ap.add_argument("--image", default=None, help="image file to send (default: a synthetic 640x480 JPEG)")
    ap.add_argument("--query", default="", help="query string for /v1/detect, e.g. conf=0.3")
    ap.add_argument("--request-timeout", type=float, default=30.0)
    ap.add_argument("--slow-clients", type=int, default=0,
                    help="connections trickling a request head at 1 byte/s during the measured phase")
    ap.add_argument("--out", default=None, help="write the JSON report here (atomic)")
    ap.add_argument("--plot", default=None, help="also write a PNG (server RSS over time, latency histogram); "
                                                 "needs matplotlib")
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after `--` goes to the server, e.g. `-- --max-queue 4 --max-batch 4`
    server_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION_S \
            or not 0 <= args.slow_clients <= MAX_CLIENTS:
        ap.error("--clients must be in [1, {0}], --slow-clients in [0, {0}] and --duration in (0, {1}]".format(
            MAX_CLIENTS, MAX_DURATION_S))

    body = test_image(args.image, (640, 480))
    proc, url = start_server(args.bundle, server_args)
    try:
        rss_ready = rss_kb(proc.pid)
        endpoint = url + "/v1/detect" + ("?" + args.query if args.query else "")
        headers = {"Content-Type": "image/jpeg"}
        run_phase(endpoint, body, headers, args.clients, args.warmup, args.request_timeout)
        rss_start = rss_kb(proc.pid)
        rss_samples = []
        sampling = threading.Event()

        def sample_rss():
            while not sampling.wait(1.0):
                rss_samples.append(rss_kb(proc.pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        stop_at = time.monotonic() + args.duration
        where = urlsplit(url)
        slow = [SlowClient((where.hostname, where.port), stop_at) for _ in range(args.slow_clients)]
        prober = HealthProber(url, stop_at)
        for t in slow + [prober]:
            t.start()
        time.sleep(1.0 if slow else 0.0)  # let the slow clients take their slots first
        samples, elapsed = run_phase(endpoint, body, headers, args.clients, stop_at - time.monotonic(),
                                     args.request_timeout)
        for t in slow + [prober]:
            t.join(10)
        sampling.set()
        sampler.join()
        rss_end = rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait()

    counts = {}
    for status, _ in samples:
        counts[status] = counts.get(status, 0) + 1
    ok = [s * 1000.0 for status, s in samples if status == "200"]
    every = [s * 1000.0 for _, s in samples]

    def summary(values):
        return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
                "mean": sum(values) / len(values) if values else None, "max": max(values) if values else None}

    valid_rss = [r for r in rss_samples if r is not None]
    health_counts = {}
    for status, _ in prober.samples:
        health_counts[status] = health_counts.get(status, 0) + 1
    health_ms = [sec * 1000.0 for _, sec in prober.samples]
    report = {
        "bundle": os.path.abspath(args.bundle), "clients": args.clients, "duration_s": round(elapsed, 3),
        "warmup_s": args.warmup, "image_bytes": len(body), "server_args": server_args,
        "requests": len(samples), "throughput_rps": len(samples) / elapsed if elapsed else 0.0,
        "ok_rps": len(ok) / elapsed if elapsed else 0.0,
        "status_counts": counts, "other_than_200_503": sum(n for s, n in counts.items() if s not in ("200", "503")),
        "latency_ms_200": summary(ok), "latency_ms_all": summary(every),
        "health": {"status_counts": health_counts, "latency_ms": summary(health_ms)},
        "slow_clients": {"count": args.slow_clients, "connections": sum(t.connections for t in slow),
                         "dropped_by_server": sum(t.dropped for t in slow)},
        "server": {"pid": proc.pid, "rss_kb_ready": rss_ready, "rss_kb_start": rss_start, "rss_kb_end": rss_end,
                   "rss_kb_max": max(valid_rss) if valid_rss else None,
                   "rss_growth_kb": (rss_end - rss_start) if rss_end and rss_start else None,
                   "rss_kb_samples": rss_samples, "exit_code": exit_code},
    }
    text = json.dumps(report, indent=2)
    if args.plot:
        plot(report, ok, args.plot)
    if args.out:
        from edgeprune.fsio import atomic_write_text
        atomic_write_text(args.out, text + "\n")
    print(text)
    healthy = set(health_counts) <= {"200"}
    return 0 if report["other_than_200_503"] == 0 and healthy and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
