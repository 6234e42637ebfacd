"""Micro-batching: concurrent requests share one model call.

A CNN forward pass on a batch costs far less than the same images one at a time: on this
project's shared 2-core CPU, seed-mnist takes about 3x as long for 32 images as for 1, so a full
batch is ~10x cheaper per image. The batcher waits at most `max_wait_ms` (5) after the first
waiting request for others to join, and never puts more than `max_images` (32) into one call.
5 ms is small next to one request's own cost (multipart parsing, decoding, the forward pass: a
p50 latency of ~24 ms under load, benchmarks/serve_load.py), so a lone client hardly notices it;
under load requests queue up while a batch computes and the next batch forms without waiting
(8 clients: ~5 images per model call). 32 images of 224x224x3 are 4.8 MB of uint8, so a large
model's batch still fits comfortably in memory.

The model runs in one worker thread, so the event loop keeps accepting and decoding requests
while a batch computes, and torch's own threads are not oversubscribed by parallel calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["MicroBatcher"]


@dataclass
class _Job:
    images: torch.Tensor                       # (n, C, H, W) uint8
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """What the batcher did so far: one entry per model call, the number of images in it."""

    batch_sizes: list[int] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)


class MicroBatcher:
    """Gather concurrent `predict` calls into batches of at most `max_images` images.

    >>> calls = []
    >>> def model(x):
    ...     calls.append(len(x)); return np.zeros((len(x), 2))
    >>> async def three_clients(batcher):
    ...     jobs = [batcher.predict(torch.zeros(n, 1, 4, 4, dtype=torch.uint8)) for n in (1, 2, 3)]
    ...     return [r.shape for r in await asyncio.gather(*jobs)]
    >>> asyncio.run(three_clients(MicroBatcher(model, max_images=8, max_wait_ms=20))), calls
    ([(1, 2), (2, 2), (3, 2)], [6])
    """

    def __init__(self, predict: Callable[[torch.Tensor], np.ndarray], *, max_images: int = 32,
                 max_wait_ms: float = 5.0) -> None:
        self._predict = predict
        self.max_images = max_images
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._held: _Job | None = None         # a job that did not fit into the previous batch

    async def predict(self, images: torch.Tensor) -> np.ndarray:
        """Probabilities (n, classes) for uint8 (n, C, H, W) images, computed in a shared batch."""
        self._ensure_worker()
        job = _Job(images, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    def close(self) -> None:
        """Stop the worker task and the model thread."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_worker(self) -> None:
        # One worker per event loop: test clients may run each request in a fresh loop.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._work())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._next_job()]
            size, deadline = len(jobs[0].images), loop.time() + self.max_wait
            while size < self.max_images:
                try:
                    job = await asyncio.wait_for(self._next_job(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    break
                if size + len(job.images) > self.max_images:
                    self._held = job
                    break
                jobs.append(job)
                size += len(job.images)
            await self._run(jobs)

    async def _next_job(self) -> _Job:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        return await self._queue.get()

    async def _run(self, jobs: list[_Job]) -> None:
        batch = torch.cat([j.images for j in jobs]) if len(jobs) > 1 else jobs[0].images  # (N, C, H, W)
        self.stats.batch_sizes.append(len(batch))
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, batch)
        except Exception as exc:  # the model failed: every waiting request learns why
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        start = 0
        for j in jobs:
            if not j.future.done():  # a client that went away has a cancelled future
                j.future.set_result(probs[start:start + len(j.images)])
            start += len(j.images)
