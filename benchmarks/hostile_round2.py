"""Hostile inputs, round 2 (issue 30): the intervention artefact, the hidden-state store, model
identity, `ask`, export, and environment doors, by class:

    python benchmarks/hostile_round2.py [--src DIR] [--keep DIR] [--only 3,4]

Every case runs a real command as a process (Programs/*.py, the package of --src: an older
checkout's src/ gives the "before" counts of benchmarks/RESULTS.md) on a tiny random Llama, and is
judged by harness.judge: one line (the right refusal), accepted (the right run), traceback, hang,
silent wrong (rc 0 where a refusal was due, a wrong answer, a wrong refusal), data loss.
About 6 minutes on 2 busy cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import harness
from harness import judge, python, run, script

CLASSES = {1: "the hidden-state store shared by two runs", 2: "model and tokenizer identity",
           3: "artefact settings: missing, wrongly typed, unknown", 4: "artefact tensors: NaN, wrong type",
           5: "artefact written as a unit", 6: "export while stage 3 runs / over its artefact",
           7: "ask: per-question errors, streaming, odd text", 8: "other tracebacks (digits, nesting, WORLD_SIZE)",
           10: "--programs_dir and a run's saved paths"}
OUT: list = []
V, LAYER = 64, 2
TOKENIZER = None  # the default tokenizer.model, set in setup


def setup(work: Path) -> dict:
    import torch
    from neurosymbolic_llm.llama.formats import open_checkpoint
    from neurosymbolic_llm.llama.tokenizer import default_tokenizer_path
    from neurosymbolic_llm.pipeline.artefact import TrainedIntervention, save_intervention
    from neurosymbolic_llm.pipeline.configs import InterventionOptions
    from neurosymbolic_llm.pipeline.maps import model_info, save_maps
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine

    ckpt = harness.tiny_checkpoint(work / "ckpt")
    c = open_checkpoint(ckpt)
    try:  # as stage 3 records it (maps.model_info_of), where this version records the tokenizer
        from neurosymbolic_llm.llama.identity import tokenizer_digest
        info = model_info(c.fingerprint(), 64, 4, c.weight_samples(), tokenizer_digest(c.load_tokenizer()[0]))
    except ImportError:
        info = model_info(c.fingerprint(), 64, 4, c.weight_samples())
    engine, g = SymbolicEngine(VSA_dim=V, max_digits=4, seed=4), torch.Generator().manual_seed(0)
    enc, dec = torch.randn(V, 64, generator=g) / 8, torch.randn(64, V, generator=g) / 8
    prog = work / "prog"
    for kind, w in (("encoder", enc), ("decoder", dec)):
        save_maps(prog / "models" / f"{kind}s_m.pth", kind, {LAYER: w}, engine.state_dict(), info)
    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER],
                               problem_score_threshold=0.2, problem_score_max=50.0, merge="add_rmsnorm")
    merge = {str(LAYER): {"norm.weight": torch.ones(64)}}
    art = TrainedIntervention(engine, enc, {LAYER: dec}, merge, opts,
                              {"complexity": 2, "limit_solution_digits": True, "seed": 5}, info, str(ckpt),
                              {"run_name": "R"})
    save_intervention(work / "iv", art)
    global TOKENIZER
    TOKENIZER = default_tokenizer_path()
    return {"ckpt": ckpt, "iv": work / "iv", "prog": prog}


def export(*args: str) -> list[str]:
    return python("-m", "neurosymbolic_llm", "export-intervention", *args)


def ask(s: dict, iv: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(script("ask.py", "--intervention", str(iv), "--chpt_dir", str(s["ckpt"]), "--device", "cpu",
                      "--eval_batch_size", "1", *args), timeout=kw.pop("timeout", 300), **kw)


def edited(work: Path, s: dict, name: str, edit_json=None, edit_tensors=None) -> Path:
    """A copy of the artefact with its JSON and/or tensors edited (the hash kept consistent, as a
    careful attacker would)."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file

    dst = work / "edits" / name
    shutil.copytree(s["iv"], dst)
    jp, tp = dst / "intervention.json", dst / "intervention.safetensors"
    data = json.loads(jp.read_text())
    if edit_tensors:
        t = load_file(str(tp))
        edit_tensors(t, torch)
        save_file(t, str(tp))
        data["tensors_sha256"] = hashlib.sha256(tp.read_bytes()).hexdigest()
    if edit_json:
        text = edit_json(data)
        jp.write_text(text if isinstance(text, str) else json.dumps(data))
    else:
        jp.write_text(json.dumps(data))
    return dst


# ----------------------------------------------------------------------------- classes 3, 4, 8 (artefact)
def artefact_settings(work: Path, s: dict) -> None:
    def drop(sec, key):
        return lambda d: d[sec].pop(key) and None

    def put(sec, key, val):
        return lambda d: d[sec].__setitem__(key, val)

    cases = [(3, "intervention.problem_score_max missing", drop("intervention", "problem_score_max")),
             (3, "intervention.merge missing", drop("intervention", "merge")),
             (3, "prompt.seed missing", drop("prompt", "seed")),
             (3, 'multi_token_intervention "false" (a string)', put("intervention", "multi_token_intervention", "false")),
             (3, "symbolic_encoding_layer true", put("intervention", "symbolic_encoding_layer", True)),
             (3, "an unknown key in intervention", put("intervention", "gate_bias", 0.3)),
             (3, "an unknown top-level key", lambda d: d.__setitem__("intervnetion", {})),
             (3, 'problem_score_threshold "0.2" (a string)', put("intervention", "problem_score_threshold", "0.2")),
             (3, "prompt.complexity -3", put("prompt", "complexity", -3)),
             (3, "symbolic_decoding_layers [-1]", put("intervention", "symbolic_decoding_layers", [-1])),
             (3, 'model.n_layers "4" (a string)', put("model", "n_layers", "4")),
             (3, "engine.VSA_dim 64.0 (a float)", put("engine", "VSA_dim", 64.0)),
             (3, "starting_skip_strength -2", put("intervention", "starting_skip_strength", -2.0)),
             (8, "prompt.seed of 5,000 digits", lambda d: json.dumps(d).replace('"seed": 5', '"seed": ' + "9" * 5000)),
             (8, "extra nested 100,000 deep", lambda d: json.dumps(d)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")]
    for cls, case, edit in cases:
        iv = edited(work, s, f"s{len(OUT)}", edit_json=edit)
        judge(OUT, cls, f"ask on an artefact with {case}", ask(s, iv, "What is 12 times 7 mod 1000?"),
              refuse=True, names="intervention.json")


def artefact_tensors(work: Path, s: dict) -> None:
    def nan(key, value=float("nan")):
        def f(t, torch):
            t[key] = t[key].clone()
            t[key].view(-1)[0] = value
        return f

    cases = [("NaN in the encoder", nan("encoder")), ("inf in the decoder", nan(f"decoder.{LAYER}", float("inf"))),
             ("NaN in the codebook", nan("codebook")), ("NaN in the merge norm", nan(f"merge.{LAYER}.norm.weight")),
             ("an integer encoder", lambda t, torch: t.__setitem__("encoder", t["encoder"].round().to(torch.int64))),
             ("a 1-D merge norm of another length", lambda t, torch: t.__setitem__(f"merge.{LAYER}.norm.weight", torch.ones(3))),
             ("an unknown tensor", lambda t, torch: t.__setitem__("decoder.9", t[f"decoder.{LAYER}"].clone()))]
    for case, edit in cases:
        iv = edited(work, s, f"t{len(OUT)}", edit_tensors=edit)
        judge(OUT, 4, f"ask on an artefact with {case}", ask(s, iv, "What is 12 times 7 mod 1000?"),
              refuse=True, names="intervention")
    iv = edited(work, s, "json_nan", edit_tensors=nan("encoder"))
    r = ask(s, iv, "--json", "What is 12 times 7 mod 1000?")
    try:
        for line in r.stdout.splitlines():
            json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        bad = ""
    except ValueError as exc:
        bad = f"--json printed {exc}, not JSON"
    judge(OUT, 4, "ask --json on a NaN encoder: strict JSON or a refusal", r, refuse=True, wrong=bad)


# ----------------------------------------------------------------------------- class 5
WRITER = """
import sys, torch
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention, save_intervention, load_intervention
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.maps import model_info
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
folder, tag, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
V, D = 256, 4096
art = TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=3, seed=1), torch.full((V, D), float(tag)),
      {1: torch.full((D, V), float(tag))}, {}, InterventionOptions(symbolic_encoding_layer=1, symbolic_decoding_layers=[1]),
      {"complexity": 2, "limit_solution_digits": True, "seed": 5}, model_info("f", D, 4), "", {"tag": tag})
bad = 0
for i in range(n):
    if tag >= 0:
        save_intervention(folder, art)
    try:
        back = load_intervention(folder)
    except Exception:
        continue
    bad += int(back.extra.get("tag") != int(back.encoder[0, 0]))
print("mismatched", bad)
"""


def artefact_unit(work: Path, s: dict) -> None:
    from neurosymbolic_llm.pipeline.artefact import load_intervention

    target = work / "unit" / "iv"
    shutil.copytree(s["iv"], target)
    before = harness.tree(target)
    snippet = ("import sys; from neurosymbolic_llm.pipeline.artefact import load_intervention, save_intervention\n"
               "from neurosymbolic_llm.pipeline.errors import run_entry_point\n"
               "def main(argv=None):\n    art = load_intervention(sys.argv[1]); art.encoder = art.encoder * 2\n"
               "    art.extra['bad'] = {1, 2}  # not JSON\n"
               "    save_intervention(sys.argv[2], art)\n"
               "raise SystemExit(run_entry_point(main))\n")
    r = run(python("-c", snippet, str(s["iv"]), str(target)))
    try:
        load_intervention(target)
        loss = "" if harness.tree(target) == before else "the previous artefact was changed"
    except Exception as exc:  # noqa: BLE001
        loss = f"the previous artefact no longer loads ({type(exc).__name__})"
    judge(OUT, 5, "a save that fails after the tensors (settings not JSON) over an existing artefact", r,
          refuse=True, loss=loss)
    folder = work / "unit" / "race"
    procs = [subprocess.Popen(python("-c", WRITER, str(folder), str(tag), "12"), env=harness.ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for tag in (1, 2, -1)]
    outs = [p.communicate(timeout=600) for p in procs]
    bad = sum(int(o.split("mismatched")[1]) for o, _ in outs if "mismatched" in o)
    err = next((e for _, e in outs if "Traceback" in e), "")
    r = subprocess.CompletedProcess([], 0, "", err)
    judge(OUT, 5, "two concurrent writers and a reader of one artefact folder", r, refuse=False,
          loss=f"{bad} loads returned one writer's tensors with the other's settings" if bad else "")


# ----------------------------------------------------------------------------- class 6
def saved_run(s: dict, prog: Path, run_name: str) -> Path:
    folder = prog / "results" / run_name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(s["prog"] / "models", prog / "models", dirs_exist_ok=True)
    (folder / "config_fine_tune.yaml").write_text(
        f"run_name: {run_name}\nchpt_dir: {s['ckpt']}\nencoder_path: models/encoders_m.pth\n"
        f"decoder_path: models/decoders_m.pth\nsymbolic_encoding_layer: {LAYER}\nsymbolic_decoding_layers: [{LAYER}]\n"
        f"problem_score_threshold: 0.2\nproblem_type: [gcd]\n")
    return folder


def export_cases(work: Path, s: dict) -> None:
    prog = work / "export"
    folder = saved_run(s, prog, "R")
    shutil.copytree(s["iv"], folder / "intervention")
    before = harness.tree(folder / "intervention")
    r = run(export("--run", "R", "--programs_dir", str(prog)), cwd=str(prog))
    judge(OUT, 6, "export --run R over R's own stage-3 artefact (default --out)", r, refuse=True,
          loss="" if harness.tree(folder / "intervention") == before else "R's stage-3 artefact was overwritten")
    holder = subprocess.Popen(python("-c", "import sys, time\nfrom neurosymbolic_llm.pipeline.locks import stage_lock\n"
                                     "with stage_lock(sys.argv[1], 'fine_tune_decoders', 'R'):\n"
                                     "    print('held', flush=True); time.sleep(120)\n", str(folder)),
                              env=harness.ENV, stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    try:
        r = run(export("--run", "R", "--programs_dir", str(prog), "--out",
                       str(work / "export" / "out_running")), cwd=str(prog))
    finally:
        holder.kill()
        holder.wait()
    judge(OUT, 6, "export --run R while R's stage 3 runs (its lock held)", r, refuse=True)
    (folder / "training_state.pt").write_bytes(b"x")
    r = run(export("--run", "R", "--programs_dir", str(prog), "--out",
                   str(work / "export" / "out_unfinished")), cwd=str(prog))
    judge(OUT, 6, "export --run R of an unfinished stage 3 (a training state, no results)", r, refuse=True)


# ----------------------------------------------------------------------------- class 10
def programs_dir_cases(work: Path, s: dict) -> None:
    prog = work / "pd"
    saved_run(s, prog, "P")
    elsewhere = work / "pd_cwd"
    elsewhere.mkdir()
    r = run(export("--run", "P", "--programs_dir", str(prog), "--out",
                   str(work / "pd_out1")), cwd=str(elsewhere))
    judge(OUT, 10, "export --run P --programs_dir D from another folder (relative saved maps)", r, refuse=False)
    import torch
    from neurosymbolic_llm.pipeline.maps import load_maps
    decoy = load_maps(prog / "models" / "encoders_m.pth", "encoder")
    (elsewhere / "models").mkdir()
    for kind in ("encoders", "decoders"):
        data = torch.load(prog / "models" / f"{kind}_m.pth", weights_only=True)
        data["weights"] = {k: v * 0 + 1 for k, v in data["weights"].items()}
        torch.save(data, elsewhere / "models" / f"{kind}_m.pth")
    r = run(export("--run", "P", "--programs_dir", str(prog), "--out",
                   str(work / "pd_out2")), cwd=str(elsewhere))
    wrong = ""
    if r.returncode == 0:
        from safetensors.torch import load_file
        got = load_file(str(work / "pd_out2" / "intervention.safetensors"))["encoder"]
        wrong = "" if torch.equal(got, decoy.weights[LAYER]) else "used the working folder's maps, not --programs_dir's"
    judge(OUT, 10, "export --run P --programs_dir D beside other maps of the same relative name", r, refuse=False,
          wrong=wrong)


# ----------------------------------------------------------------------------- class 7 (+8)
def ask_cases(work: Path, s: dict) -> None:
    q = "What is 12 times 7 mod 1000?"
    judge(OUT, 7, "ask --max_new_tokens -5", ask(s, s["iv"], "--max_new_tokens", "-5", q), refuse=True)
    r = ask(s, s["iv"], "--max_seq_len", "300", q, "What is the GCD of 12 and 8? " + "please " * 400)
    judge(OUT, 7, "ask: a good question, then one that fills --max_seq_len", r, refuse=True, names="question 2",
          loss="" if "Q: What is 12 times 7" in r.stdout else "question 1's answer lost")
    r = ask(s, s["iv"], "What is 12 times \x1b[31m7 mod 1000?")
    judge(OUT, 7, "ask: ANSI escapes in a question", r, refuse=False,
          wrong="the escape printed raw" if "\x1b" in r.stdout else "")
    f = work / "bom.txt"
    f.write_bytes("\ufeffWhat is 12 times 7 mod 1000?\n".encode())
    r = ask(s, s["iv"], "--questions_file", str(f))
    judge(OUT, 7, "ask: a questions file with a BOM", r, refuse=False,
          wrong="the BOM read as part of the question" if "\ufeff" in r.stdout or "asked as non-math" in r.stdout
          or "non-math prompt" in r.stdout else "")
    f = work / "ls.txt"
    f.write_text("What is 12 times\u2028 7 mod 1000?\n", encoding="utf-8")
    r = ask(s, s["iv"], "--questions_file", str(f))
    judge(OUT, 7, "ask: U+2028 inside a question", r, refuse=False,
          wrong=f"{r.stdout.count('Q: ')} questions read from one line" if r.stdout.count("Q: ") != 1 else "")
    r = ask(s, s["iv"], "--questions_file", "-", input=q + "\n")
    judge(OUT, 7, "ask --questions_file - (stdin)", r, refuse=False,
          wrong="" if r.stdout.count("Q: ") == 1 else "stdin not read")
    f = work / "latin1.txt"
    f.write_bytes("Quel est le PGCD de 12 et 8, déjà?\n".encode("latin-1"))
    judge(OUT, 8, "ask: a Latin-1 questions file", ask(s, s["iv"], "--questions_file", str(f)), refuse=True,
          names="latin1.txt")
    r = ask(s, s["iv"], "What is the GCD of 12 and " + "7" * 5000 + "?")
    judge(OUT, 8, "ask: a question with a 5,000-digit number", r, refuse=False)
    tok = work / "tok_swapped" / "tokenizer.model"
    tok.parent.mkdir()
    lines = Path(TOKENIZER).read_text().splitlines()
    lines[16], lines[17] = "MQ== 17", "Mg== 16"  # the digits 1 and 2 swapped
    tok.write_text("\n".join(lines) + "\n")
    judge(OUT, 2, "ask with a tokenizer whose digits 1 and 2 are swapped", ask(s, s["iv"], "--tokenizer_path",
                                                                                  str(tok), q), refuse=True)


# ----------------------------------------------------------------------------- classes 1, 2, 8 (stage 1)
def stage1(s: dict, prog: Path, run_name: str, *extra: str) -> list[str]:
    return script("gather_hidden_states.py", "--run_name", run_name, "--chpt_dir", str(s["ckpt"]), "--programs_dir",
                  str(prog), "--train_data_rounds", "60", "--val_data_rounds", "4", "--testing_data_rounds", "4",
                  "--VSA_dim", "64", "--max_digits", "4", "--n_samples", "2", "--save_frequency", "4",
                  "--device", "cpu", *extra)


def store_cases(work: Path, s: dict) -> None:
    prog, store = work / "st", work / "st" / "shared_store"
    pair = [subprocess.Popen(stage1(s, prog, name, "--gathered_data_dir", str(store), *extra), env=harness.ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, extra in (("A", ()), ("B", ("--vsa_seed", "7")))]
    done = [subprocess.CompletedProcess(p.args, p.returncode, *p.communicate(timeout=600)) for p in pair]
    for p, d in zip(pair, done):
        d.returncode = p.returncode
    refused = [d for d in done if d.returncode != 0]
    judge(OUT, 1, "two stage-1 runs (other run names, other codebooks) started together on one store",
          refused[0] if refused else done[1], refuse=True)
    other = work / "st" / "other_store"
    run(stage1(s, prog, "C", "--gathered_data_dir", str(other), "--vsa_seed", "9"))
    run(stage1(s, prog, "A2", "--gathered_data_dir", str(work / "st" / "clean")))
    mixed = work / "st" / "mixed"
    shutil.copytree(work / "st" / "clean", mixed)
    shutil.copy(other / "train" / "shard_00001.pt", mixed / "train" / "shard_00001.pt")
    r = run(script("train_encoders_and_decoders.py", "--run_name", "M", "--generate_data", "0", "--programs_dir",
                   str(prog), "--gathered_data_dir", str(mixed), "--train_data_rounds", "60", "--val_data_rounds", "4",
                   "--testing_data_rounds", "4", "--VSA_dim", "64", "--max_digits", "4", "--device", "cpu",
                   "--training_epochs", "2", "--decoding_epochs", "2"))
    judge(OUT, 1, "stage 2 on a store holding a shard of another codebook", r, refuse=True)
    # class 2: resume a store with a copy of the model that differs in one unsampled element
    import torch
    changed = work / "ckpt_changed"
    shutil.copytree(s["ckpt"], changed)
    shard = changed / "consolidated.00.pth"
    sd = torch.load(shard, weights_only=True)
    key = next(k for k in sd if k.endswith("ffn_norm.weight"))
    sd[key][33] += 0.5
    torch.save(sd, shard)
    resumed = work / "st" / "resume"
    shutil.copytree(work / "st" / "clean", resumed)
    (resumed / "train" / "shard_00003.pt").unlink()
    cmd = stage1(s, prog, "A3", "--gathered_data_dir", str(resumed))
    cmd[cmd.index("--chpt_dir") + 1] = str(changed)
    judge(OUT, 2, "stage 1 resumed with a copy of the model with one FFN-norm element changed", run(cmd), refuse=True)
    env = dict(harness.ENV, WORLD_SIZE="2")
    r = run(stage1(s, prog, "W", "--gathered_data_dir", str(work / "st" / "w")), timeout=120, env=env)
    judge(OUT, 8, "stage 1 with a stray WORLD_SIZE=2 in the environment", r, refuse=True)


GROUPS = {"artefact": (artefact_settings, artefact_tensors), "unit": (artefact_unit,), "export": (export_cases,),
          "programs_dir": (programs_dir_cases,), "ask": (ask_cases,), "store": (store_cases,)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(harness.ROOT / "src"), help="the package source the commands run with")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"groups to run, of {', '.join(GROUPS)}")
    a = ap.parse_args(argv)
    harness.use_source(a.src)
    work = harness.work_folder(a.keep, "hostile2_")
    s = setup(work)
    for group in a.only.split(","):
        for fn in GROUPS[group]:
            fn(work, s)
    print(f"\n{harness.table(OUT, CLASSES)}\n\nsource: {a.src}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
