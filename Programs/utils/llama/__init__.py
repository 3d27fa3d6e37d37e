"""Llama 3 network, tokenizer, checkpoints and generation."""
