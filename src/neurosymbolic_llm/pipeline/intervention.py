"""The neurosymbolic step as residual hooks on the frozen model (docs/METHOD.md, "Stage 3 in detail").

At the encoding layer L_e, at each sample's last prompt position (P-1; prompts are left-padded, so
every row ends at P-1):

    z = Enc(h)                      [B, V]   linear map of the unmodified residual (a joint read,
                                             e.g. --symbolic_encoding_layer 3+4+5: of the states of
                                             layers 3, 4 and 5 concatenated [B, 3 D]; L_e = 5)
    scores = T_p · z                [B, T]   gate: pipeline/gate.py's rule on the reading (per sample)
    x, y, type = decode(z)                   (or the true ones with --simulate_perfect_encoder)
    a = enc(solve(type, x, y))      [B, V]   the answer alone: no role, no type atom

and at every decoding layer L_d (>= L_e; encoding runs first within a shared layer):

    h <- gate ? merge(Dec_d(a), h) : h       merge = (1-s)·m + s·h | m + h | RMSNorm(m + h)

Closed-gate samples are kept bit for bit (torch.where), without host synchronisation. Default:
only position P-1 is written (the first answer token's forward). With multi_token_intervention every
position >= P-1 is written: each generated position during generation, positions P-1 .. P+A-2 in a
teacher-forced forward (so training and generation match); with static_encoding the answer vector
of P-1 is reused there, otherwise every position is re-encoded from its own hidden state. With
encode_counter the position t tokens after P-1 gets a + x^t (x the codebook's digit-value base;
nothing is added at t = 0), so the decoder can tell the tokens of a multi-token answer apart.

The same module, in ``mode="adapter"``, is the paper's "LoRA" row (docs/METHOD.md): a = Enc(h), no
gate, no solver, both maps trainable.

Which position is P-1: in a teacher-forced forward the caller says so (``with iv.prompt_length(P)``);
otherwise the chunk fed with ``start_pos == 0`` is taken to be the whole prompt (Llama.generate's
prefill), so P = its length. A forward with ``start_pos == 0`` starts a new batch.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import nn

from neurosymbolic_llm.llama.model import RMSNorm
from neurosymbolic_llm.pipeline.configs import MERGES, InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.gate import READINGS, Gate
from neurosymbolic_llm.pipeline.gate_features import read_problem
from neurosymbolic_llm.symbolic.solver import solve


class Merge(nn.Module):
    """Combine a decoded vector m with the residual h (both float32 [..., D])."""

    def __init__(self, mode: str, dim: int, skip: float = 0.5, trainable_skip: bool = False, eps: float = 1e-5):
        super().__init__()
        if mode not in MERGES:
            raise ConfigError(f"merge {mode!r} is not one of {MERGES}")
        self.mode = mode
        self.skip = nn.Parameter(torch.tensor(float(skip)), requires_grad=trainable_skip and mode == "convex")
        # a registered module, so --rms_layer's norm trains (the original's never reached the optimizer)
        self.norm = RMSNorm(dim, eps=eps) if mode == "add_rmsnorm" else None

    def forward(self, m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.mode == "convex":
            return (1 - self.skip) * m + self.skip * h
        if self.mode == "add":
            return m + h
        return self.norm(m + h)


class SymbolicIntervention(nn.Module):
    """Encoder, decoder(s) and merge(s) applied through the model's residual hooks."""

    def __init__(self, engine, encoder_weight: torch.Tensor, decoder_weights: dict[int, torch.Tensor],
                 opts: InterventionOptions, *, mode: str = "symbolic", complexity: int = 2,
                 limit_solution_digits: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        if mode not in ("symbolic", "adapter"):
            raise ValueError(f"mode must be symbolic or adapter, got {mode!r}")
        self.mode, self.engine, self.opts = mode, engine, opts
        self.read_layers = opts.read_layers()  # ascending; the last one encodes
        self.enc_layer = self.read_layers[-1]
        self.dec_layers = [int(l) for l in opts.symbolic_decoding_layers]
        missing = [l for l in self.dec_layers if l not in decoder_weights]
        if missing:
            raise DataError(f"decoder maps lack decoding layer(s) {missing} (have {sorted(decoder_weights)})")
        V, D_in = encoder_weight.shape  # D_in = k D for k read layers
        D = D_in // len(self.read_layers)
        if D * len(self.read_layers) != D_in:
            raise DataError(f"an encoder of input width {D_in} cannot read the {len(self.read_layers)} layers "
                            f"{opts.symbolic_encoding_layer}")
        # float32 master weights whatever the model's dtype; the model's state is cast at the boundary.
        self.encoder = nn.Linear(D_in, V, bias=False)
        self.decoders = nn.ModuleDict({str(l): nn.Linear(V, D, bias=False) for l in self.dec_layers})
        with torch.no_grad():
            self.encoder.weight.copy_(encoder_weight)
            for l in self.dec_layers:
                self.decoders[str(l)].weight.copy_(decoder_weights[l])
        self.encoder.weight.requires_grad_(mode == "adapter")
        self.merges = nn.ModuleDict({str(l): Merge(opts.merge_mode(), D, opts.starting_skip_strength,
                                                   opts.trainable_skip, norm_eps) for l in self.dec_layers})
        self.complexity, self.limit_solution_digits = complexity, limit_solution_digits
        self.gate = Gate.of(opts)
        self._prompt_len: Optional[int] = None
        self._truth: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self._solve_truth = False  # solving_truth(): the true operands in training only
        self._static: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (a [B,V], gate [B]) of P-1
        self._pending: Optional[tuple[int, int, torch.Tensor, torch.Tensor]] = None  # lo, hi, a [B,K,V], gate [B,K]
        self._last_prompt_pos = 0  # P-1 of the current batch
        self._earlier: dict[int, torch.Tensor] = {}  # a joint read's earlier layers' states [B,S,D] of this forward
        self.records: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ setup
    def to(self, *args, **kwargs):
        out = super().to(*args, **kwargs)
        device = self.encoder.weight.device
        if self.engine is not None and self.engine.device != device:
            self.engine.to(device)
        return out

    @property
    def capture_safe(self) -> bool:
        """Whether Llama.generate may replay decode steps with this hook from CUDA graphs
        (neurosymbolic_llm/llama/static_decode.py). At a one-token step the hook does nothing (one written
        position), or device arithmetic on h and on the answer vector of this call's prompt, or
        re-encodes h without host synchronisation; only the true operands of
        simulate_perfect_encoder, CPU tensors copied at each re-encoded step, cannot be captured."""
        o = self.opts
        return not (o.simulate_perfect_encoder and o.multi_token_intervention and not o.static_encoding)

    @property
    def pending(self) -> Optional[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """The write the decoding hooks make in the current forward: (lo, hi, a [B,K,V], gate [B,K])
        over chunk indices lo..hi-1, set by the encoding hook (None: nothing to write). Training's
        cache (prefix_cache.py) keeps it per row and sets it back for a forward that starts above
        the encoding layer."""
        return self._pending

    @pending.setter
    def pending(self, value) -> None:
        self._pending = value

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def set_truth(self, type_ids=None, x=None, y=None) -> None:
        """True type ids / operands [B] of the next batch (used by simulate_perfect_encoder)."""
        self._truth = None if type_ids is None else (type_ids, x, y)

    @contextlib.contextmanager
    def solving_truth(self):
        """Within the block the solver gets the true operands and type set by set_truth, as with
        --simulate_perfect_encoder (training with --train_on_true_operands)."""
        self._solve_truth = True
        try:
            yield self
        finally:
            self._solve_truth = False

    @contextlib.contextmanager
    def prompt_length(self, P: int):
        """For a teacher-forced forward over prompt + answer: the prompt occupies positions < P."""
        self._prompt_len = int(P)
        try:
            yield self
        finally:
            self._prompt_len = None

    @contextlib.contextmanager
    def attached(self, model):
        """Register the hooks on `model` for the duration of the block."""
        layers = sorted({*self.read_layers, *self.dec_layers})
        handles = [model.register_residual_hook(l, self._hook) for l in layers]
        try:
            yield self
        finally:
            for hd in handles:
                hd.remove()

    # ------------------------------------------------------------------ the hook
    def _hook(self, h: torch.Tensor, ctx) -> Optional[torch.Tensor]:
        if ctx.layer in self.read_layers[:-1]:  # kept until the last read layer of this forward
            self._earlier[ctx.layer] = h
        if ctx.layer == self.enc_layer:
            self._encode(self.read_input(h, self._earlier), ctx.start_pos)
            self._earlier = {}
        if ctx.layer in self.dec_layers and self._pending is not None:
            return self._decode(h, ctx.layer)
        return None

    def _span(self, S: int, start_pos: int) -> tuple[int, int, int]:
        """Chunk indices [lo, hi) to write and the chunk index of P-1 (may lie outside the chunk)."""
        if start_pos == 0:
            self._static = None  # a new batch
        P = self._prompt_len if self._prompt_len is not None else (S if start_pos == 0 else None)
        if P is not None:
            self._last_prompt_pos = P - 1  # kept for later generation steps (the counter's origin)
        first = -1 if P is None else P - 1 - start_pos  # None: a later step, P-1 lies before the chunk
        if self.opts.multi_token_intervention:
            lo = max(first, 0) if P is not None else 0
            return lo, S, first
        return (first, first + 1, first) if 0 <= first < S else (0, 0, first)

    def _encode(self, h: torch.Tensor, start_pos: int) -> None:
        B, S, _ = h.shape
        lo, hi, first = self._span(S, start_pos)
        self._pending = None
        if hi <= lo:
            return
        K = hi - lo
        has_first = 0 <= first < S
        if self.opts.static_encoding or K == 1 and has_first:
            if has_first:  # P-1 is in this chunk: encode it once, reuse it at later positions
                a0, g0 = self._symbolic(h[:, first:first + 1], record_idx=0)
                self._static = (a0[:, 0], g0[:, 0])  # [B,V], [B]
            if self._static is None:
                return
            a0, g0 = self._static
            self._pending = (lo, hi, a0[:, None].expand(B, K, a0.shape[-1]), g0[:, None].expand(B, K))
        else:  # every written position encoded from its own state
            a, g = self._symbolic(h[:, lo:hi], record_idx=first - lo if has_first else None)
            self._pending = (lo, hi, a, g)
        if self.opts.encode_counter and self.mode == "symbolic":
            lo, hi, a, g = self._pending
            t = torch.arange(lo, hi, device=a.device) + start_pos - self._last_prompt_pos  # [K] tokens after P-1
            self._pending = (lo, hi, a + self.engine.encode_counter(t).to(a.dtype)[None], g)  # x^t, 0 at t = 0

    def _symbolic(self, hs: torch.Tensor, *, record_idx: Optional[int]):
        """hs [B,K,D] (model dtype) -> answer vectors [B,K,V] float32, gate [B,K] bool.

        Records the per-sample quantities of position `record_idx` (P-1) when it is given.
        """
        a, gate, rec = self.read(hs)
        if record_idx is not None:
            self.records = {k: v[:, record_idx] for k, v in rec.items()}
        return a, gate

    def _decode(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        lo, hi, a, gate = self._pending
        new = self.write(h[:, lo:hi], a, gate, layer)  # [B,K,D]
        return torch.cat([h[:, :lo], new, h[:, hi:]], dim=1)  # [B,S,D]

    # ------------------------------------------------------------------ the per-position maths
    # One source of truth for read / gate / solve / encode and decode / merge: the hooks above and the
    # hooks on a transformers model (neurosymbolic_llm/hf/hooks.py) both call these.
    def read_input(self, h: torch.Tensor, earlier: dict[int, torch.Tensor]) -> torch.Tensor:
        """The encoder's input from the last read layer's states h [..., D] and the earlier read
        layers' states at the same positions ({layer: [..., D]}): [..., k D], layers ascending."""
        if len(self.read_layers) == 1:
            return h
        missing = [l for l in self.read_layers[:-1] if l not in earlier]
        if missing:
            raise RuntimeError(f"the joint read {self.opts.symbolic_encoding_layer} reached layer {self.enc_layer} "
                               f"without the states of layer(s) {missing} (a forward that starts above them)")
        return torch.cat([*(earlier[l] for l in self.read_layers[:-1]), h], dim=-1)

    def read(self, hs: torch.Tensor):
        """hs [B,K,k D] (model dtype; read_input) -> (answer vectors a [B,K,V] float32, gate [B,K] bool, readings
        {score, gate, type_id, x, y: [B,K]; vsa (Enc(h)) [B,K,V] in symbolic mode})."""
        B, K, _ = hs.shape
        z = self.encoder(hs.float())  # [B,K,V]
        if self.mode == "adapter":  # the paper's "LoRA" row: no gate, no solver
            gate = torch.ones(B, K, dtype=torch.bool, device=z.device)
            neg = torch.full((B, K), -1, dtype=torch.long, device=z.device)
            return z, gate, {"score": torch.full((B, K), math.nan, device=z.device), "gate": gate,
                             "type_id": neg, "x": neg, "y": neg}
        with torch.no_grad():  # the symbolic step is integer arithmetic: no gradient
            zf = z.detach().reshape(B * K, -1)  # [N,V]
            read = read_problem(self.engine, zf)  # score, margins, type_id, x, y [N]
            gate = self.gate.open(*(read[k] for k in READINGS))
            type_id, x, y = read["type_id"], read["x"], read["y"]
            rec = {k: v.view(B, K) for k, v in {**read, "gate": gate}.items()}
            rec["vsa"] = zf.view(B, K, -1)  # Enc(h): ask shows its scores
            if (self.opts.simulate_perfect_encoder or self._solve_truth) and self._truth is not None:
                type_id, x, y = (t.to(z.device).long()[:, None].expand(B, K).reshape(-1) for t in self._truth)
            ans = solve(type_id, x, y, problem_list=self.engine.possible_problems,
                        complexity=self.complexity, limit_solution_digits=self.limit_solution_digits)
            a = self.engine.encode_number(ans).float().view(B, K, -1)  # [B,K,V]
        return a, gate.view(B, K), rec

    def write(self, sel: torch.Tensor, a: torch.Tensor, gate: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual states sel [..., D] (model dtype) written by the answer vectors a [..., V] where
        gate [...] is open: merge(Dec_layer(a), sel), in float32, cast back to sel's dtype."""
        m = self.decoders[str(layer)](a)  # [..., D] float32
        merged = self.merges[str(layer)](m, sel.float()).to(sel.dtype)
        return torch.where(gate[..., None], merged, sel)  # closed gate: the state itself, bit for bit

    # ------------------------------------------------------------------ results
    def take_records(self) -> dict[str, torch.Tensor]:
        """Per-sample records of the last prompt position (score, gate, type_id, x, y [B]; vsa, the
        encoder's output [B,V], in symbolic mode), on the CPU."""
        return {k: v.detach().cpu() for k, v in self.records.items()}

    def merge_state(self) -> dict:
        """Trained merge parameters, for the `extra` of the saved decoder file."""
        return {str(l): {k: v.detach().cpu() for k, v in m.state_dict().items()} for l, m in self.merges.items()}

    def load_merge_state(self, state: dict) -> None:
        for l, sd in state.items():
            if l in self.merges:
                self.merges[l].load_state_dict(sd, strict=False)
