"""Prepare the next training batch on the device while the current one trains.

With the tensor pipeline the images are decoded and augmented on the training device. Done in
the training loop, that work would wait behind the step's kernels (and the step behind it). Here
a background thread runs it one or two batches ahead; on CUDA it runs on its own stream and the
training stream waits only for that batch's event, so decoding overlaps the step.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import torch

_END = object()


class DevicePrefetcher:
    def __init__(self, loader: Iterable, to_device: Callable, device: torch.device,
                 depth: int = 2):
        self.loader = loader
        self.to_device = to_device          # batch -> (x, targets) on the device
        self.device = device
        self.depth = depth

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(device=self.device) if cuda else None

        def work() -> None:
            try:
                if cuda:
                    torch.cuda.set_device(self.device)
                for batch in self.loader:
                    if stop.is_set():
                        return
                    if cuda:
                        with torch.cuda.stream(stream):
                            item = self.to_device(batch)
                            event = torch.cuda.Event()
                            event.record(stream)
                    else:
                        item, event = self.to_device(batch), None
                    q.put((item, event))
                q.put(_END)
            except BaseException as err:     # re-raised in the training thread
                q.put(err)

        thread = threading.Thread(target=work, name="pumlc-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                got = q.get()
                if got is _END:
                    return
                if isinstance(got, BaseException):
                    raise got
                item, event = got
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for t in item:
                        if isinstance(t, torch.Tensor) and t.is_cuda:
                            t.record_stream(current)
                yield item
        finally:
            stop.set()
            while thread.is_alive():          # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.1)
