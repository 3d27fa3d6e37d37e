"""Tokenizer and chat format against llama-models' reference Tokenizer (oracle)."""
import random

import pytest

from neurosymbolic_llm.pipeline.errors import CheckpointError
from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer, default_tokenizer_path


@pytest.fixture(scope="module")
def oracle():
    mod = pytest.importorskip("llama_models.llama3.tokenizer")
    return mod.Tokenizer(default_tokenizer_path())


def _strings() -> list[str]:
    rng = random.Random(0)
    out = []
    for digits in range(1, 8):  # numbers of 1..7 digits, alone and in text
        for _ in range(12):
            n = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
            out += [str(n), f"What is {n} plus {rng.randrange(1000)}?", f"-{n}", f"{n}.5", f"x={n}"]
    out += ["", " ", "  ", "\n", "\n\n", " \n \n", "\t\t x", "a" * 50, "a     b", "   leading",
            "trailing   ", "line1\r\nline2\n\n\nline3", "tabs\tand\tspaces  \t ",
            "héllo wörld", "日本語のテキスト", "emoji 😀👍🏽 mix", "Ελληνικά και русский",
            "عربى مكتوب", "naïve café", "ﬁ ligature", "\u200b zero width", "I'm you're they'll we'd",
            "CAPS'S 'LL", "<|eot_id|> is text here", "<|begin_of_text|>", "**Final answer: 42**",
            "def f(x):\n    return x**2\n", "1,234,567.89", "3.14159e-10", "a\u00a0b"]
    alphabet = "ab cd\n\t0123456789é日😀.,!?'-_*#"
    for _ in range(120):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))))
    return out


def test_ids_and_roundtrip_match_oracle(tokenizer, oracle):
    strings = _strings()
    assert len(strings) > 200
    for s in strings:
        for bos, eos in ((False, False), (True, False), (True, True)):
            assert tokenizer.encode(s, bos=bos, eos=eos) == oracle.encode(s, bos=bos, eos=eos), repr(s)
        assert tokenizer.decode(tokenizer.encode(s, bos=False, eos=False)) == s


def test_special_tokens_match_oracle(tokenizer, oracle):
    assert tokenizer.special_tokens == oracle.special_tokens
    assert tokenizer.n_words == oracle.n_words == 128256
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.eot_id) == (128000, 128001, 128009)
    assert tokenizer.pad_id == oracle.pad_id == 128004
    assert tokenizer.stop_tokens == set(oracle.stop_tokens)


def test_known_ids(tokenizer):
    enc = lambda s: tokenizer.encode(s, bos=False, eos=False)  # noqa: E731
    assert enc("\n\n") == [271] and enc("user") == [882] and enc("assistant") == [78191]
    assert len(enc("999")) == 1 and len(enc("1999")) == 2


def test_long_input_does_not_crash(tokenizer, oracle):
    s = "a" * 30_000 + " " * 30_000 + "b"
    assert tokenizer.decode(tokenizer.encode(s, bos=False, eos=False)) == s


def test_chat_format(tokenizer, oracle):
    fmt = ChatFormat(tokenizer)
    enc = lambda s: oracle.encode(s, bos=False, eos=False)  # noqa: E731
    st = oracle.special_tokens
    dialogs = [
        [{"role": "user", "content": "What is 12 times 7?"}],
        [{"role": "system", "content": "  You are terse.\n"},
         {"role": "user", "content": "Hi 1234567"},
         {"role": "assistant", "content": "Hello! "},
         {"role": "user", "content": "Compute 5 mod 3\n\n"}],
    ]
    for dialog in dialogs:
        want = [st["<|begin_of_text|>"]]
        for m in dialog + [{"role": "assistant", "content": None}]:
            want += [st["<|start_header_id|>"]] + enc(m["role"]) + [st["<|end_header_id|>"]] + enc("\n\n")
            if m["content"] is not None:
                want += enc(m["content"].strip()) + [st["<|eot_id|>"]]
        got = fmt.encode_dialog_prompt(dialog)
        assert got == want
        assert got[:5] == [128000, 128006, dialog[0]["role"] == "user" and 882 or 9125, 128007, 271]
        assert got[-4:] == [128006, 78191, 128007, 271]


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"tokenizer file .*nope\.model not found"):
        Tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not base64 at all\n")
    with pytest.raises(CheckpointError, match="bad.model is not a tiktoken BPE file"):
        Tokenizer(bad)
