"""What every command-line entry point shares: one error line for user mistakes, help that shows defaults.

A user mistake (a bad flag, file, data field, checkpoint or setting) is a `UserError`. Entry points
wrap their main() in `run`, which prints it as one line and exits non-zero, without a traceback:

    error: <what> (<flag, file or field>, <value>): <what to do>

`--debug` (or MINIBERT_DEBUG=1) shows the traceback instead. Any other exception is a bug and keeps
its traceback.
"""
import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from minicore.errors import UserError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and shows every default; a None default ("not given") is left to
    the option's help text to explain, instead of a bare "(default: None)"."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


# The flags whose value is a path (a list of paths for --denoise-text), in the three scripts and predict.py; of
# these, what a run reads (--overwrite must not clear it).
INPUT_PATH_FLAGS = ("--model", "--data-dir", "--train-file", "--validation-file", "--test-file", "--dev-file",
                    "--denoise-text", "--input")
PATH_FLAGS = (*INPUT_PATH_FLAGS, "--output-dir", "--output")

# What argparse takes for a value rather than an option when it starts with "-": its own pattern knows only -1 and
# -.5, so "--lr -1e-5" was "expected one argument"; now the flag's type judges the number (inf and nan included).
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors, defaults in --help, the --debug flag of `run`, negative numbers in any
    notation as values, and ~ expanded in every path flag (the shell leaves it in --output-dir=~/x)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER
        self.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if set(action.option_strings) & set(PATH_FLAGS) and value is not None:
                setattr(namespace, action.dest, [_expand_user(v) for v in value] if isinstance(value, list)
                        else _expand_user(value))
        return namespace, extras

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_files(paths: Iterable[tuple[str, str | None]], fix: str = "check the path") -> None:
    """Each (flag, path) whose path is given names a file, else a UserError naming the flag."""
    for flag, path in paths:
        if path is not None and not Path(path).is_file():
            raise UserError("no such file", flag, path, fix)


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that the error line starts a line of its own."""
    for bar in list(tqdm._instances):
        bar.close()


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Call main(argv); a UserError, or an OSError (disk full, permission denied), becomes one line on
    stderr and exit status 1. Ctrl-C exits with status 130."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("MINIBERT_DEBUG", "") not in ("", "0")
    try:
        main(argv)
    except (UserError, OSError) as e:
        if debug:
            raise
        _end_progress_bars()
        if isinstance(e, OSError) and e.filename:
            e = f"{e.strerror or e} ({e.filename})"
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if debug:
            raise
        _end_progress_bars()
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _expand_user(path):
    """~ and ~user expanded, the value keeping its type (a str stays a str, a Path a Path)."""
    return type(path)(os.path.expanduser(path))
