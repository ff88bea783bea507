"""Latency statistics shared by bench (and anyone timing things). Python 3.6, numpy only.

Percentiles use linear interpolation between order statistics (numpy's default), as trtexec reports
them; throughput is count / total wall time of the timed calls.
"""
import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(samples_ms, wall_s=None):
    """{"count", "mean", "std", "min", "max", "median", "p50", "p90", "p95", "p99"[, "throughput"]} in ms.
    throughput (per second) = count / wall_s, with wall_s defaulting to the sum of the samples."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    out = {"count": int(x.size), "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
           "max": float(x.max()), "median": float(np.median(x))}
    for p in PERCENTILES:
        out["p{}".format(p)] = float(np.percentile(x, p))
    total = float(x.sum()) / 1000.0 if wall_s is None else float(wall_s)
    out["throughput"] = float(x.size / total) if total > 0 else float("inf")
    return out


def speedup(base, other, key="mean"):
    """How many times faster `other` is than `base` (> 1: other is faster)."""
    return float(base[key] / other[key]) if other[key] > 0 else float("inf")


def faster_phrase(name_a, a, name_b, b, key="mean"):
    """'B is 1.45x faster than A' (or slower, or about as fast within 1 %) from two summaries of latency."""
    ta, tb = float(a[key]), float(b[key])
    if tb <= 0 or ta <= 0:
        return "{} vs {}: no timing".format(name_b, name_a)
    ratio = ta / tb
    if abs(ratio - 1.0) < 0.01:
        return "{} is about as fast as {}".format(name_b, name_a)
    if ratio > 1.0:
        return "{} is {:.2f}x faster than {}".format(name_b, ratio, name_a)
    return "{} is {:.2f}x slower than {}".format(name_b, 1.0 / ratio, name_a)


def format_row(label, s, unit="ms"):
    return "{:<22} mean {:8.3f}  median {:8.3f}  min {:8.3f}  max {:8.3f}  p90 {:8.3f}  p95 {:8.3f}  p99 {:8.3f} {}".format(
        label, s["mean"], s["median"], s["min"], s["max"], s["p90"], s["p95"], s["p99"], unit)
