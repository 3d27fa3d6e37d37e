"""The symbolic half: VSA algebra, the engine (codebook, encode/decode), the exact solver, the
problems (generation) and the prompts. Plain torch/numpy/pandas; no language model."""
