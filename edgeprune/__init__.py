"""edgeprune: L1RR pruning of YOLO-style detectors, from host training to Jetson serving.

This package's top level (this file, cli.py, errors.py, fsio.py and every */cli.py) must stay
importable on Python 3.6 without torch: the device runs `edgeprune serve|bench|detect` through it.
"""
__version__ = "0.1.0"
