"""The demo model's recipe as settings: `PretrainSettings` (everything that determines the checkpoint;
its hash names the build) and the named presets. No torch here (make-tiny-llama --help lists the
presets). Why each setting is what it is, and what each preset measured: Programs/demo/README.md
("Why it is built the way it is", "The recipe").
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES

RECIPE_VERSION = 3  # bump when the recipe changes in a way the settings do not capture
SETTINGS_FILE = "demo_settings.json"


@dataclass
class PretrainSettings:
    """Everything that determines the demo checkpoint (its hash names the build)."""
    # architecture (Llama 3 layout; SwiGLU hidden = 352 from multiple_of 32)
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    multiple_of: int = 32
    ffn_dim_multiplier: float = 1.0
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # data: the pipeline's prompts over all ten types (the LLM knows every type; the paper's
    # held-out types are held out from the encoder/decoder training, not from the LLM)
    problem_types: list = field(default_factory=lambda: list(PROBLEM_TYPES))
    complexity: int = 2
    limit_solution_digits: bool = True
    x_gt_y: bool = True
    number_prompt_fraction: float = 0.3  # "Repeat 1165." prompts
    big_number_fraction: float = 0.5  # of those, numbers 1000-1998 (two tokens)
    # non-arithmetic chat prompts (read-out target: no problem) and the common-word vocabulary; they
    # close the pipeline's gate on (held-out) non-math prompts. 0 / 0: the arithmetic-only recipe
    non_math_fraction: float = 0.1
    common_token_limit: int = 12000  # word-like ids below this join the vocabulary and the word soup
    # auxiliary read-out: residual entering block aux_layer, last prompt position
    aux_layer: int = 2
    aux_weight: float = 3.0
    aux_bias: bool = True  # False: no bias, like the pipeline's encoder ("no problem" = zero read-out)
    # optimisation
    steps: int = 1000  # 1500 in the study; 1000 measured as good (see report) and a third cheaper
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    save_dtype: str = "float32"  # exact expansion (bfloat16 would halve the 134 MB shard)

    def model_params(self) -> dict:
        """params.json of the saved checkpoint (Meta's keys)."""
        return {"dim": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "vocab_size": 128256, "multiple_of": self.multiple_of,
                "ffn_dim_multiplier": self.ffn_dim_multiplier, "norm_eps": self.norm_eps,
                "rope_theta": self.rope_theta, "use_scaled_rope": False}

    def fingerprint(self) -> str:
        blob = json.dumps({"recipe": RECIPE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Named variants (--preset). `reduced` is for CI (a build in about a minute, weaker model);
# `non_math` did not work for stage 3 and is kept as a record. What each measured after stages 1-3:
# the presets table of Programs/demo/README.md ("The recipe").
PRESETS = {"full": {}, "reduced": {"steps": 250, "warmup_steps": 10, "non_math_fraction": 0.0,
                                   "common_token_limit": 0},
           "arith_only": {"non_math_fraction": 0.0, "common_token_limit": 0},
           "non_math_templates": {"common_token_limit": 0},
           "non_math": {"number_prompt_fraction": 0.2, "non_math_fraction": 0.15,
                        "common_token_limit": 30000, "aux_bias": False}}
