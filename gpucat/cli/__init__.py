"""The `gpucat` command line, one module per subcommand (train, evaluate and predict, export,
compare, fetch-data and prepare, info), each with ``add(subparsers)`` and ``run(args)``. User errors
are caught once, here: one message, exit code 2; an interruption exits with 130."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpucat.errors import GpucatError, first_line

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def note(line: str) -> None:
    print(f"gpucat: note: {line}", file=sys.stderr)  # stderr writes each line at once


def get_device(name: str | None, gpu_index: int = 0):
    """The device for --device; ``auto`` falling back to the CPU where a GPU was expected
    says why in one line."""
    from gpucat.backends import get_device as resolve

    return resolve(name, gpu_index, on_fallback=note)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default=None,
        help="where to compute (default: GPUCAT_DEVICE, else auto)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with gpucat's one form for a bad command line: a single `gpucat: error:` line
    (no usage text), exit code 2; subcommands' parsers are of this class too."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the subcommands' parsers, by name

    def __init__(self, **kwargs):
        # no abbreviations: `--lr 0.1` would otherwise quietly be --lr-decay 0.1
        super().__init__(**{"allow_abbrev": False, **kwargs})

    def error(self, message: str):
        cmd = self.prog.removeprefix("gpucat").strip()
        where = f" (see `gpucat {cmd + ' ' if cmd else ''}--help`)"
        print(f"gpucat: error: {message}{where}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

    def parse_args(self, args=None):
        """As argparse's, but a flag the command does not know is the command's error,
        pointing at its --help (argparse leaves it to the top parser; with no command given,
        that is the error)."""
        known, extras = self.parse_known_args(args)
        if extras:
            self.commands[known.command].error(f"unrecognized arguments: {' '.join(extras)}")
        return known


def build_parser() -> argparse.ArgumentParser:
    from gpucat import __doc__ as about
    from gpucat import __version__
    from gpucat.cli import compare, data, evaluate, export, info, train

    parser = _Parser(prog="gpucat", description=about.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpucat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (train, evaluate, export, compare, data, info):
        module.add(sub)
    parser.commands = sub.choices
    return parser


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"  # CuPy's


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except GpucatError as e:
        print(f"gpucat: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file the loaders did not foresee: unreadable, a folder, ...
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"gpucat: error: {where}{e.strerror or e}; check the path and its permissions.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:
        saved = getattr(e, "checkpoint", None)
        where = f" at iteration {e.iteration}" if hasattr(e, "iteration") else ""
        if saved:
            print(
                f"gpucat: interrupted{where}; checkpoint written to {saved} (continue with "
                f"--resume {saved}).",
                file=sys.stderr,
            )
        else:
            print(f"gpucat: interrupted{where}; nothing was saved.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not _out_of_memory(e):
            raise
        print(
            f"gpucat: error: out of memory ({first_line(e)}). Train in smaller pieces: a smaller "
            "--batch-size (or one, for full-batch runs), --solver direct instead of gram, or "
            "--dtype float32.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
