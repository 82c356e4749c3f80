"""Load testing the app over HTTP: concurrent ``gradio_client`` clients across its three endpoints.

The target is any running dit-translate app (a URL); ``benchmarks/load.py`` and ``tests/test_load.py``
launch one in-process. Every call has a timeout, so a hung request is counted, never waited on.
Each answer is checked against an oracle: the images the same request returns when it runs alone
(``solo_references``), compared pixel for pixel.

Outcomes: ``ok`` (answer equals the solo answer), ``wrong`` (an answer that differs from it),
``refused`` (the queue was full: gradio_client's ``QueueError``), ``error`` (any other error, also an
answer whose images cannot be read) and ``timeout`` (no answer within the timeout; the job is then
cancelled).
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from PIL import Image

PROMPT = "a comic drawing"
ENDPOINTS = ("/edit", "/guide", "/translate")
STEPS = {"/edit": 2, "/guide": 10, "/translate": 2}
"""Small step counts per endpoint. /guide skips 80% of its grid: 10 steps run 2, one of them guided (the fewest
with a non-empty edit window; 5 would run the unguided baseline under AGG's name, and AGG refuses that)."""
STATUSES = ("ok", "wrong", "refused", "error", "timeout")


@dataclass(frozen=True)
class Call:
    """One request to the app: ``endpoint`` (an api_name) on ``image`` with ``seed`` and ``steps``."""

    endpoint: str
    image: str
    seed: int = 0
    steps: int = 4

    def args(self) -> tuple[Any, ...]:
        """The endpoint's positional inputs, in app.py's order, with the tiny presets."""
        from gradio_client import handle_file

        image = handle_file(self.image)
        if self.endpoint == "/edit":
            return image, PROMPT, "tiny", 0.6, self.steps, 5.0, self.seed, ["sdedit", "correct"], "released", 20
        if self.endpoint == "/guide":  # skip 0.8: the grid runs its last fifth only (a cheap guided call)
            return (image, "text", PROMPT, "", None, "tiny", self.steps, 3.0, self.seed, 0.8, 0.2, 0.7, 0.02, 1,
                    200.0, False)
        if self.endpoint == "/translate":
            return image, "tiny-dit", self.steps, 2.0, self.seed
        raise ValueError(f"unknown endpoint {self.endpoint!r}; choose one of {', '.join(ENDPOINTS)}")


def mix(n: int, images: Iterable[str], seeds: Iterable[int] = (0, 1), steps: dict[str, int] | None = None,
        endpoints: Iterable[str] = ENDPOINTS) -> list[Call]:
    """``n`` calls cycling through ``endpoints``, then images, then seeds (so neighbours differ)."""
    steps = {**STEPS, **(steps or {})}
    combos = [(e, i, s) for s in seeds for i in images for e in endpoints]
    return [Call(e, i, s, steps[e]) for e, i, s in itertools.islice(itertools.cycle(combos), n)]


@dataclass(frozen=True)
class Answer:
    """The images of one response: their sizes (width, height) and a digest of their pixels."""

    sizes: tuple[tuple[int, int], ...]
    digest: str


def answer_images(endpoint: str, output: Any) -> list[str]:
    """Paths of the images a response shows (the gallery, or the before/after pair of /translate)."""
    if endpoint == "/translate":
        return [p["path"] if isinstance(p, dict) else p for p in output[0]]
    gallery = output[0] if endpoint == "/edit" else output[1]
    return [item["image"] for item in gallery]


def read_answer(endpoint: str, output: Any) -> Answer:
    """Decode a response's images into an ``Answer``."""
    sizes, digest = [], hashlib.sha1()
    for path in answer_images(endpoint, output):
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        sizes.append((pixels.shape[1], pixels.shape[0]))
        digest.update(pixels.tobytes())
    return Answer(tuple(sizes), digest.hexdigest())


@dataclass
class Outcome:
    """What became of one call: status, seconds from submit to answer, and the error message if any."""

    call: Call
    status: str
    seconds: float
    message: str = ""
    answer: Answer | None = None
    rss_mb: float = 0.0


def rss_mb() -> float:
    """Resident memory of this process (the in-process app and its clients), MB."""
    return psutil.Process().memory_info().rss / 2**20


@dataclass
class Pending:
    """A submitted call: its job, when it was submitted and when it finished (set by the job's callback)."""

    call: Call
    job: Any
    started: float
    finished: list[float] = field(default_factory=list)

    def seconds(self) -> float:
        return (self.finished or [time.perf_counter()])[0] - self.started


def submit(client, call: Call) -> Pending:
    """Submit ``call`` with ``client`` (returns at once; gradio_client sends it from its own thread)."""
    pending = Pending(call, None, time.perf_counter())
    pending.job = client.submit(*call.args(), api_name=call.endpoint)
    pending.job.add_done_callback(lambda _f: pending.finished.append(time.perf_counter()))
    return pending


def wait(pending: Pending, timeout: float, reference: Answer | None = None) -> Outcome:
    """Wait until ``timeout`` seconds after the submission at most, and classify the outcome."""
    from gradio_client.utils import QueueError

    call = pending.call
    try:
        output = pending.job.result(timeout=max(0.0, pending.started + timeout - time.perf_counter()))
    except FutureTimeout:
        pending.job.cancel()
        return Outcome(call, "timeout", pending.seconds(), f"no answer within {timeout:g} s")
    except QueueError as e:
        return Outcome(call, "refused", pending.seconds(), str(e))
    except Exception as e:  # noqa: BLE001 - any other failure is an outcome to report
        return Outcome(call, "error", pending.seconds(), f"{type(e).__name__}: {e}")
    try:
        answer = read_answer(call.endpoint, output)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:  # an empty or cut download, a bad shape
        return Outcome(call, "error", pending.seconds(), f"unreadable answer: {type(e).__name__}: {e}")
    if reference is not None and answer != reference:
        return Outcome(call, "wrong", pending.seconds(), f"answer differs from the solo answer ({answer.sizes} vs "
                                                         f"{reference.sizes})", answer)
    return Outcome(call, "ok", pending.seconds(), "", answer)


def run_call(client, call: Call, timeout: float, reference: Answer | None = None) -> Outcome:
    """Submit ``call`` with ``client`` and wait for it (at most ``timeout`` seconds)."""
    return wait(submit(client, call), timeout, reference)


def solo_references(client, calls: Iterable[Call], timeout: float) -> dict[Call, Answer]:
    """The answer of each distinct call run alone, one after the other (the oracle; also warms the app up)."""
    out = {}
    for call in dict.fromkeys(calls):
        outcome = run_call(client, call, timeout)
        if outcome.status != "ok":
            raise RuntimeError(f"solo reference {call} failed: {outcome.status} {outcome.message}")
        out[call] = outcome.answer
    return out


@dataclass
class QueueMonitor:
    """Polls the app's ``/gradio_api/queue/status`` (waiting events) every ``interval`` seconds in a thread."""

    url: str
    interval: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __enter__(self) -> QueueMonitor:
        import httpx

        self._stop = threading.Event()
        start = time.perf_counter()
        status = self.url.rstrip("/") + "/gradio_api/queue/status"

        def poll() -> None:
            with httpx.Client(timeout=5) as http:
                while not self._stop.wait(self.interval):
                    try:
                        size = http.get(status).json()["queue_size"]
                    except (httpx.HTTPError, KeyError, ValueError):
                        continue
                    self.samples.append((time.perf_counter() - start, int(size)))

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_size(self) -> int:
        return max((s for _, s in self.samples), default=0)


def _clients(url: str, n: int) -> list:
    from gradio_client import Client

    return [Client(url, verbose=False) for _ in range(n)]


def sustained(url: str, calls: list[Call], clients: int, timeout: float,
              references: dict[Call, Answer] | None = None,
              on_outcome: Callable[[Outcome], None] | None = None, deadline: float | None = None) -> list[Outcome]:
    """``clients`` threads, each with its own ``gradio_client.Client``, run ``calls`` one at a time each
    (a closed loop: a client sends its next call when the previous one is answered); no call starts
    after ``deadline`` (a ``time.perf_counter()`` value). Each outcome records this process's RSS
    when it completed."""
    work: Iterator[Call] = iter(calls)
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def worker(client) -> None:
        while True:
            with lock:
                call = next(work, None)
            if call is None or (deadline is not None and time.perf_counter() > deadline):
                return
            outcome = run_call(client, call, timeout, (references or {}).get(call))
            outcome.rss_mb = rss_mb()
            with lock:
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in _clients(url, clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def burst(url: str, calls: list[Call], clients: int, timeout: float,
          references: dict[Call, Answer] | None = None) -> list[Outcome]:
    """Submit all ``calls`` at once, spread over ``clients`` clients, then wait for each (open loop:
    more calls in flight than the app runs plus queues, so some must be refused)."""
    pool = _clients(url, clients)
    pending = [submit(pool[i % clients], call) for i, call in enumerate(calls)]
    return [wait(p, timeout, (references or {}).get(p.call)) for p in pending]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation), None for no values."""
    return float(np.percentile(values, q)) if values else None


def summarize(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    """Counts per status, throughput of answered calls, latency percentiles (all and per endpoint) and
    the distinct refusal/error messages."""
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    answered = [o for o in outcomes if o.status in ("ok", "wrong")]

    def latency(rows: list[Outcome]) -> dict[str, Any]:
        values = [o.seconds for o in rows]
        return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
                "max": max(values, default=None), "mean": statistics.fmean(values) if values else None}

    return {
        "calls": len(outcomes),
        "counts": counts,
        "wall_seconds": seconds,
        "throughput_per_s": len(answered) / seconds if seconds > 0 else None,
        "latency": latency(answered),
        "latency_by_endpoint": {e: latency([o for o in answered if o.call.endpoint == e]) for e in ENDPOINTS},
        "refusal_latency": latency([o for o in outcomes if o.status == "refused"]),
        "messages": sorted({f"{o.status}: {o.message}" for o in outcomes if o.status not in ("ok",)}),
    }


def endpoint_limits(demo) -> dict[str, dict[str, Any]]:
    """The concurrency limit and time limit (``app.TIME_LIMITS``, enforced per step) of each named endpoint."""
    import app

    out = {}
    for fn in demo.fns.values():
        if fn.api_name and f"/{fn.api_name}" in ENDPOINTS:
            out[f"/{fn.api_name}"] = {"concurrency_limit": fn.concurrency_limit,
                                      "time_limit": app.TIME_LIMITS[fn.api_name]}
    return out
