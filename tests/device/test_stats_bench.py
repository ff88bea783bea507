import json

import numpy as np
import pytest

from jetson.bench import run_bench, ran_on_note, format_report
from jetson.runtime import load_detector
from jetson.stats import speedup, summarize

pytestmark = pytest.mark.py36


def test_summarize_matches_hand_computed():
    s = summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert s["count"] == 5 and s["min"] == 1.0 and s["max"] == 10.0
    assert s["mean"] == pytest.approx(4.0) and s["median"] == 3.0 and s["p50"] == 3.0
    # linear interpolation between order statistics 1,2,3,4,10: p90 at rank 3.6 -> 4 + 0.6*6
    assert s["p90"] == pytest.approx(7.6) and s["p95"] == pytest.approx(8.8) and s["p99"] == pytest.approx(9.76)
    assert s["throughput"] == pytest.approx(5 / 0.020)
    assert summarize([5.0] * 3, wall_s=0.5)["throughput"] == pytest.approx(6.0)
    with pytest.raises(ValueError):
        summarize([])


def test_speedup_direction():
    slow, fast = summarize([10.0, 10.0]), summarize([5.0, 5.0])
    assert speedup(slow, fast) == pytest.approx(2.0)
    assert speedup(fast, slow, "median") == pytest.approx(0.5)


@pytest.fixture(scope="module")
def two(tiny_bundle):
    a = load_detector(tiny_bundle, backend="onnxruntime", threads=1)
    b = load_detector(tiny_bundle, backend="onnxruntime", device="tx2", threads=1)
    yield a, b
    a.close()
    b.close()


class _Timed(object):
    """The real detector, each of its phases followed by a scripted cost (ms) on a clock that moves only then:
    the bench's statistics and speed-ups can be checked against numbers worked out by hand."""

    def __init__(self, det, clock, pre, infer, post):
        self.det, self.clock, self.costs = det, clock, {"pre": list(pre), "infer": list(infer), "post": list(post)}

    def __getattr__(self, name):
        return getattr(self.det, name)

    def _spend(self, phase):
        self.clock.t += self.costs[phase].pop(0) / 1e3

    def preprocess(self, img):
        out = self.det.preprocess(img)
        self._spend("pre")
        return out

    def infer(self, x):
        out = self.det.infer(x)
        self._spend("infer")
        return out

    def postprocess(self, out, metas):
        res = self.det.postprocess(out, metas)
        self._spend("post")
        return res


def test_bench_speedups_against_hand_computed_latencies(two, monkeypatch):
    import types

    import jetson.bench as bench

    clock = types.SimpleNamespace(t=0.0)
    tick = lambda: clock.t      # noqa: E731
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=tick))
    # one warm-up call, then 5 measured: dense infer 8,8,8,20,8 ms (mean 10.4, median 8), pruned 4 ms
    dense = _Timed(two[0], clock, [2] * 6, [1, 8, 8, 8, 20, 8], [1] * 6)
    pruned = _Timed(two[1], clock, [2] * 6, [1, 4, 4, 4, 4, 4], [1] * 6)
    rep = run_bench([("dense", dense), ("pruned", pruned)], image=np.full((64, 80, 3), 90, np.uint8),
                    iterations=5, warmup_s=0.0, clock=tick)
    d, p = rep["models"]
    assert d["infer"]["mean"] == pytest.approx(10.4) and d["infer"]["median"] == pytest.approx(8.0)
    assert d["end_to_end"]["mean"] == pytest.approx(13.4) and p["end_to_end"]["median"] == pytest.approx(7.0)
    c = rep["compare"]
    assert c["speedup_infer_mean"] == pytest.approx(2.6) and c["speedup_infer_median"] == pytest.approx(2.0)
    assert c["speedup_end_to_end_mean"] == pytest.approx(13.4 / 7) and c["speedup_end_to_end_median"] == pytest.approx(11 / 7)
    assert d["throughput_ips"] == pytest.approx(1000 / 13.4)


def test_bench_iterations_and_compare(two):
    a, b = two
    img = np.full((64, 80, 3), 90, np.uint8)
    rep = run_bench([("dense", a), ("pruned", b)], image=img, iterations=6, warmup_s=0.0)
    assert rep["mode"]["measured_iterations"] == 6 and rep["mode"]["interleaved"]
    for e in rep["models"]:
        for phase in ("preprocess", "infer", "postprocess", "end_to_end"):
            assert e[phase]["count"] == 6
            assert e[phase]["min"] <= e[phase]["median"] <= e[phase]["max"]
        # end to end is the sum of the three phases, iteration by iteration
        assert e["end_to_end"]["mean"] == pytest.approx(
            e["preprocess"]["mean"] + e["infer"]["mean"] + e["postprocess"]["mean"], rel=1e-6)
    c = rep["compare"]
    assert c["speedup_end_to_end_mean"] == pytest.approx(
        rep["models"][0]["end_to_end"]["mean"] / rep["models"][1]["end_to_end"]["mean"])
    assert "not a tx2 measurement" in rep["models"][1]["note"]
    assert rep["models"][0]["note"].startswith("onnxruntime")
    json.dumps(rep)
    text = format_report(rep)
    ratio = rep["models"][0]["end_to_end"]["mean"] / rep["models"][1]["end_to_end"]["mean"]
    if abs(ratio - 1) >= 0.01:
        expected = ("pruned is {:.2f}x faster than dense".format(ratio) if ratio > 1 else
                    "pruned is {:.2f}x slower than dense".format(1 / ratio))
    else:
        expected = "pruned is about as fast as dense"
    assert "end to end: " + expected in text


def test_faster_phrase_reads_forwards():
    from jetson.stats import faster_phrase

    dense, pruned = summarize([14.5, 14.5]), summarize([10.0, 10.0])
    assert faster_phrase("dense", dense, "pruned", pruned) == "pruned is 1.45x faster than dense"
    assert faster_phrase("pruned", pruned, "dense", dense) == "dense is 1.45x slower than pruned"
    assert faster_phrase("a", dense, "b", summarize([14.45])) == "b is about as fast as a"


def test_bench_duration_runs_at_least_min_iterations(two):
    ticks = iter(range(1000))
    clock = lambda: float(next(ticks))  # noqa: E731  one "second" per call: duration ends at once
    rep = run_bench([("m", two[0])], image=np.zeros((32, 32, 3), np.uint8), duration=1.0, warmup_s=0.0, clock=clock)
    assert rep["mode"]["measured_iterations"] == 10
    assert "compare" not in rep
    assert ran_on_note(two[1]).startswith("--device tx2 only selected a profile")
