"""Calibration sets for INT8 (Python >= 3.6, numpy only): deterministic image selection, batches
preprocessed exactly like the bundle, and TensorRT calibrators reading them. Format: docs/CONTRACTS.md."""
