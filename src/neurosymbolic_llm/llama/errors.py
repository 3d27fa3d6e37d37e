"""Errors of the llama package: bad input a user can cause (a checkpoint, a tokenizer, a size).

The package imports nothing else of `neurosymbolic_llm`, so it has its own error types; the pipeline's
entry scripts print any `LlamaError` as one line and exit with code 2, as they do for their own
errors. A message is always one line (line breaks of a quoted library message become spaces), and
whatever it quotes from a file goes through `shown` (at most `ECHO_LIMIT` characters).
"""
import re

ECHO_LIMIT = 200


def shown(value, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` (one line), cut to ``limit`` characters, saying how long it was (the same
    form as the pipeline's ``errors.echo``)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class LlamaError(ValueError):
    """Bad input to the llama package: the message names the file or option and what was expected."""

    def __init__(self, message=""):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)))


class CheckpointError(LlamaError):
    """A checkpoint (folder or file) is missing parts or does not match its own description."""
