"""YOLOv5-style detector family built from a plain, JSON-serialisable spec (see spec.py)."""
