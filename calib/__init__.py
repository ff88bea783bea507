"""Calibration sets for INT8 (Python >= 3.6, numpy only): deterministic image selection and batches
preprocessed exactly like the bundle. The device side reads them (jetson/calibset.py) and feeds TensorRT
(jetson/calibrators.py); calib/ imports jetson/, never the reverse. Format: docs/CONTRACTS.md."""
