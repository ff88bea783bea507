"""The inference worker of `edgeprune serve`: the one thread that owns the detector. Python 3.6+.

A CUDA context (TensorRT backend) is bound to the thread that created it, so the worker creates the
detector itself and is the only thread that calls `infer`. It gathers up to `max_batch` queued jobs
within a short window (micro-batching) and runs them as one backend call; `Detector.infer` splits or
pads the batch to a fixed-batch engine.
"""
import logging
import queue
import threading
import time

import numpy as np

log = logging.getLogger("edgeprune.serve")


class Job(object):
    """One image travelling from a connection thread through the queue to the worker and back."""
    __slots__ = ("tensor", "meta", "enqueued", "started", "infer_s", "batch", "output", "error", "cancelled", "done")

    def __init__(self, tensor, meta):
        self.tensor = tensor  # 1x3xHxW float32, letterboxed and normalised
        self.meta = meta  # letterbox scale/pad, to map boxes back
        self.enqueued = time.monotonic()
        self.started = None
        self.infer_s = 0.0
        self.batch = 0
        self.output = None  # this image's slice of every model output (batch dim 1)
        self.error = None
        self.cancelled = False  # set by the connection thread after a 504; the worker skips it
        self.done = threading.Event()


class InferenceWorker(threading.Thread):
    """Loads the detector on its own thread, then runs micro-batches from `jobs` until stopped."""

    def __init__(self, options, jobs, metrics):
        super(InferenceWorker, self).__init__(name="edgeprune-infer", daemon=True)
        self.options = options
        self.jobs = jobs
        self.metrics = metrics
        self.detector = None
        self.load_error = None
        self.loaded = threading.Event()  # set once loading finished, successfully or not
        self.busy_since = None  # monotonic start of the backend call in progress (stuck-engine detection)
        self._stop_event = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._parked = threading.Event()  # set while the worker sits paused, holding no job

    def pause(self, timeout=10.0):
        """Stop taking jobs (queued ones wait, the model stays loaded); returns True once the worker is
        parked, i.e. any batch it was running is done. Lets tests fill the queue deterministically and
        lets tooling hold work during maintenance."""
        self._resume.clear()
        return self._parked.wait(timeout)

    def resume(self):
        self._resume.set()

    def stop(self):
        """Finish the queued jobs, then close the detector and exit."""
        self._stop_event.set()
        self._resume.set()

    def run(self):
        try:
            from .runtime import load_detector
            self.detector = load_detector(self.options.bundle, backend=self.options.backend,
                                          device=self.options.device, precision=self.options.precision,
                                          threads=self.options.threads, cache_dir=self.options.cache_dir,
                                          log=lambda msg: log.info("%s", msg))
        except Exception as exc:  # reported by DetectionServer.wait_until_loaded; the CLI then exits 1
            self.load_error = exc
            self.loaded.set()
            return
        self.loaded.set()
        try:
            self._loop()
        finally:
            self.detector.close()

    def _loop(self):
        while True:
            if not self._resume.is_set():
                self._parked.set()
                self._resume.wait()
                self._parked.clear()
            try:
                first = self.jobs.get(timeout=0.05)
            except queue.Empty:
                if self._stop_event.is_set():
                    return
                continue
            batch = self._gather(first)
            if batch:
                self._run(batch)

    def _gather(self, first):
        batch = [first]
        deadline = time.monotonic() + self.options.batch_window_s
        while len(batch) < self.options.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            batch.append(job)
        return [job for job in batch if not job.cancelled]  # their clients already got 504

    def _run(self, batch):
        started = self.busy_since = time.monotonic()
        try:
            outputs = self.detector.infer(np.concatenate([job.tensor for job in batch], axis=0))
            for i, job in enumerate(batch):
                job.output = [np.array(o[i:i + 1]) for o in outputs]
        except Exception as exc:  # a failed batch fails its jobs (500), never the worker
            log.exception("inference failed on a batch of %d", len(batch))
            for job in batch:
                job.error = exc
        finally:
            self.busy_since = None
        infer_s = time.monotonic() - started
        self.metrics.inference.observe(infer_s)
        self.metrics.batch_size.observe(len(batch))
        for job in batch:
            job.started = started
            job.infer_s = infer_s
            job.batch = len(batch)
            job.done.set()
