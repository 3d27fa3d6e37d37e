"""What a loaded transformers model is, in the project's terms: its ``ModelArgs`` (from its config, by
the rule that reads a Hugging Face folder's config.json) and its weight samples (the fingerprint
recipe of neurosymbolic_llm/llama/fingerprint.py, read from the model's own parameters).

The parameters are Hugging Face's: q/k rows in rotate-half order, so the sampled positions of Meta's
layout are looked up there as for a Hugging Face folder (hf_checkpoint.rotate_half_index). A model
transformers loaded from a GGUF file holds the dequantized float32 values: fingerprint.compare takes
them as that GGUF's model. transformers itself is never imported here.
"""
from __future__ import annotations

from typing import Any

import torch

from neurosymbolic_llm.llama.errors import CheckpointError
from neurosymbolic_llm.llama.fingerprint import WeightSamples, kind_of, weight_samples
from neurosymbolic_llm.llama.hf_checkpoint import config_args, rotate_half_index, state_key
from neurosymbolic_llm.llama.model import ModelArgs
from neurosymbolic_llm.pipeline.errors import EngineMismatchError
from neurosymbolic_llm.pipeline.maps import model_info


def decoder_layers(model) -> list:
    """The decoder blocks of a Llama-architecture causal LM (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise EngineMismatchError(f"{type(model).__name__}: not a Llama-architecture causal LM "
                                  f"(no model.layers); LlamaForCausalLM and its kind are supported")
    return list(layers)


def model_args(model) -> ModelArgs:
    """The project's ModelArgs of a transformers model (one line naming the field it refuses)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise EngineMismatchError(f"{type(model).__name__}: not a transformers model (no config)")
    c = config.to_dict()
    c.setdefault("tie_word_embeddings", getattr(config, "tie_word_embeddings", False))
    try:
        return config_args(c, f"{type(model).__name__}.config")
    except CheckpointError as exc:
        raise EngineMismatchError(str(exc)) from None


def model_samples(model, args: ModelArgs) -> WeightSamples:
    """The weight samples of the model's parameters (a few thousand values, whatever its size)."""
    state = {}
    for name, t in model.state_dict().items():
        key = state_key(name)
        if key is not None:
            state[key] = t
    heads = {"attention.wq": args.n_heads, "attention.wk": args.n_kv_heads}

    def read(key, shape, idx):
        t = state.get(key)
        if t is None or tuple(t.shape) != shape:
            raise EngineMismatchError(f"{type(model).__name__}: weight {key!r} is missing or has shape "
                                      f"{None if t is None else tuple(t.shape)}, its config implies {shape}")
        flat = torch.as_tensor(rotate_half_index(key, shape, idx, heads), device=t.device)
        return kind_of(t.dtype), t.detach().reshape(-1)[flat].float().cpu().numpy()

    return weight_samples(args, read)


def model_info_of(model) -> dict[str, Any]:
    """maps.model_info of a transformers model: what an intervention artefact is checked against."""
    args = model_args(model)
    samples = model_samples(model, args)
    return model_info(samples.digest(), args.dim, args.n_layers, samples)
