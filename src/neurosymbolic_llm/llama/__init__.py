"""The Llama network, its tokenizers and chat formats, checkpoints in Meta, Hugging Face and GGUF
formats (formats.open_checkpoint), and generation."""
