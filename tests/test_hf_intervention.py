"""The intervention on a stock transformers model (neurosymbolic_llm/hf/): against the project's own
model and `stages/ask.ask` on the tiny "tied" model of tests/tiny_formats.py, as a Hugging Face
folder both load: the same gate decisions, decoded operands and greedy answers for 100+ questions
of every type and some non-math prompts; batches with left or right padding equal to one row at a
time; the model exactly as before once the hooks are off; refusals that change nothing; the
content fingerprint of the model's own parameters, also of a model transformers dequantized from
a GGUF file."""
import copy
import warnings

import numpy as np
import pytest
import torch

from neurosymbolic_llm import Intervention
from neurosymbolic_llm.hf.weights import model_info_of
from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.llama.generation import Llama
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention, load_intervention
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import EngineMismatchError
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget
from neurosymbolic_llm.pipeline.maps import check_model, model_info
from neurosymbolic_llm.pipeline.maps import model_info_of as project_info
from neurosymbolic_llm.stages.ask import ask
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

transformers = pytest.importorskip("transformers")
V, D, BATCH = 256, 64, 16
NON_MATH = ["What makes a building beautiful?", "Tell me about rivers.", "Why is the sky blue?"]
CONFIGS = {  # the intervention settings that change where and what is written
    "one position": dict(),
    "every generated position, re-encoded, counter, after the final norm too":
        dict(multi_token_intervention=True, encode_counter=True, symbolic_decoding_layers=[1, 2]),
    "every generated position, static, rmsnorm merge":
        dict(multi_token_intervention=True, static_encoding=True, merge="add_rmsnorm"),
    "a joint read of layers 0 and 1 (one map of their states concatenated), re-encoded at every position":
        dict(symbolic_encoding_layer="0+1", multi_token_intervention=True),
}


@pytest.fixture(scope="module")
def tied(tiny_formats):
    """(the project's Llama, a fresh transformers model, its tokenizer) of the "tied" HF folder."""
    folder = tiny_formats["tied"]["hf"]
    llama = Llama.build(folder, device="cpu", max_seq_len=512, max_batch_size=BATCH)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return llama, model, transformers.AutoTokenizer.from_pretrained(folder)


def artefact(info, threshold=-1e9, **kw) -> TrainedIntervention:
    """Random maps (an untrained intervention: the mechanism is the same) made on the model `info`."""
    g = torch.Generator().manual_seed(0)
    kw.setdefault("symbolic_decoding_layers", [1])
    kw.setdefault("symbolic_encoding_layer", 1)
    opts = InterventionOptions(problem_score_threshold=threshold, **kw)
    dec = {l: torch.randn(D, V, generator=g) for l in opts.symbolic_decoding_layers}
    merge = {str(l): {"norm.weight": 1 + torch.randn(D, generator=g) / 10} for l in dec} if opts.merge == "add_rmsnorm" else {}
    enc = torch.randn(V, D * len(opts.read_layers()), generator=g) / 4  # [V, k D] for k layers read
    return TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=4, seed=4), enc,
                               dec, merge, opts, {"complexity": 2, "limit_solution_digits": True, "seed": 3}, info)


def questions(n):
    return list(generate_problems(n, PROBLEM_TYPES, complexity=2, seed=1)["question"]) + NON_MATH


def padded(ids, side="left"):
    """(tokens [B,S], attention mask [B,S]) of token lists, padded with id 0 on `side`."""
    S = max(map(len, ids))
    x, m = torch.zeros(len(ids), S, dtype=torch.long), torch.zeros(len(ids), S, dtype=torch.long)
    for i, s in enumerate(ids):
        sl = slice(S - len(s), S) if side == "left" else slice(0, len(s))
        x[i, sl], m[i, sl] = torch.tensor(s), 1
    return x, m


def chat_ids(iv, tok, qs, first=0):
    return [list(tok.apply_chat_template(iv.prompt(q, index=first + i), add_generation_prompt=True,
                                        tokenize=True)["input_ids"]) for i, q in enumerate(qs)]


def hf_answers(llama, model, tok, iv, qs, mode="write", batch=BATCH):
    """(texts, last_report rows) of model.generate (greedy, left padding) with the intervention."""
    stop = sorted(llama.tokenizer.stop_tokens)
    n_new = answer_token_budget(llama.tokenizer, 2, True)
    texts, report = [], []
    for b0 in range(0, len(qs), batch):
        x, m = padded(chat_ids(iv, tok, qs[b0:b0 + batch], b0))
        with iv.apply(model, mode=mode):
            out = model.generate(input_ids=x, attention_mask=m, max_new_tokens=n_new, do_sample=False,
                                 eos_token_id=stop, pad_token_id=0)
        report += iv.last_report
        for row in out[:, x.shape[1]:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stop), len(row))
            texts.append(llama.tokenizer.decode(row[:cut]))
    return texts, report


def decided(row: dict) -> tuple:
    """What a report row decides (its scores are floats: equal up to rounding in another batch)."""
    return row["gate"], row["type"], row["x"], row["y"], row["answer"]


def with_gate_between_rows(llama, model, tok, art, qs):
    """The artefact with its gate threshold midway between the middle two scores (half the rows open)."""
    scores = sorted(r["score"] for r in hf_answers(llama, model, tok, Intervention(art), qs, mode="read")[1])
    k = len(scores) // 2
    art.options.problem_score_threshold = (scores[k - 1] + scores[k]) / 2
    return art


# ----------------------------------------------------------------------------- parity with the project
@pytest.mark.parametrize("config", list(CONFIGS))
def test_same_decisions_operands_and_answers_as_the_projects_ask(tied, config):
    llama, model, tok = tied
    qs = questions(100 if "static" not in config else 37)
    art = with_gate_between_rows(llama, model, tok, artefact(project_info(llama), **CONFIGS[config]), qs)
    texts, report = hf_answers(llama, model, tok, Intervention(art), qs)
    ours = list(ask(llama, art, qs, batch_size=BATCH))
    opened = [a["gate"]["open"] for a in ours]
    assert 0 < sum(opened) < len(qs)
    assert [r["gate"] for r in report] == opened
    assert [(r["type"], r["x"], r["y"]) for r in report] == \
        [(a["decoded"]["type"], a["decoded"]["x"], a["decoded"]["y"]) for a in ours]
    assert [r["answer"] for r in report] == [a["symbolic_answer"] for a in ours]
    np.testing.assert_allclose([r["score"] for r in report], [a["gate"]["score"] for a in ours], rtol=1e-4, atol=1e-5)
    assert texts == [a["with_intervention"]["text"] for a in ours]
    # the writing is real: where the gate opened the answers differ from the plain model's
    assert sum(t != a["without_intervention"]["text"] for t, a, o in zip(texts, ours, opened) if o) > sum(opened) // 2


def test_the_chat_template_gives_the_projects_prompt(tied):
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama)))
    qs = questions(5)
    assert chat_ids(iv, tok, qs) == [llama.formatter.encode_dialog_prompt(iv.prompt(q, index=i))
                                     for i, q in enumerate(qs)]


@pytest.mark.filterwarnings("ignore:.*the gate stayed shut")  # a row alone may have its gate shut
def test_batches_with_left_or_right_padding_equal_one_row_at_a_time(tied):
    llama, model, tok = tied
    cfg = CONFIGS["every generated position, re-encoded, counter, after the final norm too"]
    qs = questions(9)[4:]  # prompts of several lengths, math and non-math
    art = with_gate_between_rows(llama, model, tok, artefact(project_info(llama), **cfg), qs)
    iv = Intervention(art)
    (texts, report), (texts1, report1) = (hf_answers(llama, model, tok, iv, qs, batch=b) for b in (len(qs), 1))
    assert texts == texts1 and [decided(r) for r in report] == [decided(r) for r in report1]
    assert any(r["gate"] for r in report) and not all(r["gate"] for r in report)

    ids = chat_ids(iv, tok, qs)
    alone = []
    for s in ids:
        with iv.apply(model), torch.no_grad():
            alone.append((model(torch.tensor([s])).logits[0, -1], iv.last_report[0]))
    for side in ("left", "right"):
        x, m = padded(ids, side)
        pos = (m.cumsum(1) - 1).clamp_min(0)  # left padding: each row's own positions, as generate gives
        with iv.apply(model), torch.no_grad():
            logits = model(input_ids=x, attention_mask=m, position_ids=pos).logits
        last = m.shape[1] - 1 - m.flip(1).argmax(1) if side == "right" else torch.full((len(qs),), m.shape[1] - 1)
        for i, (want, rep) in enumerate(alone):
            torch.testing.assert_close(logits[i, last[i]], want, rtol=1e-4, atol=1e-4)
            assert decided(iv.last_report[i]) == decided(rep)


# ----------------------------------------------------------------------------- on and off
def test_the_model_is_untouched_after_the_hooks_come_off(tied):
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama), multi_token_intervention=True, symbolic_decoding_layers=[1, 2]))
    x = torch.tensor(chat_ids(iv, tok, questions(1)[:1]))
    with torch.no_grad():
        base = model(x).logits
        with iv.apply(model, mode="off"):
            assert torch.equal(model(x).logits, base)
        with iv.apply(model):
            assert not torch.allclose(model(x).logits, base)  # every gate open: it writes
        assert torch.equal(model(x).logits, base)
        with pytest.raises(RuntimeError, match="inside"):
            with iv.apply(model):
                model(x)
                raise RuntimeError("an error inside the block")
        assert torch.equal(model(x).logits, base)
        handle = iv.attach(model)
        assert not torch.allclose(model(x).logits, base)
        handle.remove()
        handle.remove()
        assert torch.equal(model(x).logits, base)
        assert not model.model._forward_pre_hooks and not any(l._forward_pre_hooks for l in model.model.layers)
        assert not model.model.norm._forward_hooks


def test_refused_models_are_left_as_they_are(tied, tiny_formats):
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama)))
    x = torch.tensor(chat_ids(iv, tok, questions(1)[:1]))
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.001)
        base = other(x).logits
    with pytest.raises(EngineMismatchError, match=r"other weights .*--allow_other_weights"):
        with iv.apply(other):
            pass
    with pytest.raises(EngineMismatchError, match="other weights"):
        iv.attach(other)
    with torch.no_grad():
        assert torch.equal(other(x).logits, base)
    with pytest.warns(UserWarning, match="allow_other_weights"):
        with iv.apply(other, allow_other_weights=True), torch.no_grad():
            assert not torch.equal(other(x).logits, base)
    with pytest.raises(EngineMismatchError, match="dim=32"):
        Intervention(artefact(model_info("x", 32, 2))).check(model)
    gqa = transformers.AutoModelForCausalLM.from_pretrained(tiny_formats["gqa"]["hf"], dtype=torch.float32)
    with pytest.raises(EngineMismatchError, match="another architecture"):
        iv.check(gqa)
    assert not any(l._forward_pre_hooks for l in model.model.layers + other.model.layers + gqa.model.layers)


def test_a_shut_gate_warns_once(tied):
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama), threshold=1e9))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            hf_answers(llama, model, tok, iv, questions(2))
    shut = [w for w in caught if "gate stayed shut" in str(w.message)]
    assert len(shut) == 1 and "iv.prompt(question)" in str(shut[0].message)
    assert not any(r["gate"] or r["written"] for r in iv.last_report)


def test_a_bfloat16_model_reads_in_float32(tied):
    llama, model, tok = tied
    art = artefact(project_info(llama))
    iv = Intervention(art)
    ids = chat_ids(iv, tok, questions(6))
    x, m = padded(ids)
    with iv.apply(model, mode="read"), torch.no_grad():
        model(input_ids=x, attention_mask=m, position_ids=(m.cumsum(1) - 1).clamp_min(0))
    f32 = iv.last_report
    half = copy.deepcopy(model).to(torch.bfloat16)
    with iv.apply(half), torch.no_grad():
        out = half(input_ids=x, attention_mask=m, position_ids=(m.cumsum(1) - 1).clamp_min(0)).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert iv._records["vsa"].dtype == torch.float32
    np.testing.assert_allclose([r["score"] for r in iv.last_report], [r["score"] for r in f32], atol=0.15)


def test_tuple_layer_outputs_and_keyword_inputs_are_written_like_tensors(tied):
    """A forward hook's output that is a tuple (older transformers' decoder layers) keeps its tail; a
    block called with hidden_states= gets it replaced there."""
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama), symbolic_decoding_layers=[1, 2]))
    handle = iv.attach(model)
    x = torch.tensor(chat_ids(iv, tok, questions(1)[:1]))
    try:
        with torch.no_grad():
            model(x)  # a prompt: the plan and the answer vector of this forward are set
            h = torch.randn(1, x.shape[1], D)
            hook = handle._post(2)
            as_tensor, as_tuple = hook(None, (), h), hook(None, (), (h, "cache"))
            pre = handle._pre(1)
            (positional, *rest), _ = pre(None, (h, "mask"), {})
            _, keywords = pre(None, (), {"hidden_states": h, "mask": "mask"})
    finally:
        handle.remove()
    assert as_tuple[1] == "cache" and torch.equal(as_tuple[0], as_tensor) and not torch.equal(as_tensor, h)
    assert rest == ["mask"] and keywords["mask"] == "mask" and not torch.equal(positional, h)
    assert torch.equal(keywords["hidden_states"], positional)


# ----------------------------------------------------------------------------- files and fingerprints
def test_save_and_load_round_trip(tied, tmp_path):
    llama, model, tok = tied
    iv = Intervention(artefact(project_info(llama), multi_token_intervention=True))
    back = Intervention.from_pretrained(iv.save_pretrained(tmp_path / "iv"))
    assert torch.equal(back.artefact.encoder, iv.artefact.encoder) and back.artefact.options == iv.artefact.options
    assert load_intervention(tmp_path / "iv").model == iv.artefact.model
    assert back.check(model) == ""


@pytest.mark.parametrize("variant", ["tied", "gqa"])
def test_fingerprint_of_the_models_parameters_is_the_projects(tiny_formats, variant):
    t = tiny_formats[variant]
    ours = open_checkpoint(t["hf"])
    assert model_info_of(t["model"])["fingerprint"] == ours.fingerprint()


def test_a_model_dequantized_from_a_gguf_is_that_gguf(tiny_formats, tmp_path):
    """transformers' gguf_file= loader dequantizes Q8_0 to float32: the project's model of that GGUF,
    not the original float weights; saved as a Hugging Face folder it is still that GGUF's model."""
    t = tiny_formats["tied"]
    gguf = t["Q8_0"]
    deq = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                            config=transformers.AutoConfig.from_pretrained(t["hf"]))
    q8 = open_checkpoint(gguf)
    made_on_q8 = model_info(q8.fingerprint(), D, 2, q8.weight_samples())
    assert Intervention(artefact(made_on_q8)).check(deq) == ""
    original = open_checkpoint(t["hf"])
    with pytest.raises(EngineMismatchError, match="other weights"):
        Intervention(artefact(model_info(original.fingerprint(), D, 2, original.weight_samples()))).check(deq)
    plain = transformers.LlamaForCausalLM(transformers.AutoConfig.from_pretrained(t["hf"]))
    plain.load_state_dict(deq.state_dict())  # transformers will not save a model it loaded from a GGUF
    plain.save_pretrained(tmp_path / "deq")
    folder = open_checkpoint(tmp_path / "deq")
    assert folder.fingerprint() != q8.fingerprint()  # F32 against Q8_0: compare() decides
    assert check_model(made_on_q8, model_info(folder.fingerprint(), D, 2, folder.weight_samples()), "maps") == ""
