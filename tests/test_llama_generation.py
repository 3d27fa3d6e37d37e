"""Llama.build and batched generation on the tiny random checkpoint."""
import pytest
import torch

from neurosymbolic_llm.llama.errors import LlamaError
from neurosymbolic_llm.llama.generation import Llama, left_pad, sample_top_p


@pytest.fixture(scope="module")
def llama(tiny_ckpt):
    return Llama.build(tiny_ckpt, max_seq_len=64, max_batch_size=4, device="cpu")


def _greedy_reference(model, prompt, n):
    """Greedy decoding by full forwards without any cache."""
    seq = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([seq]), output_positions=torch.tensor([len(seq) - 1]))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt):]


def _prompts(llama):
    fmt = llama.formatter
    return [fmt.encode_dialog_prompt([{"role": "user", "content": c}])
            for c in ("What is 12 plus 30?", "Hi", "Compute 1234567 mod 89, please, and explain.")]


def test_build_attributes(llama, tiny_ckpt, tiny_params):
    assert llama.device == torch.device("cpu")
    assert llama.args.dim == tiny_params["dim"] and llama.args.max_seq_len == 64
    assert llama.model.tok_embeddings.weight.dtype == torch.float32
    assert len(llama.fingerprint) == 64 and llama.ckpt_dir == tiny_ckpt
    assert llama.tokenizer.n_words == tiny_params["vocab_size"]


def test_left_pad():
    tokens, pad = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert tokens.tolist() == [[1, 2, 3], [9, 9, 4]] and pad.tolist() == [0, 2]


@torch.no_grad()
def test_greedy_batch_equals_rows_alone_and_full_forward(llama):
    prompts = _prompts(llama)
    batch = llama.generate(prompts, max_gen_len=6, stop_tokens=[])
    assert [len(r) for r in batch] == [6, 6, 6]
    for p, got in zip(prompts, batch):
        assert llama.generate([p], max_gen_len=6, stop_tokens=[]) == [got]
        assert got == _greedy_reference(llama.model, p, 6)


@torch.no_grad()
def test_stop_tokens_cut_and_pad_after_stop(llama):
    prompts = _prompts(llama)
    free = llama.generate(prompts, max_gen_len=5, stop_tokens=[])
    stop = free[0][2]  # row 0 stops at step 2
    got = llama.generate(prompts, max_gen_len=5, stop_tokens=[stop])
    assert got[0] == free[0][:2]
    for g, f in zip(got[1:], free[1:]):
        assert g == (f[:f.index(stop)] if stop in f else f)


def test_max_seq_len_bounds_generation(llama):
    p = list(range(1000, 1060))  # 60 tokens, max_seq_len 64
    assert len(llama.generate([p], max_gen_len=50, stop_tokens=[])[0]) == 4


def test_hooks_apply_during_generation(llama):
    prompt = _prompts(llama)[1]
    calls = []
    handle = llama.model.register_residual_hook(2, lambda h, ctx: calls.append((ctx.start_pos, h.shape[1])))
    try:
        llama.generate([prompt], max_gen_len=3, stop_tokens=[])
    finally:
        handle.remove()
    S = len(prompt)
    assert calls == [(0, S), (S, 1), (S + 1, 1)]
    # a hook that replaces the final-norm output changes what is generated
    base = llama.generate([prompt], max_gen_len=3, stop_tokens=[])
    target = llama.model.output.weight[4242]

    def force(h, ctx):
        return target.expand_as(h) * 100.0

    handle = llama.model.register_residual_hook(llama.args.n_layers, force)
    try:
        forced = llama.generate([prompt], max_gen_len=3, stop_tokens=[])
    finally:
        handle.remove()
    assert forced == [[4242] * 3] != base


def test_top_p_sampling(llama):
    prompt = _prompts(llama)[0]
    greedy = llama.generate([prompt], max_gen_len=4, stop_tokens=[])
    # a nucleus of one token is greedy decoding
    assert llama.generate([prompt], max_gen_len=4, temperature=1.0, top_p=1e-9, stop_tokens=[]) == greedy
    torch.manual_seed(0)
    a = llama.generate([prompt], max_gen_len=4, temperature=1.0, top_p=0.9, stop_tokens=[])
    torch.manual_seed(0)
    assert llama.generate([prompt], max_gen_len=4, temperature=1.0, top_p=0.9, stop_tokens=[]) == a
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    draws = {int(sample_top_p(probs, 0.7)) for _ in range(200)}
    assert draws == {0, 1}


def test_prompt_errors(llama):
    with pytest.raises(LlamaError, match="prompt 1 has 65 tokens, longer than max_seq_len 64"):
        llama.generate([[1, 2], [5] * 65], max_gen_len=2)
    with pytest.raises(LlamaError, match="5 prompts exceed max_batch_size 4"):
        llama.generate([[1]] * 5, max_gen_len=2)
    with pytest.raises(LlamaError, match="prompt 0 is empty"):
        llama.generate([[]], max_gen_len=2)
