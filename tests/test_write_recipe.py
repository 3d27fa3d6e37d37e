"""--train_on_true_operands (the write-side recipe behind the encoder): training gives the solver the
true operands and type, exactly as --simulate_perfect_encoder does, and evaluation reads with the
encoder. References: the simulate_perfect_encoder run and Python's own arithmetic (solve_one)."""
import contextlib

import torch
from test_fine_tuning import examples, llama, ns_method  # noqa: F401 (the llama fixture)

from neurosymbolic_llm.pipeline.configs import FineTuneOptions
from neurosymbolic_llm.pipeline.training import answer_cross_entropy, train
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.solver import solve_one

VSA = 64


def trained_decoder(llama, engine, ex, *, method_kw=None, **opts):
    method = ns_method(llama, engine, **(method_kw or {}))
    train(llama, method, ex, FineTuneOptions(n_samples=4, inference_to_backprop_ratio=2, num_epochs=2,
                                             learning_rate=1e-2, **opts), from_csv=True, seed=0)
    return method


def written_answers(llama, method, ex, *, truth: bool):
    """The answer vectors [N, V] the hook writes at the last prompt position of each example."""
    iv = method.intervention
    answers = [a + [llama.tokenizer.eot_id] for a in ex.answers]
    with torch.no_grad(), method.attach(), (iv.solving_truth() if truth else contextlib.nullcontext()):
        seen = []
        handle = llama.model.register_residual_hook(iv.enc_layer, lambda h, ctx: seen.append(iv.pending))
        answer_cross_entropy(llama.model, ex.prompts, answers, fill_id=llama.tokenizer.eot_id, intervention=iv,
                             truth=ex.truth(range(len(ex))))
        handle.remove()
    _, _, a, _ = seen[0]  # (lo, hi, answer vectors [B, K, V], gate)
    return a[:, 0], iv.take_records()


def test_true_operand_training_is_the_perfect_encoders_and_evaluation_reads(llama):
    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    ex = examples(llama, engine)
    perfect = trained_decoder(llama, engine, ex, method_kw=dict(simulate_perfect_encoder=True))
    recipe = trained_decoder(llama, engine, ex, train_on_true_operands=True)
    readings = trained_decoder(llama, engine, ex)
    w = {k: m.intervention.decoders["2"].weight for k, m in
         (("perfect", perfect), ("recipe", recipe), ("readings", readings))}
    assert torch.equal(w["recipe"], w["perfect"])  # same targets, same steps
    assert not torch.allclose(w["recipe"], w["readings"])  # the random encoder misreads: other targets

    truth_a, _ = written_answers(llama, recipe, ex, truth=True)
    want = [solve_one(t, x, y) for t, x, y in zip(ex.rows["problem_type"], ex.rows["x"], ex.rows["y"])]
    assert torch.equal(truth_a, engine.encode_number(torch.tensor(want)).float())
    read_a, rec = written_answers(llama, recipe, ex, truth=False)  # evaluation: the encoder's reading
    assert not torch.equal(read_a, truth_a)
    decoded = [engine.possible_problems[i] for i in rec["type_id"].tolist()]
    assert decoded != list(ex.rows["problem_type"]) or rec["x"].tolist() != list(ex.rows["x"])
