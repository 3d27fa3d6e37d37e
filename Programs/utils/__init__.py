"""Shared library of the neurosymbolic LLM pipeline (one module per concept)."""
