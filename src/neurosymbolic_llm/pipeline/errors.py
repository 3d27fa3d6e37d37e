"""How an entry script ends on an error a user can cause (the error types: neurosymbolic_llm/errors.py,
re-exported here), on Ctrl-C and on SIGTERM.

Entry scripts print a UserError (or the llama package's LlamaError, or any OSError: full disk,
read-only folder, missing permission) as one line on stderr and exit with code 2. Ctrl-C and
SIGTERM end with one line too (exit 130 / 143): a stage that keeps state says where it is.
"""
from __future__ import annotations

import signal
import sys

from neurosymbolic_llm.errors import (ECHO_LIMIT, LINE_LIMIT, ConfigError, DataError,  # noqa: F401  (re-exported)
                                     EngineMismatchError, NonFiniteError, OutputError, RunLockedError, UserError,
                                     echo)
from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError  # noqa: F401  (re-exported)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) ended a stage; `str()` says what was kept and where."""

    def __init__(self, message: str = "interrupted", exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(Interrupted):
    """SIGTERM, delivered as an exception so that the stage can save its state like on Ctrl-C."""

    def __init__(self, message: str = "terminated (SIGTERM)"):
        super().__init__(message, 143)


def os_error_text(exc: OSError) -> str:
    """'path: reason' of an OSError (the path where the OS names one)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _one_line(text: str) -> str:
    """The error line as printed: at most LINE_LIMIT characters."""
    return text if len(text) <= LINE_LIMIT else f"{text[:LINE_LIMIT]}... ({len(text)} characters)"


def _raise_terminated(signum, frame):
    raise Terminated()


def run_entry_point(main, argv=None) -> int:
    """Run an entry script's `main(argv)`: a user error or an OSError becomes one line on stderr and
    exit code 2; Ctrl-C and SIGTERM one line and exit code 130 / 143."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (a test calling main directly): keep the default
        pass
    try:
        return main(argv) or 0
    except (UserError, LlamaError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {_one_line(os_error_text(exc))}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return 130
