"""The errors a user can cause: bad input whose message names the file, row/field and what was
expected. The symbolic and pipeline packages raise them; entry scripts print them as one line
(pipeline/errors.py). The llama package has its own (llama/errors.py), since it imports nothing else
of neurosymbolic_llm (its `shown` is this module's `echo` with a longer limit).
"""
from __future__ import annotations

class UserError(Exception):
    """Bad input: the message names the file, row/field and what was expected."""


class DataError(UserError):
    """A CSV or gathered-data file does not hold what it must."""


class EngineMismatchError(UserError):
    """Two VSA engines (codebook, dimension, digits, problem list) that must match do not."""


class ConfigError(UserError):
    """An option or a config file is wrong."""


class OutputError(UserError):
    """An output could not be written (full disk, read-only folder, no permission)."""


class RunLockedError(UserError):
    """Another live process runs the same stage under the same run name."""


class NonFiniteError(UserError):
    """A tensor about to be used or saved holds NaN or infinity (a diverged training, a bad input file)."""


# The longest piece of user input an error message repeats, and the longest message printed: a
# 5,000-digit number or a YAML alias bomb must not become a megabyte-long error line.
ECHO_LIMIT = 80
LINE_LIMIT = 2000


def echo(value, limit: int = ECHO_LIMIT, *, quote: bool = True) -> str:
    """`repr(value)` (str(value) for a non-string, or with quote=False) cut to `limit` characters,
    saying how long it was."""
    text = repr(value) if quote and isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
