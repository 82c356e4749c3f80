"""The one table of knob bounds: what the CLI, the app, the API, the presets and the methods accept.

``check(name, value)`` validates a knob by its table entry (``ValueError`` naming it otherwise) and
returns it (an ``int`` for whole-number knobs); ``check_range`` and ``check_int`` are the primitives.
Values are refused if they are bools, strings, NaN or infinite. Importable without torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

SEED_MAX = 2**64 - 1
"""The largest seed a torch generator takes (seeds are whole numbers in [0, SEED_MAX])."""


@dataclass(frozen=True)
class Bound:
    """``low (<|<=) value <= high``; ``whole`` knobs are whole numbers (``high=None``: no upper bound)."""

    low: float
    high: float | None
    low_open: bool = False
    whole: bool = False


BOUNDS: dict[str, Bound] = {
    "steps": Bound(1, None, whole=True),
    "inversion_steps": Bound(1, None, whole=True),
    "pnp_inversion_steps": Bound(1, None, whole=True),
    "seed": Bound(0, SEED_MAX, whole=True),
    "strength": Bound(0.0, 1.0, low_open=True),
    "guidance": Bound(0.0, 100.0),
    "eta": Bound(0.0, 1.0),
    "tau_attn": Bound(0.0, 1.0),
    "tau_feat": Bound(0.0, 1.0),
    "colorfulness": Bound(0.0, 4.0),
    "size": Bound(16, 4096, whole=True),
}
"""Step counts have no bound here: each model refuses more steps than its DDIM grid has, naming its own
maximum (``diffusion.ddim.max_steps``)."""

MAX_TEXT_CHARS = 20_000
"""Longest prompt or guidance text accepted, in characters. CLIP reads 77 tokens; the tokenizer's time and
memory grow with the whole text (about 100 MB per MB), so longer text is refused before it is tokenized."""


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a number (not a bool or a string) with ``low (<|<=) value <= high``."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = number and value == value and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an ``int``; ``ValueError`` unless it is a whole number (``6`` or ``6.0``; not ``6.5``, NaN,
    infinity, ``True`` or a string) in ``[low, high]`` (no upper bound when ``high`` is None)."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        whole = math.isfinite(float(value)) and float(value).is_integer()
    if whole and low <= int(value) and (high is None or int(value) <= high):
        return int(value)
    bounds = f"at least {low}" if high is None else f"in [{low}, {high}]"
    raise ValueError(f"{name} must be a whole number {bounds}, got {value!r}")


def check(name: str, value: object, label: str | None = None) -> float | int:
    """``value`` checked against ``BOUNDS[name]`` (an ``int`` for whole knobs); errors name ``label or name``."""
    bound = BOUNDS[name]
    label = label or name
    if bound.whole:
        return check_int(label, value, int(bound.low), None if bound.high is None else int(bound.high))
    check_range(label, value, bound.low, bound.high, low_open=bound.low_open)
    return value


def check_text(name: str, value: object) -> str | None:
    """``value`` if it is ``None`` or text of at most ``MAX_TEXT_CHARS`` characters that is valid Unicode (no lone
    surrogate, which is how Python passes an undecodable byte of the command line); ``ValueError`` naming it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is too long: {len(value)} characters, the limit is {MAX_TEXT_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid text: character {e.start} is an undecodable byte or a lone "
                         "surrogate") from None
    return value
