"""The ``faceanime`` console command: a thin layer over the Python API.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func`` to a callable taking the parsed namespace. Typed errors
(:class:`~faceanime.errors.FaceAnimeError`) are caught here, once, and printed as one line with
exit status 1; a wrong command line exits with argparse's status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

# torch's OpenMP threads busy-wait for work by default: when another process keeps a core busy,
# the pipeline's many short tensor operations then run 4-40x slower (docs/performance.md). A
# command-line run cannot know its neighbours, so it waits passively unless told otherwise; this
# must be set before torch loads, and nothing above imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from faceanime import __version__
from faceanime.errors import FaceAnimeError, FaceNotFoundError

EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    from faceanime.cli import (
        animate,
        dataset,
        demo,
        dynamics,
        evaluate,
        fit,
        landmarks,
        model,
        predict,
        prepare,
        retarget,
        swap,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="faceanime",
        description="3D-prior face video generation: landmarks, 3D morphable model fitting, "
                    "retargeting, prediction, animation and swapping of faces.",
    )
    parser.add_argument("--version", action="version", version=f"faceanime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    model.register(sub)
    landmarks.register(sub)
    fit.register(sub)
    prepare.register(sub)
    dataset.register(sub)
    retarget.register(sub)
    predict.register(sub)
    animate.register(sub)
    swap.register(sub)
    train.register(sub)
    dynamics.register(sub)
    evaluate.register(sub)
    demo.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"faceanime: warning: {message}", file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every ``finally`` and context manager on
    the way out runs (partial outputs are removed, child processes stopped) as for Ctrl-C.
    A BaseException, like KeyboardInterrupt: ``except Exception`` does not swallow it."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faceanime`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Only the main thread may set handlers (main() also runs from tests and other programs).
    previous = (signal.signal(signal.SIGTERM, _terminate)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        with warnings.catch_warnings():
            # Library warnings (a model file without its optional companions, ...) are for people
            # at a terminal here: one line each, no source location.
            warnings.showwarning = _one_line_warning
            args.func(args)
    except FaceAnimeError as exc:
        message = str(exc)
        # The library cannot know which options the running command has; the command can.
        hint = getattr(args, "face_hint", None)
        if isinstance(exc, FaceNotFoundError) and hint is not None:
            extra = hint(args, message)
            message = f"{message}; {extra}" if extra else message
        print(f"faceanime: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("faceanime: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("faceanime: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
