"""``python -m dit_translate presets``: the presets and whether their weights can load here."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list presets and whether their weights are available")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dit_translate.presets import MODEL_KINDS, PAIRED_KINDS, list_presets
    from dit_translate.store import availability

    rows = [(p.name, p.kind, availability(p), p.description) for p in list_presets(MODEL_KINDS + PAIRED_KINDS)]
    if args.json:
        print(json.dumps([{"name": n, "kind": k, "available": a.ok, "state": a.state, "untrained": a.untrained,
                           "downloads": a.downloads, "detail": a.detail, "description": d}
                          for n, k, a, d in rows]))
        return 0
    width = max(len(n) for n, *_ in rows)
    print(f"{'name':<{width}}  {'kind':<16}  {'weights':<9}  detail")
    for name, kind, avail, _ in rows:
        print(f"{name:<{width}}  {kind:<16}  {avail.state:<9}  {avail.detail}")
    return 0
