"""The trained intervention on a stock Hugging Face transformers model (docs/USAGE.md): api.Intervention
(from_pretrained, check, prompt, apply, attach, last_report), hooks.py (where it reads and writes),
weights.py (the model's architecture and content fingerprint). transformers itself is not imported."""
from neurosymbolic_llm.hf.api import Intervention

__all__ = ["Intervention"]
