"""The library: llama/ (the network and how to run it), symbolic/ (the VSA half), pipeline/ (the stages),
hf/ (a trained intervention on a transformers model: ``from neurosymbolic_llm import Intervention``)."""


def __getattr__(name: str):
    if name == "Intervention":  # imported on first use: importing the package loads no torch
        from neurosymbolic_llm.hf import Intervention
        return Intervention
    raise AttributeError(f"module 'neurosymbolic_llm' has no attribute {name!r}")
