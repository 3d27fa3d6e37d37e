"""Fuzz the checkpoint and tokenizer parsers for longer than the test suite does.

Damaged copies of tiny Meta, Hugging Face and GGUF checkpoints (tests/parser_fuzz.py: byte flips,
truncations, hostile field values) are loaded and run in a worker process with a memory limit and
a timeout per example. Prints the examples tried, how many loaded, how many ended in one LlamaError
line, and every finding (another exception, a multi-line error, memory, a hang, a crash) with the
damage that caused it. Exit code 1 when there was a finding.

Usage: python benchmarks/fuzz_parsers.py [--examples N] [--seed S] [--timeout SECONDS]
"""
import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import harness  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings, strategies as st  # noqa: E402

harness.test_module("hostile_files")  # parser_fuzz imports it by name: loaded first, by path
parser_fuzz = harness.test_module("parser_fuzz")
tiny_formats = harness.test_module("tiny_formats")


def tiny_meta(folder: Path) -> Path:
    """tests/conftest.py's tiny Meta checkpoint (the same parameters, harness.TINY: random weights,
    Llama 3's tokenizer)."""
    return harness.tiny_checkpoint(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=parser_fuzz.TIMEOUT_S)
    opts = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        corpus = parser_fuzz.sources(tiny_meta(tmp / "meta"), tiny_formats.build_all(tmp / "formats"))
        worker = parser_fuzz.Worker(opts.timeout)
        counts = collections.Counter()
        findings = []

        @seed(opts.seed)
        @settings(max_examples=opts.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def one(data):
            how, path = parser_fuzz.draw_example(data.draw, corpus, parser_fuzz.fresh_dir(tmp / "ex"))
            out = worker.run(path)
            counts[out.kind] += 1
            if out.kind not in parser_fuzz.OK:
                findings.append((how, out))

        try:
            one()
        finally:
            worker.close()
    tried = sum(counts.values())
    print(f"examples tried: {tried} in {time.time() - t0:.0f} s (seed {opts.seed})")
    print(f"loaded: {counts['loaded']}  one-line errors: {counts['error']}  "
          f"findings: {tried - counts['loaded'] - counts['error']} "
          f"({', '.join(f'{k} {v}' for k, v in counts.items() if k not in parser_fuzz.OK) or 'none'})")
    for how, out in findings:
        print(f"  {out.kind}: {how}\n      -> {out.detail}")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
