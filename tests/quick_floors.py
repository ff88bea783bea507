"""What the quick preset (edgeprune/config.py) must learn, stated once for every end-to-end test that runs it.

Its simple synthetic scenes reach dense mAP50 ~0.9; the floors leave room for thread counts and DDP, and sit
far above what an untrained or non-updating model scores (< 0.05). A test checks them before it compares
anything, so resume, ONNX Runtime parity and DDP comparisons are between real numbers, never 0 == 0."""
from __future__ import annotations

DENSE_MAP50_FLOOR = 0.5       # the dense model
FINAL_MAP50_FLOOR = 0.3       # after sparse training, pruning and fine-tuning


def check_learned(dense: dict, final: dict | None = None) -> None:
    assert dense["map50"] >= DENSE_MAP50_FLOOR, \
        f"dense mAP50 {dense['map50']:.3f} < {DENSE_MAP50_FLOOR}: the quick preset learned nothing"
    if final is not None:
        assert final["map50"] >= FINAL_MAP50_FLOOR, \
            f"fine-tuned mAP50 {final['map50']:.3f} < {FINAL_MAP50_FLOOR} (dense {dense['map50']:.3f})"
