"""Stage 2: linear encoders (hidden -> VSA) and decoders (VSA -> hidden) for every layer.

All layers train together as one batched linear map `W [L, out, in]` (one `bmm` per step, not a
loop of small models): the loss is the sum over layers of each layer's RMSE, so the layers do not
interact and Adam treats each weight on its own, exactly as L separate trainings would.
Encoder: RMSE(E_l(h_l), S) to the true problem vector S. Decoder, with the encoder frozen:
RMSE(Dec_l(E_l(h_l)), h_l), back to the hidden state through the VSA bottleneck.

Deliberate choices: float32 master weights (the original trained in bf16); the learning-rate
schedule {epoch: multiplier} applies to every layer (the original decayed only the last layer);
weights start from the ridge least-squares solution (the optimum of the training MSE up to the
ridge term), and each layer keeps the weights of its best validation epoch, so training from there
can only help on held-out data; a training stops early once no layer improved for `patience`
epochs. With `--map_init random` the maps start at PyTorch's default init.

Evaluation decodes every layer's encoder output on each split through the engine: exact match of x,
y and the problem type, and per-digit accuracy over the operand digits, for seen and unseen types.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from neurosymbolic_llm.pipeline import figures, paths, rows
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, EngineMismatchError
from neurosymbolic_llm.pipeline.files import MiB, atomic_write_csv, check_output_folders
from neurosymbolic_llm.pipeline.finite import DIVERGED, require_finite
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore, SplitData
from neurosymbolic_llm.pipeline.layer_choice import best_encoding_layer, read_key, read_layers
from neurosymbolic_llm.pipeline.least_squares import apply_maps, least_squares, numerical_rank_cutoff  # noqa: F401 (re-exported)
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import model_info, save_maps
from neurosymbolic_llm.pipeline.runtime import make_engine, progress, resolve_device
from neurosymbolic_llm.pipeline.tracking import Tracker

STAGE = "train_encoders_and_decoders"  # the name of its lock (locks.py)
# all_accuracy: x, y and the type all decoded right (what the symbolic route needs to answer)
CSV_COLUMNS = ["layer", "split", "seen", "n", "x_accuracy", "y_accuracy", "type_accuracy", "all_accuracy",
               "digit_accuracy"]


# ----------------------------------------------------------------------------- batched linear maps
def layer_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE per layer: pred [B, L, out], target [B, L, out] or [B, out] -> [L]."""
    if target.dim() == 2:
        target = target[:, None, :]
    return (pred - target.to(pred.dtype)).pow(2).mean(dim=(0, 2)).sqrt()


def train_maps(name: str, X: torch.Tensor, Y: torch.Tensor, Xval: torch.Tensor, Yval: torch.Tensor, *,
               out_dim: int, epochs: int, lr: float, schedule: dict[int, float], batch: int, init: str,
               ridge: float, dtype: torch.dtype, seed: int, patience: int = 0, tracker=None,
               pre: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """Train L linear maps together; returns (W [L, out, in] of each layer's best validation epoch, stats).

    X [N, L, in0] is mapped through the frozen `pre` [L, in, in0] first when given (the decoder's input
    is the frozen encoder's output); Y [N, out] (same target for every layer) or [N, L, out].
    """
    device = X.device
    L = X.shape[1]
    in_dim = pre.shape[1] if pre is not None else X.shape[2]
    gen = torch.Generator().manual_seed(seed)
    if init == "least_squares":
        W0 = least_squares(X, Y, ridge, max(batch, 4096), dtype, pre)
    else:
        bound = 1 / math.sqrt(in_dim)  # nn.Linear's default (Kaiming-uniform with a = sqrt(5))
        W0 = (torch.rand(L, out_dim, in_dim, generator=gen, dtype=dtype) * 2 - 1).mul_(bound).to(device)
    W = torch.nn.Parameter(W0.clone())
    opt = torch.optim.Adam([W], lr=lr)
    inputs = (lambda x: apply_maps(pre, x)) if pre is not None else (lambda x: x)

    @torch.no_grad()
    def evaluate(Xe, Ye) -> torch.Tensor:  # [L]
        sq = torch.zeros(L, dtype=torch.float64, device=device)
        for b in range(0, Xe.shape[0], 4096):
            sq += layer_rmse(apply_maps(W, inputs(Xe[b:b + 4096])), Ye[b:b + 4096]).double().pow(2) * Xe[b:b + 4096].shape[0]
        return (sq / Xe.shape[0]).sqrt()

    best_val = evaluate(Xval, Yval)  # [L]
    best_W = W.detach().clone()
    best_epoch = torch.zeros(L, dtype=torch.long)
    progress_val, progress_epoch = best_val.clone(), 0  # for patience: improvements of >= 0.1 % only
    history = []
    bar = progress(total=epochs, desc=f"train {name}s ({L} layers)", unit="epoch")
    stopped = ""
    for epoch in range(1, epochs + 1):
        if epoch in schedule:
            for group in opt.param_groups:
                group["lr"] *= schedule[epoch]
        perm = torch.randperm(X.shape[0], generator=gen).to(device)
        total = torch.zeros(L, dtype=torch.float64, device=device)
        for b in range(0, X.shape[0], batch):
            idx = perm[b:b + batch]
            with torch.no_grad():
                xb = inputs(X[idx])  # [B,L,in]
            rmse = layer_rmse(apply_maps(W, xb), Y[idx])  # [L]
            opt.zero_grad(set_to_none=True)
            rmse.sum().backward()
            opt.step()
            total += rmse.detach().double().pow(2) * idx.shape[0]
        train = (total / X.shape[0]).sqrt()
        val = evaluate(Xval, Yval)
        better = val < best_val  # [L]
        with torch.no_grad():
            best_W[better] = W.detach()[better]
        best_val = torch.where(better, val, best_val)
        best_epoch[better.cpu()] = epoch
        rec = {f"{name}_epoch": epoch, f"{name}_train_rmse": train.mean().item(),
               f"{name}_val_rmse": val.mean().item(), f"{name}_lr": opt.param_groups[0]["lr"]}
        history.append(rec)
        bar.set_postfix(train=f"{rec[f'{name}_train_rmse']:.4f}", val=f"{rec[f'{name}_val_rmse']:.4f}", refresh=False)
        bar.update()
        if tracker is not None:
            tracker.log(rec, step=epoch)
        if (val < progress_val * (1 - 1e-3)).any():
            progress_val, progress_epoch = torch.minimum(progress_val, val), epoch
        if patience and epoch - progress_epoch >= patience:
            stopped = (f"{name} training (all {L} layers together) stopped early at epoch {epoch} of {epochs}: "
                       f"no layer's validation RMSE improved by 0.1% in the last {patience} epochs (--patience); "
                       f"each layer keeps its best epoch")
            bar.total = epoch  # the bar ends full: the training finished, it did not hang
            break
    bar.close()
    if stopped:
        print(stopped, flush=True)
    stats = {"best_val_rmse": best_val.tolist(), "best_epoch": best_epoch.tolist(), "epochs_run": len(history),
             "history": history}
    return best_W, stats


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def encoding_accuracy(engine, W_enc: torch.Tensor, data: SplitData, layers: list[int], split: str,
                      seen_types: list[str], n_digits: int, batch: int = 2048) -> list[dict]:
    """Rows of the encoding-accuracy table for one split: per layer, seen and unseen types."""
    L, N = W_enc.shape[0], len(data)
    ok_x = torch.zeros(L, N, dtype=torch.bool)
    ok_y, ok_t = ok_x.clone(), ok_x.clone()
    digits_ok = torch.zeros(L, N)
    for b in range(0, N, batch):
        sl = slice(b, min(N, b + batch))
        pred = apply_maps(W_enc, data.hidden[sl].to(W_enc.device))  # [B,L,V]
        flat = pred.transpose(0, 1).reshape(-1, pred.shape[-1])  # [L*B,V]
        B = sl.stop - sl.start
        x, y, t = (v[sl].to(engine.device) for v in (data.x, data.y, data.type_id))
        xh = engine.decode_number(flat, "n1").view(L, B)
        yh = engine.decode_number(flat, "n2").view(L, B)
        th, _ = engine.decode_problem_type_ids(flat)
        dx = engine.decode_digits(flat, "n1").view(L, B, -1)[..., :n_digits]  # [L,B,n]
        dy = engine.decode_digits(flat, "n2").view(L, B, -1)[..., :n_digits]
        tx, ty = engine.digits(x)[:, :n_digits], engine.digits(y)[:, :n_digits]  # [B,n]
        ok_x[:, sl] = (xh == x).cpu()
        ok_y[:, sl] = (yh == y).cpu()
        ok_t[:, sl] = (th.view(L, B) == t).cpu()
        digits_ok[:, sl] = ((dx == tx).float().mean(-1) + (dy == ty).float().mean(-1)).cpu() / 2
    seen_ids = torch.tensor([engine.possible_problems.index(p) for p in seen_types
                             if p in engine.possible_problems], dtype=torch.long)
    seen = torch.isin(data.type_id, seen_ids)
    rows = []
    for j, layer in enumerate(layers):
        for label, mask in (("seen", seen), ("unseen", ~seen)):
            n = int(mask.sum())
            if n == 0:
                continue
            rows.append({"layer": layer, "split": split, "seen": label, "n": n,
                         "x_accuracy": ok_x[j, mask].float().mean().item(),
                         "y_accuracy": ok_y[j, mask].float().mean().item(),
                         "type_accuracy": ok_t[j, mask].float().mean().item(),
                         "all_accuracy": (ok_x[j, mask] & ok_y[j, mask] & ok_t[j, mask]).float().mean().item(),
                         "digit_accuracy": digits_ok[j, mask].mean().item()})
    return rows


def rows_curve(engine, reads: dict, train: SplitData, val: SplitData, sizes: list[int], *, ridge: float,
               trained_types: list[str], n_digits: int) -> pd.DataFrame:
    """Stage 2's validation accuracy against the training rows: per read ({key: (train view, val
    view)} with hidden [N, 1, in]), the least-squares encoder of the first n training rows for each n
    of `sizes` (capped at the rows there are). Columns read, rows, all_accuracy (seen types, x, y and
    type all right), x_accuracy, y_accuracy."""
    out = []
    for key, (tr, va) in reads.items():
        for n in sorted({min(int(s), len(tr)) for s in sizes}):
            W = least_squares(tr.hidden[:n], train.targets[:n], ridge, 4096, torch.float32)  # [1,V,in]
            row = next(r for r in encoding_accuracy(engine, W, va, [key], "val", trained_types, n_digits)
                       if r["seen"] == "seen")
            out.append({"read": str(key), "rows": n, **{k: row[k] for k in ("all_accuracy", "x_accuracy", "y_accuracy")}})
    return pd.DataFrame(out, columns=["read", "rows", "all_accuracy", "x_accuracy", "y_accuracy"])


def val_all_accuracy(table: pd.DataFrame) -> dict:
    """{read (a layer, or "3+4+5"): share of the validation split's seen-type questions with x, y and
    type all decoded} (the encoder file's extra["val_all_accuracy"]; {} when that split holds no seen type)."""
    val = table[(table["split"] == "val") & (table["seen"] == "seen")]
    return {read_key(r.layer): float(r.all_accuracy) for r in val.itertuples()}


def best_layer_line(table: pd.DataFrame) -> tuple[Optional[int], str]:
    """The best layer on the validation split (`best_encoding_layer` over every layer: what stage 3's
    --symbolic_encoding_layer auto picks when the decoding layers allow it) and the console line
    saying so; the test split's accuracy of that layer is shown beside it, never used to choose."""
    val = val_all_accuracy(table)
    if not val:
        return None, "best layer on validation: none (the validation split holds no seen-type question)"
    layer = best_encoding_layer(val, max(read_layers(k)[-1] for k in val))
    test = table[(table["split"] == "test") & (table["seen"] == "seen") & (table["layer"].map(read_key) == layer)]
    beside = f"; test split: {test['all_accuracy'].iloc[0]:.2f}" if len(test) else ""
    line = f"best layer on validation: {layer} (seen types, x, y and type all decoded: {val[layer]:.2f}{beside})"
    if val[layer] <= 0:  # exact x and y by chance is about 10^-(2 x operand digits): zero is chance level
        line += ("\nwarning: stage 2 reads nothing on validation: no layer decoded any seen-type validation question "
                 "(x, y and type), so stage 3 would write noise; see Programs/configs/own_model.yaml (ridge, layers)")
    return layer, line


def log_accuracy(tracker, table: pd.DataFrame, csv: Path, png: Path, split: str = "test") -> None:
    """The accuracy table (every split) and a line plot of x, y and type accuracy against the layer."""
    tracker.table("encoding_accuracy", table, csv)
    sub = single_layers(table[table["split"] == split])
    xs = sorted(set(sub["layer"]))
    ys = {f"{col.replace('_accuracy', '')} ({seen} types)": part.set_index("layer")[col].reindex(xs).tolist()
          for seen, part in sub.groupby("seen", sort=True) for col in ("x_accuracy", "y_accuracy", "type_accuracy")}
    if xs:
        tracker.line_plot("encoding_accuracy_vs_layer", xs, ys, xname="layer",
                          title=f"Linear encoder decoding accuracy vs layer ({split} split)")
    tracker.image("encoding_accuracy_plot", png)


SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def plot_accuracy(table: pd.DataFrame, path: Path, split: str = "test") -> Path:
    """encoding_accuracy.png: one split's accuracy against the layer (figures.encoding_lines), the
    layer chosen on validation (best_layer_line) marked."""
    chosen, _ = best_layer_line(table)
    val = val_all_accuracy(table)
    what = "layer" if isinstance(chosen, int) else "layers"
    text = f"{what} {chosen}: best on validation\n(x, y and type all: {val[chosen]:.0%})" if chosen is not None else ""
    part = table[table["split"] == split]
    joint = {read_layers(r.layer): r.all_accuracy for r in part[part["seen"] == "seen"].itertuples()
             if len(read_layers(r.layer)) > 1}  # drawn as a bar over their layers, x, y and type all
    fig = figures.encoding_lines(single_layers(part), "How well a linear encoder reads the question, "
                                 f"by layer ({SPLIT_NAMES.get(split, split)} split)",
                                 read_layers(chosen) if chosen is not None else None, text, joint)
    return figures.save(fig, path)


def single_layers(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of one-layer reads (joint reads left out), with integer layers."""
    one = table[table["layer"].map(lambda k: len(read_layers(k)) == 1)].copy()
    one["layer"] = one["layer"].map(read_key).astype(int)
    return one


# ----------------------------------------------------------------------------- the stage
def check_store_matches(cfg, manifest: dict, engine) -> None:
    """Stage 2 must use the engine and the data sources the hidden states were gathered with."""
    if engine.fingerprint() != manifest["engine_fingerprint"]:
        raise EngineMismatchError(
            f"the gathered data was made with another VSA engine (VSA_dim, max_digits, possible_problems or "
            f"vsa_seed differ from stage 1: the manifest says {manifest['config'].get('VSA_dim')}, "
            f"{manifest['config'].get('max_digits')}, {manifest['config'].get('possible_problems')}, "
            f"{manifest['config'].get('vsa_seed')})")
    for split, source in manifest["sources"].items():
        now = rows.split_source(cfg, split)
        if now != source:
            raise DataError(f"split {split!r}: stage 1 gathered {source}, the options now describe {now}; "
                            f"give stage 2 the same data options as stage 1")


def run_training(cfg) -> dict:
    """Stage 2 end to end; returns {"encoders", "decoders", "table", "summary"}. Inputs and output
    folders (write access, room for the map files) are checked before any work; one process per run
    name (locks.py)."""
    if cfg.batch_size < 1 or cfg.training_epochs < 0 or cfg.decoding_epochs < 0:
        raise ConfigError("--batch_size must be >= 1 and the epoch counts >= 0")
    device = resolve_device(cfg.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.weight_dtype]
    store = HiddenStore(paths.store_dir(cfg))
    manifest = store.read_manifest()
    engine = make_engine(cfg)
    check_store_matches(cfg, manifest, engine)
    if not manifest.get("complete"):
        raise DataError(f"{store.root}: gathering is not finished ({manifest['rows']} of {manifest['totals']} rows); "
                        f"rerun stage 1 (--generate_data 1) to complete it")
    layers = sorted(set(cfg.layer_numbers)) if cfg.layer_numbers else list(manifest["layers"])
    joint = sorted(set(cfg.joint_encoder_layers))
    if joint and (len(joint) < 2 or not set(joint) <= set(layers)):
        raise ConfigError(f"--joint_encoder_layers {cfg.joint_encoder_layers}: give two or more of the layers "
                          f"stage 2 trains ({layers})")
    run = paths.run_name_or_today(cfg.run_name)
    out_dir = paths.results_dir(run, cfg.programs_dir)
    models = paths.models_dir(cfg.programs_dir)
    map_bytes = (2 * len(layers) + len(joint)) * engine.VSA_dim * manifest["dim"] * 4  # encoders + decoders, float32
    with stage_lock(out_dir, STAGE, run):
        check_output_folders({models: ("the encoder and decoder files", 2 * map_bytes + MiB),
                              out_dir: ("the encoding-accuracy table and plot", MiB)})
        return _fit(cfg, store, manifest, engine, layers, joint, run, out_dir, models, device, dtype)


def _fit(cfg, store, manifest, engine, layers, joint, run, out_dir, models, device, dtype) -> dict:
    """Train the maps of every layer, measure them, write the files (run_training's work)."""
    tracker = Tracker(out_dir, stage="encoders", run_name=run, config=cfg, project=cfg.wandb_project,
                      group=cfg.wandb_group, log_wandb=cfg.log_wandb)
    t0 = time.perf_counter()
    data = {s: store.load_split(s, layers, manifest) for s in ("train", "val", "test")}  # read once
    t_load = time.perf_counter() - t0
    engine.to(device)
    Xtr, Xva = data["train"].hidden.to(device), data["val"].hidden.to(device)  # [N,L,D] storage dtype
    common = dict(batch=cfg.batch_size, init=cfg.map_init, ridge=cfg.ridge, dtype=dtype, seed=cfg.seed,
                  patience=cfg.patience, tracker=tracker)
    t1 = time.perf_counter()
    W_enc, enc_stats = train_maps("encoder", Xtr, data["train"].targets.to(device), Xva, data["val"].targets.to(device),
                                  out_dim=engine.VSA_dim, epochs=cfg.training_epochs, lr=cfg.learning_rate,
                                  schedule=cfg.encoder_lr_schedule, **common)
    W_dec, dec_stats = train_maps("decoder", Xtr, Xtr, Xva, Xva, out_dim=manifest["dim"], epochs=cfg.decoding_epochs,
                                  lr=cfg.decoder_learning_rate or cfg.learning_rate,
                                  schedule=cfg.decoder_lr_schedule, pre=W_enc, **common)
    joint_key, W_joint = read_key(joint) if joint else None, None
    if joint:  # one linear map of several layers' states (Programs/real/README.md: reads more than any one layer)
        pos = [layers.index(l) for l in joint]
        views = {s: data[s].joint(pos) for s in data}
        W_joint, _ = train_maps("joint encoder", views["train"].hidden.to(device), data["train"].targets.to(device),
                                views["val"].hidden.to(device), data["val"].targets.to(device),
                                out_dim=engine.VSA_dim, epochs=cfg.training_epochs, lr=cfg.learning_rate,
                                schedule=cfg.encoder_lr_schedule, **common)  # [1,V,kD]
    t_train = time.perf_counter() - t1

    n_digits = min(cfg.complexity + 1, engine.max_digits)
    # "seen" = the types the maps are trained on: those of the training split, whatever --problem_type says
    present = set(data["train"].type_id.unique().tolist())
    trained_types = [p for i, p in enumerate(engine.possible_problems) if i in present]
    rows = []
    for split in ("train", "val", "test"):
        rows += encoding_accuracy(engine, W_enc, data[split], layers, split, trained_types, n_digits)
        if joint:
            rows += encoding_accuracy(engine, W_joint, views[split], [joint_key], split, trained_types, n_digits)
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    csv_path = atomic_write_csv(table, out_dir / "encoding_accuracy.csv", float_format="%.4f")
    png = plot_accuracy(table, out_dir / "encoding_accuracy.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    if cfg.rows_curve:  # the best single layer and the joint read, refitted on fewer rows (validation)
        val = val_all_accuracy(table)
        best_one = max(layers, key=lambda l: val.get(l, -1.0))
        reads = {best_one: (data["train"].joint([layers.index(best_one)]), data["val"].joint([layers.index(best_one)]))}
        if joint:
            reads[joint_key] = (views["train"], views["val"])
        curve = rows_curve(engine, reads, data["train"], data["val"], cfg.rows_curve, ridge=cfg.ridge,
                           trained_types=trained_types, n_digits=n_digits)
        atomic_write_csv(curve, out_dir / "rows_curve.csv", float_format="%.4f")
        figures.save(figures.rows_curve(curve, "Validation questions read right (x, y and type) against "
                                               "stage 2's training rows"), out_dir / "rows_curve.png")
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    for kind, W in (("encoder", W_enc), ("decoder", W_dec)):  # both or neither file is written
        require_finite({f"the {kind} of layer {l}": W[j] for j, l in enumerate(layers)},
                       f"stage 2 (run {run!r})", f"no map file was written; {DIVERGED} (--learning_rate, "
                       f"--decoder_learning_rate, --ridge, the gathered data)")
    model = manifest["model"]
    info = model_info(model["fingerprint"], model["dim"], model["n_layers"], model.get("weights"), model.get("tokenizer", ""))
    extra = {"run_name": run, "layers": layers, "gathered_data": str(store.root), "trained_types": trained_types}
    enc_extra = {**extra, "val_rmse": enc_stats["best_val_rmse"],  # stage 3's --symbolic_encoding_layer auto
                 "val_all_accuracy": val_all_accuracy(table),
                 "ridge": cfg.ridge, "map_init": cfg.map_init}  # gate_statistics refits the encoder alike
    enc_path = save_maps(models / f"encoders_{run}.pth", "encoder", {l: W_enc[j] for j, l in enumerate(layers)},
                         engine.state_dict(), info, enc_extra, joint={joint_key: W_joint[0]} if joint else None)
    dec_path = save_maps(models / f"decoders_{run}.pth", "decoder", {l: W_dec[j] for j, l in enumerate(layers)},
                         engine.state_dict(), info, {**extra, "val_rmse": dec_stats["best_val_rmse"]})
    summary = {"layers": layers, "encoder_val_rmse": enc_stats["best_val_rmse"],
               "encoder_best_epoch": enc_stats["best_epoch"], "decoder_val_rmse": dec_stats["best_val_rmse"],
               "decoder_best_epoch": dec_stats["best_epoch"], "encoder_epochs_run": enc_stats["epochs_run"],
               "decoder_epochs_run": dec_stats["epochs_run"], "load_s": t_load, "train_s": t_train,
               "encoders": str(enc_path), "decoders": str(dec_path)}
    best, best_line = best_layer_line(table)
    if best is not None:
        summary["best_layer"] = best
    tracker.summary(summary)
    tracker.table("maps", pd.DataFrame({"layer": layers, "encoder_val_rmse": enc_stats["best_val_rmse"],
                                        "encoder_best_epoch": enc_stats["best_epoch"],
                                        "decoder_val_rmse": dec_stats["best_val_rmse"],
                                        "decoder_best_epoch": dec_stats["best_epoch"]}))
    log_accuracy(tracker, table, csv_path, png)
    tracker.finish()
    print(f"encoders: {enc_path}\ndecoders: {dec_path}\nresults: {csv_path}\n{best_line}")
    return {"encoders": enc_path, "decoders": dec_path, "table": table, "summary": summary}
