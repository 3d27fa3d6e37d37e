"""Errors a user can cause. Entry scripts print their message on one line and exit with code 2."""

from utils.llama.errors import CheckpointError, LlamaError  # noqa: F401  (re-exported)


class UserError(Exception):
    """Bad input: the message names the file, row/field and what was expected."""


class DataError(UserError):
    """A CSV or gathered-data file does not hold what it must."""


class EngineMismatchError(UserError):
    """Two VSA engines (codebook, dimension, digits, problem list) that must match do not."""


class ConfigError(UserError):
    """An option or a config file is wrong."""


def run_entry_point(main, argv=None) -> int:
    """Run an entry script's `main(argv)`; a UserError becomes one line on stderr and exit code 2."""
    import sys

    try:
        return main(argv) or 0
    except (UserError, LlamaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
