"""Load benchmark of the app: concurrent gradio_client clients across /edit, /guide and /translate.

    python benchmarks/load.py [--out benchmarks/results] [--clients 6] [--requests 200] [--burst 40]
                              [--timeout 300] [--max-minutes 9] [--rss-bound-mb 128] [--name load]

Launches ``app.build_demo()`` in-process on 127.0.0.1 with the tiny presets and the queue settings of
``app.main`` (``app.QUEUE``: ``max_size=16``, ``default_concurrency_limit=1``; each endpoint's own limits
are read from the app), then runs three phases with ``benchmarks/loadtest.py``:

1. warm-up: each distinct request once, alone (the oracle answers; loads every model);
2. sustained: ``--clients`` closed-loop clients send ``--requests`` requests (throughput, latency,
   resident memory after each answer; every answer must equal its solo answer);
3. burst: ``--burst`` requests submitted at once, more than the app runs plus queues, so the queue
   fills and the rest must be refused at once with gradio's queue-full message, none hanging;

and finally one more request, which must be answered. Writes load.json, load.md and load.png
(``--name`` changes the stem, e.g. for a run under ``MALLOC_ARENA_MAX=2``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

from benchmarks import loadtest  # noqa: E402
from benchmarks.common import (  # noqa: E402
    machine_info,
    machine_summary,
    release_free_memory,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
IMAGES = [str(ROOT / "assets" / "examples" / name) for name in ("chelsea.jpg", "coffee.jpg")]
SEEDS = (0, 1)


def _rows(outcomes: list[loadtest.Outcome]) -> list[dict[str, Any]]:
    return [{"endpoint": o.call.endpoint, "image": Path(o.call.image).name, "seed": o.call.seed,
             "status": o.status, "seconds": o.seconds, "rss_mb": o.rss_mb, "message": o.message} for o in outcomes]


def run(clients: int, requests: int, burst: int, timeout: float, max_minutes: float, rss_bound_mb: float
        ) -> dict[str, Any]:
    """Launch the app, run the three phases and the final request; the full report."""
    from gradio_client import Client

    import app

    demo = app.build_demo()
    _, url, _ = demo.queue(**app.QUEUE).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                                               max_file_size=app.MAX_FILE_SIZE)
    try:
        solo = Client(url, verbose=False)
        distinct = loadtest.mix(len(loadtest.ENDPOINTS) * len(IMAGES) * len(SEEDS), IMAGES, SEEDS)
        print(f"warm-up: {len(distinct)} solo requests", file=sys.stderr, flush=True)
        start = time.perf_counter()
        references = loadtest.solo_references(solo, distinct, timeout)
        warmup_seconds = time.perf_counter() - start
        release_free_memory()
        rss_warm = loadtest.rss_mb()

        print(f"sustained: {requests} requests from {clients} clients", file=sys.stderr, flush=True)

        def progress(outcome: loadtest.Outcome) -> None:
            print(f"  {outcome.call.endpoint:10s} {outcome.status:7s} {outcome.seconds:6.2f} s "
                  f"RSS {outcome.rss_mb:.0f} MB", file=sys.stderr, flush=True)

        start = time.perf_counter()
        with loadtest.QueueMonitor(url) as sustained_queue:
            sustained = loadtest.sustained(url, loadtest.mix(requests, IMAGES, SEEDS), clients, timeout, references,
                                           on_outcome=progress, deadline=start + 60 * max_minutes)
        sustained_seconds = time.perf_counter() - start
        release_free_memory()
        rss_after = loadtest.rss_mb()

        print(f"burst: {burst} requests at once", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with loadtest.QueueMonitor(url, interval=0.05) as burst_queue:
            bursting = loadtest.burst(url, loadtest.mix(burst, IMAGES, SEEDS), clients, timeout, references)
        burst_seconds = time.perf_counter() - start
        final = loadtest.run_call(solo, distinct[0], timeout, references[distinct[0]])
    finally:
        demo.close()
    served = [o for o in sustained if o.status in ("ok", "wrong")]
    last_half = served[len(served) // 2:]
    slope = (np.polyfit(np.arange(len(last_half)), [o.rss_mb for o in last_half], 1)[0] * 100
             if len(last_half) > 2 else None)
    return {
        "machine": machine_info(),
        "config": {
            "clients": clients, "requests": requests, "burst": burst, "timeout_s": timeout, "max_minutes": max_minutes,
            "queue_max_size": app.QUEUE["max_size"], "endpoint_limits": loadtest.endpoint_limits(demo),
            "steps": loadtest.STEPS, "images": [Path(i).name for i in IMAGES], "seeds": list(SEEDS),
            "mix": "round robin /edit (SDEdit + correction), /guide (AGG, text), /translate (tiny DiT), "
                   "then images, then seeds",
            "rss": "resident set size of the whole process (app server and client threads), psutil; warm and "
                   "after-requests values after gc + malloc_trim",
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        },
        "warmup": {"calls": len(distinct), "seconds": warmup_seconds},
        "sustained": {**loadtest.summarize(sustained, sustained_seconds), "max_queue": sustained_queue.max_size,
                      "rows": _rows(sustained)},
        "burst": {**loadtest.summarize(bursting, burst_seconds), "max_queue": burst_queue.max_size,
                  "queue_samples": burst_queue.samples, "rows": _rows(bursting)},
        "final": {"status": final.status, "seconds": final.seconds, "message": final.message},
        "memory": {"warm_mb": rss_warm, "after_mb": rss_after, "growth_mb": rss_after - rss_warm,
                   "requests_after_warmup": len(sustained), "bound_mb": rss_bound_mb,
                   "within_bound": rss_after - rss_warm <= rss_bound_mb,
                   "slope_mb_per_100_requests_last_half": slope},
    }


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: conditions, the three phases and the memory verdict."""
    c, s, b, m = report["config"], report["sustained"], report["burst"], report["memory"]
    limits = ", ".join(f"`{e}` {v['concurrency_limit']} (time limit {v['time_limit']} s)"
                       for e, v in c["endpoint_limits"].items())
    lines = [
        "# Load benchmark: the app under concurrent gradio_client clients",
        "",
        machine_summary(report["machine"]),
        "",
        f"App launched in-process on 127.0.0.1 with the tiny presets; queue max_size {c['queue_max_size']}; "
        f"concurrency limits {limits}. Requests: {c['mix']}; steps {c['steps']}; images {', '.join(c['images'])}; "
        f"seeds {c['seeds']}. Every call has a {c['timeout_s']:g} s timeout; every answer is compared pixel for "
        "pixel with the same request's solo answer. RSS: " + c["rss"] + "; MALLOC_ARENA_MAX="
        + str(c.get("malloc_arena_max") or "unset (glibc default: 8 arenas per core)") + ".",
        "",
        f"Warm-up: {report['warmup']['calls']} solo requests in {report['warmup']['seconds']:.1f} s "
        "(includes loading every model).",
        "",
        "| phase | calls | ok | wrong | refused | error | timeout | wall s | answered/s | p50 s | p95 s | max s | "
        "max queue |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phase in (("sustained", s), ("burst", b)):
        k, lat = phase["counts"], phase["latency"]
        lines.append(
            f"| {name} ({c['clients']} clients{'' if name == 'sustained' else ', all at once'}) | {phase['calls']} | "
            f"{k['ok']} | {k['wrong']} | {k['refused']} | {k['error']} | {k['timeout']} | {phase['wall_seconds']:.1f} | "
            f"{phase['throughput_per_s']:.3f} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['max'])} | "
            f"{phase['max_queue']} |")
    lines += ["", "Sustained latency per endpoint (answered calls, seconds from submit to answer):", "",
              "| endpoint | n | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    for e, lat in s["latency_by_endpoint"].items():
        lines.append(f"| `{e}` | {lat['n']} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['max'])} |")
    refused = b["refusal_latency"]
    lines += [
        "",
        f"Burst: {b['counts']['refused']} of {b['calls']} refused, after p50 {_ms(refused['p50'])} s / "
        f"max {_ms(refused['max'])} s; messages: " + ("; ".join(f"`{x}`" for x in b["messages"]) or "none") + ".",
        f"Final request after the burst: {report['final']['status']} in {report['final']['seconds']:.2f} s.",
        "",
        f"Memory: RSS {m['warm_mb']:.0f} MB when warm, {m['after_mb']:.0f} MB after {m['requests_after_warmup']} "
        f"more requests: growth {m['growth_mb']:+.0f} MB against a bound of {m['bound_mb']:g} MB "
        f"({'within' if m['within_bound'] else 'EXCEEDS'} the bound). Untrimmed RSS after the last answer: "
        f"{s['rows'][-1]['rss_mb']:.0f} MB, rising {_ms(m['slope_mb_per_100_requests_last_half'])} MB per 100 "
        "requests over the last half.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Three panels: sustained latency histogram per endpoint, RSS after each answer, burst queue size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    lat, mem, queue = fig.subplots(1, 3)
    rows = [r for r in report["sustained"]["rows"] if r["status"] in ("ok", "wrong")]
    bins = np.linspace(0, max((r["seconds"] for r in rows), default=1.0), 30)
    for endpoint in loadtest.ENDPOINTS:
        lat.hist([r["seconds"] for r in rows if r["endpoint"] == endpoint], bins=bins, alpha=0.6, label=endpoint)
    for q, style in (("p50", "--"), ("p95", ":")):
        value = report["sustained"]["latency"][q]
        if value is not None:
            lat.axvline(value, color="black", linestyle=style, label=f"{q} {value:.1f} s")
    lat.set(xlabel="seconds from submit to answer", ylabel="requests",
            title=f"Sustained: {report['config']['clients']} clients")
    lat.legend(fontsize=8)
    m = report["memory"]
    mem.plot(np.arange(1, len(rows) + 1), [r["rss_mb"] for r in rows], lw=1, label="RSS after each answer (no trim)")
    mem.axhline(m["warm_mb"], color="grey", linestyle="--", label=f"warm {m['warm_mb']:.0f} MB")
    mem.axhline(m["warm_mb"] + m["bound_mb"], color="red", linestyle=":", label=f"bound +{m['bound_mb']:g} MB")
    mem.scatter([len(rows)], [m["after_mb"]], color="black", zorder=3,
                label=f"after {m['requests_after_warmup']}, trimmed: {m['after_mb']:.0f} MB")
    mem.set(xlabel="answered requests after warm-up", ylabel="MB",
            title="Resident memory (warm and after: gc + malloc_trim)")
    mem.legend(fontsize=8)
    samples = report["burst"]["queue_samples"]
    queue.step([t for t, _ in samples], [n for _, n in samples], where="post", label="waiting events")
    queue.axhline(report["config"]["queue_max_size"], color="red", linestyle=":", label="max_size")
    k = report["burst"]["counts"]
    queue.set(xlabel="seconds since the burst", ylabel="queue size",
              title=f"Burst of {report['burst']['calls']}: {k['ok']} answered, {k['refused']} refused")
    queue.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients in the sustained phase")
    parser.add_argument("--requests", type=int, default=200, help="requests of the sustained phase")
    parser.add_argument("--burst", type=int, default=40, help="requests submitted at once (> 3 running + 16 queued)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a call may take before it counts as hung")
    parser.add_argument("--max-minutes", type=float, default=9.0, help="no sustained request starts after this")
    parser.add_argument("--rss-bound-mb", type=float, default=128.0, help="allowed RSS growth after warm-up")
    parser.add_argument("--name", default="load", help="file name stem of the results (default: load)")
    args = parser.parse_args()
    report = run(args.clients, args.requests, args.burst, args.timeout, args.max_minutes, args.rss_bound_mb)
    paths = write_results(report, args.out, args.name, markdown, plot)
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)


if __name__ == "__main__":
    main()
