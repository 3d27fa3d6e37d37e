"""Static-cache decoding (static_decode.py) against the eager path, on the tiny random checkpoint.

On the CPU the static step runs without capture: it is the code that CUDA graphs record, so
equality here checks what the graphs replay. The gpu-marked tests compare the captured path."""
import pytest
import torch

from neurosymbolic_llm.llama.errors import LlamaError
from neurosymbolic_llm.llama.generation import Llama, left_pad
from neurosymbolic_llm.llama.static_decode import (StaticDecoder, capture_blockers, choose_mode, hook_capture_safe,
                                                   static_cache_len)


@pytest.fixture(scope="module")
def llama(tiny_ckpt):
    return Llama.build(tiny_ckpt, max_seq_len=96, max_batch_size=4, device="cpu")


def _prompts(llama):
    fmt = llama.formatter
    return [fmt.encode_dialog_prompt([{"role": "user", "content": c}])
            for c in ("What is 12 plus 30?", "Hi", "Compute 1234567 mod 89, please, and explain.")]


def _step_logits(llama, prompts, n, *, window, static, capture=False, forced=None):
    """Per-step logits [n, B, V] of greedy decoding (or of feeding ``forced`` [n, B] tokens)."""
    model = llama.model
    tokens, pad = left_pad(prompts, llama.tokenizer.pad_id)
    tokens, pad = tokens.to(llama.device), pad.to(llama.device)
    B, S = tokens.shape
    out, fed = [], []
    with torch.no_grad(), model.kv_cache(B, static_cache_len(S + n, window)):
        logits = model(tokens, 0, pad_lengths=pad, output_positions=torch.tensor([S - 1]))[:, -1]
        dec = StaticDecoder(model, pad, S + n, capture=capture, window=window) if static else None
        for i in range(n):
            out.append(logits.clone())
            nxt = logits.argmax(-1) if forced is None else forced[i]
            fed.append(nxt)
            logits = dec.step(nxt, S + i) if static else model(nxt[:, None], S + i, pad_lengths=pad)[:, -1]
    return torch.stack(out), torch.stack(fed)


def test_static_greedy_equals_eager_generate(llama):
    prompts = _prompts(llama)
    eager = llama.generate(prompts, max_gen_len=20, stop_tokens=[], decode="eager")
    assert [len(r) for r in eager] == [20, 20, 20]
    assert llama.generate(prompts, max_gen_len=20, stop_tokens=[], decode="static") == eager
    for p, row in zip(prompts, eager):  # batch of one, and with stop tokens cutting rows short
        assert llama.generate([p], max_gen_len=20, stop_tokens=[], decode="static") == [row]
    stop = eager[0][3]
    cut = llama.generate(prompts, max_gen_len=20, stop_tokens=[stop], decode="static")
    assert cut == llama.generate(prompts, max_gen_len=20, stop_tokens=[stop], decode="eager")
    assert cut[0] == eager[0][:3]


def test_static_top_p_equals_eager_generate(llama):
    prompts = _prompts(llama)
    runs = []
    for mode in ("eager", "static"):
        torch.manual_seed(7)
        runs.append(llama.generate(prompts, max_gen_len=12, temperature=1.0, top_p=0.9, stop_tokens=[], decode=mode))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("window", [8, 32])
def test_static_step_logits_equal_eager_across_windows(llama, window):
    """Logits of every step to float32 rounding, with the attention window crossed several times."""
    prompts = _prompts(llama)
    eager, tokens = _step_logits(llama, prompts, 30, window=window, static=False)
    static, fed = _step_logits(llama, prompts, 30, window=window, static=True, forced=tokens)
    assert torch.equal(fed, tokens)
    torch.testing.assert_close(static, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(static.argmax(-1), eager.argmax(-1))


def test_residual_hooks_run_in_static_steps(llama):
    """A hook that writes the residual at generated positions acts the same in both paths."""
    prompts = _prompts(llama)
    g = torch.Generator().manual_seed(3)
    push = torch.randn(llama.args.dim, generator=g)
    calls = []

    def hook(h, ctx):
        calls.append((ctx.layer, ctx.start_pos, h.shape[1]))
        return h + push if ctx.start_pos > 0 else None

    handle = llama.model.register_residual_hook(2, hook)
    try:
        eager = llama.generate(prompts, max_gen_len=8, stop_tokens=[], decode="eager")
        n_eager = len(calls)
        static = llama.generate(prompts, max_gen_len=8, stop_tokens=[], decode="static")
    finally:
        handle.remove()
    assert static == eager
    assert calls[n_eager:] == calls[:n_eager]  # same layers, positions and shapes, in order
    assert eager != llama.generate(prompts, max_gen_len=8, stop_tokens=[], decode="eager")  # the hook mattered


INTERVENTIONS = {  # InterventionOptions of the hook cases; the prompt's gate is forced open
    "last_prompt_token": dict(),
    "multi_token": dict(multi_token_intervention=True),
    "multi_token_reencoded": dict(multi_token_intervention=True, static_encoding=False),
    "adapter_multi_token": dict(multi_token_intervention=True, adapter=True),
}


def _intervention(llama, case):
    import math

    from neurosymbolic_llm.pipeline import methods
    from neurosymbolic_llm.pipeline.configs import InterventionOptions
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine

    kw = dict(INTERVENTIONS[case])
    adapter = kw.pop("adapter", False)
    d, v, g = llama.args.dim, 64, torch.Generator().manual_seed(1)
    enc, dec = torch.randn(v, d, generator=g) / 2, {2: torch.randn(d, v, generator=g) / 2}
    opts = InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2],
                               problem_score_threshold=-math.inf, **kw)
    model = llama.model
    if adapter:
        return methods.adapter(model, enc, dec, opts, lr=0.0, init="stage2", seed=0)
    engine = SymbolicEngine(VSA_dim=v, max_digits=4, seed=4).to(llama.device)
    return methods.neurosymbolic(model, engine, enc, dec, opts, lr=0.0, complexity=2, limit_solution_digits=True)


@pytest.mark.parametrize("case", list(INTERVENTIONS))
def test_intervention_in_static_steps(llama, case):
    """The neurosymbolic hooks give the same tokens in static steps, and declare themselves capture-safe."""
    method = _intervention(llama, case)
    prompts = _prompts(llama)
    with method.attach():
        assert capture_blockers(llama.model, "cuda") == []
        eager = llama.generate(prompts, max_gen_len=10, stop_tokens=[], decode="eager")
        static = llama.generate(prompts, max_gen_len=10, stop_tokens=[], decode="static")
    assert static == eager
    if case != "last_prompt_token":  # writing at generated positions changed the tokens
        assert eager != llama.generate(prompts, max_gen_len=10, stop_tokens=[], decode="eager")


def test_intervention_reading_cpu_truth_per_step_is_not_capture_safe(llama):
    from neurosymbolic_llm.pipeline.configs import InterventionOptions
    from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention

    def iv(**kw):
        opts = InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2], **kw)
        return SymbolicIntervention(None, torch.zeros(8, 64), {2: torch.zeros(64, 8)}, opts)

    assert iv().capture_safe and iv(simulate_perfect_encoder=True, multi_token_intervention=True).capture_safe
    unsafe = iv(simulate_perfect_encoder=True, multi_token_intervention=True, static_encoding=False)
    assert not unsafe.capture_safe
    with unsafe.attached(llama.model):
        assert capture_blockers(llama.model, "cuda") == [
            "residual hook SymbolicIntervention._hook at layer 2 is not declared capture_safe"]


def test_mode_choice_and_blockers(llama, monkeypatch):
    model = llama.model
    assert capture_blockers(model, "cpu") == ["not a CUDA device"]
    assert choose_mode(model, "cpu") == "eager"  # auto on a CPU: the eager path, no warning
    assert choose_mode(model, "cpu", "static") == "static"
    with pytest.raises(LlamaError, match="not a CUDA device"):
        choose_mode(model, "cpu", "graph")
    with pytest.raises(LlamaError, match="decode mode 'fast'"):
        choose_mode(model, "cpu", "fast")
    monkeypatch.setenv("NSLLM_DECODE", "static")
    assert choose_mode(model, "cpu") == "static"

    def plain(h, ctx):
        return None

    def declared(h, ctx):
        return None

    declared.capture_safe = True

    class Owner:
        capture_safe = True

        def hook(self, h, ctx):
            return None

    assert not hook_capture_safe(plain) and hook_capture_safe(declared) and hook_capture_safe(Owner().hook)
    handles = [model.register_residual_hook(1, declared), model.register_residual_hook(3, plain),
               model.register_residual_hook(2, Owner().hook)]
    try:
        why = capture_blockers(model, "cuda")
    finally:
        for h in handles:
            h.remove()
    assert why == [f"residual hook {plain.__qualname__} at layer 3 is not declared capture_safe"]
    assert capture_blockers(model, "cuda") == []


def test_static_decoder_needs_the_cache(llama):
    with pytest.raises(LlamaError, match="inside model.kv_cache"):
        StaticDecoder(llama.model, torch.zeros(1, dtype=torch.long), 10, capture=False)
    with torch.no_grad(), llama.model.kv_cache(2, 16):
        with pytest.raises(LlamaError, match="must be \\[2\\]"):
            StaticDecoder(llama.model, torch.zeros(3, dtype=torch.long), 10, capture=False)
        dec = StaticDecoder(llama.model, torch.zeros(2, dtype=torch.long), 16, capture=False)
        with pytest.raises(LlamaError, match="outside the KV cache"):
            dec.step(torch.zeros(2, dtype=torch.long), 16)


# ----------------------------------------------------------------------------- CUDA graphs
@pytest.fixture(scope="module")
def cuda_llama(tiny_ckpt):
    return {dtype: Llama.build(tiny_ckpt, max_seq_len=96, max_batch_size=4, device="cuda", dtype=dtype)
            for dtype in (torch.float32, torch.bfloat16)}


@pytest.mark.gpu
def test_graph_greedy_equals_eager_on_cuda(cuda_llama):
    llama = cuda_llama[torch.float32]
    prompts = _prompts(llama)
    eager = llama.generate(prompts, max_gen_len=40, stop_tokens=[], decode="eager")
    assert llama.generate(prompts, max_gen_len=40, stop_tokens=[], decode="graph") == eager
    assert llama.generate(prompts, max_gen_len=40, stop_tokens=[]) == eager  # auto: graphs here
    assert llama.generate(prompts[1:2], max_gen_len=40, stop_tokens=[], decode="graph") == eager[1:2]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_step_logits_on_cuda(cuda_llama, dtype):
    """Replays equal the uncaptured step, and the eager path to the dtype's rounding, across windows."""
    llama = cuda_llama[dtype]
    prompts = _prompts(llama)
    eager, tokens = _step_logits(llama, prompts, 40, window=16, static=False)
    static, _ = _step_logits(llama, prompts, 40, window=16, static=True, forced=tokens)
    graph, _ = _step_logits(llama, prompts, 40, window=16, static=True, capture=True, forced=tokens)
    torch.testing.assert_close(graph, static, rtol=1e-5, atol=1e-5)
    tol = 1e-4 if dtype == torch.float32 else 2e-2 * float(eager.abs().max())  # bf16: ~2 ulp of the logits
    torch.testing.assert_close(graph, eager, rtol=0, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(INTERVENTIONS))
def test_graph_with_intervention_equals_eager_on_cuda(cuda_llama, case):
    llama = cuda_llama[torch.float32]
    method = _intervention(llama, case)
    prompts = _prompts(llama)
    with method.attach():
        eager = llama.generate(prompts, max_gen_len=40, stop_tokens=[], decode="eager")
        assert llama.generate(prompts, max_gen_len=40, stop_tokens=[], decode="graph") == eager
