"""The network: numerics against transformers, KV cache, padding, output positions, hooks."""
import math

import pytest
import torch

from neurosymbolic_llm.llama.model import (ModelArgs, Transformer, apply_rope_scaling, rope_frequencies)

# A tiny config with GQA whose RoPE wavelengths (head_dim 16, theta 1e4: 6.3 ... 19869 tokens) fall in
# all three Llama 3.1 bands for an original context of 512 (< 128 kept, 128..512 blended, > 512 / 8).
HF_PARAMS = dict(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32,
                 ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=10000.0, use_scaled_rope=True,
                 rope_original_max_seq_len=512)


def _model(params, seed=0):
    return Transformer(ModelArgs.from_params(params)).init_weights(seed=seed)


def _meta_to_hf(model: Transformer) -> dict:
    """Meta state dict -> transformers' LlamaForCausalLM names, q/k rows from interleaved to split-half."""
    a = model.args
    hd = a.head_dim

    def permute(w, n_heads):  # per head: rows (pair, re/im) -> (re/im, pair)
        return w.view(n_heads, hd // 2, 2, a.dim).transpose(1, 2).reshape(n_heads * hd, a.dim)

    sd = model.state_dict()
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"],
           "model.norm.weight": sd["norm.weight"], "lm_head.weight": sd["output.weight"]}
    for i in range(a.n_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        out[q + "self_attn.q_proj.weight"] = permute(sd[p + "attention.wq.weight"], a.n_heads)
        out[q + "self_attn.k_proj.weight"] = permute(sd[p + "attention.wk.weight"], a.n_kv_heads)
        out[q + "self_attn.v_proj.weight"] = sd[p + "attention.wv.weight"]
        out[q + "self_attn.o_proj.weight"] = sd[p + "attention.wo.weight"]
        out[q + "mlp.gate_proj.weight"] = sd[p + "feed_forward.w1.weight"]
        out[q + "mlp.up_proj.weight"] = sd[p + "feed_forward.w3.weight"]
        out[q + "mlp.down_proj.weight"] = sd[p + "feed_forward.w2.weight"]
        out[q + "input_layernorm.weight"] = sd[p + "attention_norm.weight"]
        out[q + "post_attention_layernorm.weight"] = sd[p + "ffn_norm.weight"]
    return out


def hf_model(model: Transformer, attn="sdpa"):
    transformers = pytest.importorskip("transformers")
    a = model.args
    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    if a.use_scaled_rope:
        rope = {"rope_type": "llama3", "rope_theta": a.rope_theta, "factor": a.rope_scale_factor,
                "low_freq_factor": a.rope_low_freq_factor, "high_freq_factor": a.rope_high_freq_factor,
                "original_max_position_embeddings": a.rope_original_max_seq_len}
    cfg = transformers.LlamaConfig(
        vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.ffn_hidden_dim,
        num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads,
        rms_norm_eps=a.norm_eps, max_position_embeddings=131072, rope_parameters=rope,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = attn
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.load_state_dict(_meta_to_hf(model), strict=True)
    return hf


def test_rope_bands_cover_all_three():
    args = ModelArgs.from_params(HF_PARAMS)
    base = rope_frequencies(ModelArgs.from_params({**HF_PARAMS, "use_scaled_rope": False}))
    scaled = rope_frequencies(args)
    wavelen = 2 * math.pi / base
    high, low = wavelen < 512 / 4, wavelen > 512 / 1
    mid = ~(high | low)
    assert high.any() and low.any() and mid.any()
    assert torch.equal(scaled[high], base[high])
    torch.testing.assert_close(scaled[low], base[low] / 8)
    assert ((scaled[mid] < base[mid]) & (scaled[mid] > base[mid] / 8)).all()
    # the released 3.1 constants: 8B head_dim 128, theta 5e5, context 8192
    f = apply_rope_scaling(torch.tensor([1.0, 2 * math.pi / 10000]), 8.0, 1.0, 4.0, 8192)
    torch.testing.assert_close(f, torch.tensor([1.0, 2 * math.pi / 10000 / 8]))


def test_ffn_hidden_dim_of_8b():
    args = ModelArgs.from_params({"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8,
                                  "vocab_size": 128256, "ffn_dim_multiplier": 1.3,
                                  "multiple_of": 1024, "unknown_key": 1})
    assert args.ffn_hidden_dim == 14336 and args.head_dim == 128


@torch.no_grad()
def test_logits_match_transformers():
    model = _model(HF_PARAMS, seed=1)
    hf = hf_model(model)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, HF_PARAMS["vocab_size"], (2, 300), generator=g)
    ours = model(tokens)
    ref = hf(input_ids=tokens).logits.float()
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-4, rel
    # the scaling matters over 300 tokens: without it the logits differ clearly
    unscaled = Transformer(ModelArgs.from_params({**HF_PARAMS, "use_scaled_rope": False}))
    unscaled.load_state_dict(model.state_dict())
    assert (unscaled(tokens) - ref).norm() / ref.norm() > 1e-3


@torch.no_grad()
def test_logits_match_transformers_unscaled_rope_padded():
    params = {**HF_PARAMS, "use_scaled_rope": False, "n_kv_heads": 4}
    model = _model(params, seed=2)
    hf = hf_model(model)
    tokens = torch.randint(0, params["vocab_size"], (1, 50), generator=torch.Generator().manual_seed(1))
    ref = hf(input_ids=tokens).logits.float()
    padded = torch.cat([torch.zeros(1, 7, dtype=torch.long), tokens], 1)
    ours = model(padded, pad_lengths=torch.tensor([7]))[:, 7:]
    assert (ours - ref).norm() / ref.norm() < 1e-4


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return _model({**HF_PARAMS, "vocab_size": 300}, seed=3)


def _tokens(B, S, seed=0, vocab=300):
    return torch.randint(0, vocab, (B, S), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_kv_cache_incremental_equals_full(small):
    tokens = _tokens(3, 40)
    full = small(tokens)
    with small.kv_cache(3, 64):
        parts = [small(tokens[:, :17])]
        parts.append(small(tokens[:, 17:25], 17))  # a multi-token chunk after the prefill
        for i in range(25, 40):
            parts.append(small(tokens[:, i:i + 1], i))
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    assert small.layers[0].attention.cache_k is None  # freed on exit


@torch.no_grad()
def test_padded_batch_equals_rows_alone(small):
    rows = [_tokens(1, n, seed=n)[0] for n in (12, 30, 21)]
    S = max(len(r) for r in rows)
    pad = torch.tensor([S - len(r) for r in rows])
    batch = torch.stack([torch.cat([torch.full((S - len(r),), 7), r]) for r in rows])
    out = small(batch, pad_lengths=pad)
    for b, r in enumerate(rows):
        torch.testing.assert_close(out[b, pad[b]:], small(r[None])[0], rtol=1e-5, atol=1e-5)
    # the same with a KV cache: prefill, then decode steps
    extra = _tokens(3, 5, seed=99)
    with small.kv_cache(3, S + 5):
        steps = [small(batch, pad_lengths=pad, output_positions=torch.tensor([S - 1]))]
        for i in range(5):
            steps.append(small(extra[:, i:i + 1], S + i, pad_lengths=pad))
    steps = torch.cat(steps, 1)
    for b, r in enumerate(rows):
        alone = small(torch.cat([r, extra[b]])[None])[0, len(r) - 1:]
        torch.testing.assert_close(steps[b], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_output_positions(small):
    tokens = _tokens(2, 10)
    full = small(tokens)
    torch.testing.assert_close(small(tokens, output_positions=torch.tensor([9, 3])), full[:, [9, 3]])
    per_row = torch.tensor([[1, 2], [5, 0]])
    got = small(tokens, output_positions=per_row)
    torch.testing.assert_close(got[0], full[0, [1, 2]])
    torch.testing.assert_close(got[1], full[1, [5, 0]])
    empty = small(tokens, output_positions=torch.tensor([], dtype=torch.long))
    assert empty.shape == (2, 0, 300) and empty.dtype == torch.float32


@torch.no_grad()
def test_read_hooks_see_manual_computation(small):
    tokens = _tokens(2, 9)
    seen = {}
    handles = [small.register_residual_hook(L, lambda h, ctx: seen.__setitem__(ctx.layer, h.clone()))
               for L in range(small.n_layers + 1)]
    logits = small(tokens, start_pos=0)
    for hd in handles:
        hd.remove()
    h = small.tok_embeddings(tokens)
    torch.testing.assert_close(seen[0], h)
    mask = None
    from neurosymbolic_llm.llama.model import rope_rotations
    rot = rope_rotations(rope_frequencies(small.args), torch.arange(9).expand(2, 9))
    for i, layer in enumerate(small.layers):
        h = layer(h, 0, rot, mask)
        if i + 1 < small.n_layers:
            torch.testing.assert_close(seen[i + 1], h)
    torch.testing.assert_close(seen[small.n_layers], small.norm(h))
    torch.testing.assert_close(logits, small.output(seen[small.n_layers]))
    seen.clear()
    small(tokens)
    assert not seen  # removed


@torch.no_grad()
def test_replacing_hook_changes_only_what_it_replaces(small):
    tokens = _tokens(2, 12)
    base = small(tokens)
    calls = []

    def bump_last(h, ctx):
        calls.append((ctx.layer, ctx.start_pos))
        h = h.clone()
        h[:, -1] += 1.0
        return h

    handle = small.register_residual_hook(2, bump_last)
    out = small(tokens)
    handle.remove()
    torch.testing.assert_close(out[:, :-1], base[:, :-1])  # causal: earlier positions untouched
    assert (out[:, -1] - base[:, -1]).abs().max() > 1e-3
    assert calls == [(2, 0)]
    # hooks of one layer run in registration order; stop_at_layer stops after them
    order = []
    h1 = small.register_residual_hook(1, lambda h, ctx: order.append("a"))
    h2 = small.register_residual_hook(1, lambda h, ctx: order.append("b"))
    h3 = small.register_residual_hook(2, lambda h, ctx: order.append("late"))
    assert small(tokens, stop_at_layer=1) is None
    assert order == ["a", "b"]
    for hd in (h1, h2, h3):
        hd.remove()
    with pytest.raises(ValueError, match="0..3"):
        small.register_residual_hook(4, lambda h, ctx: None)


def test_gradients_flow_through_hook_and_kv(small):
    tokens = _tokens(1, 8)
    delta = torch.zeros(small.args.dim, requires_grad=True)

    def add_at_first(h, ctx):  # modify position 0 only: later positions see it through K/V
        return torch.cat([h[:, :1] + delta, h[:, 1:]], 1)

    handle = small.register_residual_hook(1, add_at_first)
    loss = small(tokens, output_positions=torch.tensor([7])).logsumexp(-1).sum()
    loss.backward()
    handle.remove()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


@torch.no_grad()
def test_bf16_runs(small):
    import copy
    m = copy.deepcopy(small).to(torch.bfloat16)
    tokens = _tokens(2, 6)
    out = m(tokens)
    assert out.dtype == torch.float32
    ref = small(tokens)
    assert (out - ref).norm() / ref.norm() < 5e-2
    with m.kv_cache(2, 8):
        assert m.layers[0].attention.cache_k.dtype == torch.bfloat16
        m(tokens)


def test_peft_lora_wraps_projections():
    peft = pytest.importorskip("peft")
    model = _model({**HF_PARAMS, "vocab_size": 100, "n_layers": 2}, seed=4).requires_grad_(False)
    tokens = _tokens(1, 6, vocab=100)
    with torch.no_grad():
        ref = model(tokens)
    cfg = peft.LoraConfig(r=4, target_modules=["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
                          lora_dropout=0.0)
    wrapped = peft.get_peft_model(model, cfg)
    out = wrapped(tokens)
    torch.testing.assert_close(out, ref)  # LoRA B starts at zero
    out.sum().backward()
    lora = [p for n, p in wrapped.named_parameters() if "lora_" in n]
    assert len(lora) == 2 * 7 * 2 and all(p.grad is not None for p in lora)
    with torch.no_grad(), model.kv_cache(1, 8):  # the cache still finds the (wrapped) wk
        torch.testing.assert_close(model(tokens), ref)


@torch.no_grad()
def test_same_hook_twice_and_cache_bounds(small):
    tokens = _tokens(1, 4)
    calls = []
    fn = lambda h, ctx: calls.append(ctx.layer)  # noqa: E731
    first, second = small.register_residual_hook(1, fn), small.register_residual_hook(1, fn)
    small(tokens)
    assert calls == [1, 1]
    second.remove()
    second.remove()  # idempotent
    small(tokens)
    assert calls == [1, 1, 1]
    first.remove()
    with small.kv_cache(1, 4):
        with pytest.raises(ValueError, match=r"exceed the KV cache \(1 rows x 4 positions\)"):
            small(_tokens(1, 5))
        with pytest.raises(ValueError, match="batch 2"):
            small(_tokens(2, 2))


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_bf16_matches_cpu(small):
    import copy
    m = copy.deepcopy(small).to("cuda", torch.bfloat16)
    tokens, pad = _tokens(2, 20), torch.tensor([3, 0])
    ref = small(tokens, pad_lengths=pad)
    out = m(tokens.cuda(), pad_lengths=pad.cuda()).cpu()
    assert (out - ref).norm() / ref.norm() < 5e-2
    with m.kv_cache(2, 20):
        parts = [m(tokens[:, :12].cuda(), pad_lengths=pad.cuda())]
        parts += [m(tokens[:, i:i + 1].cuda(), i, pad_lengths=pad.cuda()) for i in range(12, 20)]
    inc = torch.cat(parts, 1).cpu()
    assert (inc - out).norm() / out.norm() < 2e-2
