"""What every command shares: the parser with the CLI's error contract, argument types, progress bars,
quiet libraries, and the errors that are the user's (exit status 2 and one line on stderr)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import NoReturn

from dit_translate.errors import DitTranslateError

USER_ERRORS = (DitTranslateError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError)
"""Errors reported as one line on stderr with exit status 2: this package's own (``errors``), bad values,
and files that cannot be read or written."""


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr and exit status 2 (``--help`` shows usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_dtype(p: argparse.ArgumentParser) -> None:
    """``--dtype``: the weights' precision (auto: float16 on CUDA, float32 elsewhere)."""
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights precision (auto: float16 on CUDA, float32 on CPU; bfloat16 runs on CPU too)")


def store_for(args: argparse.Namespace):
    """The model store for a command: the process-wide one, or one holding the weights in ``--dtype``."""
    from dit_translate.store import ModelStore, default_store

    dtype = getattr(args, "dtype", "auto")
    return default_store() if dtype == "auto" else ModelStore(dtype=dtype)


def add_output_size(p: argparse.ArgumentParser) -> None:
    """``--output-size``: the written image at the input's size (default) or the model's working size."""
    p.add_argument("--output-size", default="input", choices=("input", "working"),
                   help="write the result at the input's size (default; brought back up from the working size) "
                        "or at the working size")


def write_result(result, args: argparse.Namespace) -> tuple[int, int]:
    """Save ``result.image`` to ``args.out`` at ``args.output_size``; returns the written (width, height)."""
    from dit_translate.images import save_image, to_pil
    from dit_translate.sizes import output_image

    img = output_image(to_pil(result.image), result.extras["input_size"], args.output_size)
    save_image(img, args.out)
    return img.size


def runs_on(store) -> dict[str, str]:
    """The ``--json`` fields saying where a command ran: ``{"device": "cpu", "dtype": "float32"}``."""
    return {"device": str(store.device), "dtype": str(store.dtype).removeprefix("torch.")}


def quiet_libraries() -> None:
    """Keep stderr for our own messages: no library progress bars or info logs."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


def tqdm_progress():
    """A ``Progress`` callback drawing one tqdm bar per phase on stderr."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, desc: str) -> None:
        bar = bars.get(desc)
        if bar is None:
            bar = bars[desc] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr)
