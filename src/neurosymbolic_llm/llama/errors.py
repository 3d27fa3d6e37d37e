"""Errors of the llama package: bad input a user can cause (a checkpoint, a tokenizer, a size).

The package imports nothing else of `utils`, so it has its own error types; the pipeline's entry
scripts print any `LlamaError` as one line and exit with code 2, as they do for their own errors.
"""


class LlamaError(ValueError):
    """Bad input to the llama package: the message names the file or option and what was expected."""


class CheckpointError(LlamaError):
    """A checkpoint (folder or file) is missing parts or does not match its own description."""
