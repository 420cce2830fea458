"""LESS: gradient similarity after a LoRA warm-up (Xia et al. 2024), pairwise and pointwise.

1. **Warm-up.** A LoRA adapter (peft) is trained on a seeded random `warmup_fraction` of the
   pool (5% as in LESS) for `epochs` epochs with AdamW and a linear schedule (3% warm-up);
   after every epoch the adapter, the Adam moments and the epoch's mean learning rate are
   kept as a checkpoint.
2. **Features.** At each checkpoint, the per-example gradient of the LoRA parameters of the
   mean response-token loss: pool items use the Adam-preconditioned gradient (one
   hypothetical Adam step from that checkpoint's moments, bias-corrected:
   ``m_hat / (sqrt(v_hat) + eps)``), targets the plain gradient. Each is projected to
   `proj_dim` dimensions with a seeded Rademacher matrix and L2-normalised.
3. **Scores.** ``K[i, t] = sum_c w_c * cos(pool_i^c, target_t^c)`` with ``w_c`` the
   checkpoint mean learning rates normalised to sum to 1. The pointwise value of a pool
   item is the mean over each task's targets, then the max over tasks. Top-k keeps the
   highest.

Per-example gradients are exact and batched: hooks on each LoRA layer keep its input ``x``,
the low-rank activation ``a = x A^T`` and the gradient ``g`` flowing into ``B``; with the
batch loss a *sum* of per-example losses, ``dB_b = sum_l g_bl^T a_bl`` and
``dA_b = sum_l (g_bl B)^T x_bl`` (tests check them against autograd, one example at a time).

An empty response has no loss: its gradient, feature and scores are 0 (documented).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence._lm import _batches, cut_left, encode, pad_id
from nncift.influence.base import Cost, CostMeter, PairwiseInfluence, Result, as_index

log = logging.getLogger(__name__)

_PROJ_CHUNK = 16384  # input dimensions per generated block of the projection matrix


@dataclass(frozen=True)
class LessConfig:
    """Settings of LESS. Defaults follow the paper where the CPU allows.

    warmup_fraction: share of the pool the warm-up trains on (LESS: 0.05).
    warmup_min_items: lower bound on warm-up items.
    epochs: warm-up epochs = number of checkpoints (LESS: 4).
    lr: peak AdamW learning rate (LESS: 2e-5).
    batch_size: warm-up examples per optimiser step.
    warmup_ratio: share of steps with a linearly rising learning rate (LESS: 0.03).
    lora_r, lora_alpha: LoRA rank and scale (LESS: 128 / 512; a 135M model on a CPU uses 8 / 32).
    target_modules: module names the adapter attaches to (must exist in the model).
    proj_dim: projection dimension; None -> 8192 on a GPU, 512 on a CPU.
    max_prompt_tokens: prompt cap (cut from the left). Responses are never cut.
    grad_batch_tokens: padded tokens per batched per-example gradient pass.
    proj_cache_bytes: keep the int8 projection matrix in memory when it is at most this big,
        otherwise regenerate its blocks from the seed for every batch.
    seed: seeds the warm-up subset, the adapter initialisation, the data order and the
        projection.
    """

    warmup_fraction: float = 0.05
    warmup_min_items: int = 1
    epochs: int = 4
    lr: float = 2e-5
    batch_size: int = 8
    warmup_ratio: float = 0.03
    lora_r: int = 8
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    proj_dim: int | None = None
    max_prompt_tokens: int = 256
    grad_batch_tokens: int = 2048
    proj_cache_bytes: int = 1 << 30
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.warmup_fraction <= 1.0:
            raise InputError(f"LESS warmup_fraction must be in (0, 1], got {self.warmup_fraction}")
        for name in (
            "warmup_min_items",
            "epochs",
            "batch_size",
            "lora_r",
            "max_prompt_tokens",
            "grad_batch_tokens",
        ):
            if int(getattr(self, name)) < 1:
                raise InputError(f"LESS {name} must be >= 1, got {getattr(self, name)}")
        if self.proj_dim is not None and self.proj_dim < 1:
            raise InputError(f"LESS proj_dim must be >= 1, got {self.proj_dim}")
        if not self.lr > 0:
            raise InputError(f"LESS lr must be > 0, got {self.lr}")
        if not self.target_modules:
            raise InputError("LESS needs at least one LoRA target module")


# ------------------------------------------------------------------ random projection


class RademacherProjection:
    """A seeded ``(D, k)`` matrix of +-1/sqrt(k), generated block by block, never stored whole
    unless it fits in `cache_bytes` (as int8).

    ``project(G)`` maps ``(n, D)`` float32 -> ``(n, k)`` float32 and preserves inner products
    in expectation (Johnson-Lindenstrauss: relative error ~ 1/sqrt(k)).
    """

    def __init__(self, dim_in: int, dim_out: int, seed: int, cache_bytes: int = 1 << 30) -> None:
        if dim_in < 1 or dim_out < 1:
            raise InputError(f"projection needs positive dimensions, got {dim_in} -> {dim_out}")
        self.dim_in, self.dim_out, self.seed = int(dim_in), int(dim_out), int(seed)
        self._cache: list[Any] | None = [] if dim_in * dim_out <= cache_bytes else None

    def _block(self, c: int) -> Any:
        import torch

        if self._cache is not None and c < len(self._cache):
            return self._cache[c]
        rows = min(_PROJ_CHUNK, self.dim_in - c * _PROJ_CHUNK)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + c)
        signs = torch.randint(0, 2, (rows, self.dim_out), generator=gen, dtype=torch.int8) * 2 - 1
        if self._cache is not None and c == len(self._cache):
            self._cache.append(signs)
        return signs

    def project(self, g: Any) -> Any:
        """(n, D) float tensor -> (n, k) float32 tensor."""
        import torch

        if g.shape[1] != self.dim_in:
            raise ValueError(f"projection expects {self.dim_in} columns, got {g.shape[1]}")
        out = torch.zeros((g.shape[0], self.dim_out), dtype=torch.float32)
        for c in range(math.ceil(self.dim_in / _PROJ_CHUNK)):
            lo = c * _PROJ_CHUNK
            blk = g[:, lo : lo + _PROJ_CHUNK].float().cpu()
            out += blk @ self._block(c).float()
        return out / math.sqrt(self.dim_out)


# ------------------------------------------------------------------ per-example gradients


class _LoraGradHooks:
    """Hooks collecting per-example LoRA gradients from one batched forward/backward."""

    def __init__(self, layers: list[tuple[str, Any, Any, float]]) -> None:
        self.layers = layers  # (name, lora_A Linear, lora_B Linear, scaling)
        self.saved: dict[str, dict[str, Any]] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _LoraGradHooks:
        for name, a_mod, b_mod, _ in self.layers:
            self.handles.append(a_mod.register_forward_hook(self._save_a(name)))
            self.handles.append(b_mod.register_forward_hook(self._save_b(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _save_a(self, name: str) -> Any:
        def hook(mod: Any, inputs: Any, output: Any) -> None:
            self.saved.setdefault(name, {})["x"] = inputs[0].detach()
            self.saved[name]["a"] = output.detach()

        return hook

    def _save_b(self, name: str) -> Any:
        def hook(mod: Any, inputs: Any, output: Any) -> None:
            def grad_hook(g: Any) -> None:
                self.saved[name]["g"] = g.detach()

            output.register_hook(grad_hook)

        return hook

    def per_example(self) -> list[Any]:
        """Per-example gradients, one (B, numel) tensor per LoRA weight, in `param_order`."""
        import torch

        out = []
        for name, _a_mod, b_mod, _ in self.layers:
            s = self.saved[name]
            x, a, g = s["x"], s["a"], s["g"]  # (B, L, in), (B, L, r), (B, L, out)
            gb = torch.einsum("blo,blr->bor", g, a)  # dL/dB per example: (B, out, r)
            ga = g @ b_mod.weight.detach()  # (B, L, r): gradient reaching a = x A^T
            gA = torch.einsum("blr,bli->bri", ga, x)  # dL/dA per example: (B, r, in)
            out.append(gA.reshape(gA.shape[0], -1))
            out.append(gb.reshape(gb.shape[0], -1))
        self.saved.clear()
        return out


@dataclass
class _Checkpoint:
    lora: list[Any]  # parameter tensors, param order
    exp_avg: list[Any]
    exp_avg_sq: list[Any]
    step: int
    mean_lr: float


class Less(PairwiseInfluence):
    """LESS scores ``K[pool, target]`` and pointwise values (see module docstring).

    Args:
        pool: candidate items (rows); the warm-up subset is drawn from them.
        targets: target items (columns); None for pool x pool (columns then use plain
            gradients of pool items).
        lm: an `nncift.lm.LM` (default: the packaged SmolLM2); its model is copied, never
            modified.
        target_tasks: task name per target for the pointwise value (default: one task).
        config: a `LessConfig`, or keyword overrides of it.
    """

    name = "less"

    def __init__(
        self,
        pool: Any,
        targets: Any | None = None,
        *,
        lm: Any | None = None,
        target_tasks: Sequence[str] | None = None,
        config: LessConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(pool, targets)
        if config is not None and overrides:
            raise InputError("pass either config= or keyword settings, not both")
        if "target_modules" in overrides:
            overrides["target_modules"] = tuple(overrides["target_modules"])
        self.cfg = config if config is not None else LessConfig(**overrides)
        if lm is None:
            from nncift.lm import load_lm

            lm = load_lm()
        self.lm = lm
        if target_tasks is not None and len(target_tasks) != len(self.targets):
            raise InputError(f"{len(target_tasks)} task names for {len(self.targets)} targets")
        self.target_tasks = [str(t) for t in target_tasks] if target_tasks is not None else None
        self.proj_dim = int(self.cfg.proj_dim or (8192 if lm.device.type == "cuda" else 512))
        _check_targets(lm.model, self.cfg.target_modules)
        self._model: Any = None
        self._params: list[Any] = []
        self._layers: list[tuple[str, Any, Any, float]] = []
        self._ckpts: list[_Checkpoint] = []
        self._proj: RademacherProjection | None = None
        self._feats: dict[tuple[str, int], dict[int, np.ndarray]] = {}
        self.warmup_rows: np.ndarray | None = None
        self.warmup_cost: Cost | None = None

    def config(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        cfg["target_modules"] = list(self.cfg.target_modules)
        return {"method": self.name, "lm": self.lm.name, **cfg, "proj_dim": self.proj_dim}

    # ---- sequences --------------------------------------------------------------------------

    def _seq(self, items: Any, i: int) -> tuple[list[int], int]:
        tok = self.lm.tokenizer
        prompt = encode(tok, items.prompts[i] + "\n", first=True)
        resp = encode(tok, items.responses[i])
        eos = getattr(tok, "eos_token_id", None)
        if resp and isinstance(eos, int):
            resp = resp + [eos]  # the model also learns to stop
        # Cuts keep the BOS (if the model has one) first, as in every uncut sequence.
        prompt = cut_left(tok, prompt, self.cfg.max_prompt_tokens)
        if len(prompt) + len(resp) > self.lm.max_length:
            keep = self.lm.max_length - len(resp)
            if keep < 1:
                raise InputError(
                    f"item {i}: its response has {len(resp)} tokens, more than max_length="
                    f"{self.lm.max_length}; responses are never truncated"
                )
            prompt = cut_left(tok, prompt, keep)
        return prompt + resp, len(prompt)

    def _forward_losses(self, seqs: list[tuple[list[int], int]], meter: CostMeter) -> Any:
        """Per-example mean response-token losses (B,) of one padded batch."""
        import torch

        dev = self.lm.device
        B, width = len(seqs), max(len(s) for s, _ in seqs)
        ids = torch.full((B, width), pad_id(self.lm.tokenizer), dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        labels = torch.full((B, width), -100, dtype=torch.long)
        for b, (s, start) in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
            labels[b, start : len(s)] = ids[b, start : len(s)]
        logits = self._model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
        meter.forward(B, sum(len(s) for s, _ in seqs))
        shift_logits = logits[:, :-1].float()  # position k-1 predicts token k
        shift_labels = labels[:, 1:].to(dev)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view(B, -1)
        n = (shift_labels != -100).sum(dim=1)
        return nll.sum(dim=1) / n.clamp(min=1)

    # ---- warm-up ------------------------------------------------------------------------------

    def _ensure_model(self) -> None:
        if self._model is not None:
            return
        import torch
        from peft import LoraConfig, get_peft_model

        base = copy.deepcopy(self.lm.model)
        lcfg = LoraConfig(
            r=self.cfg.lora_r,
            lora_alpha=self.cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(self.cfg.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # peft calls a transformers API deprecated in 5.x; nothing a user can act on.
            warnings.simplefilter("ignore", FutureWarning)
            torch.manual_seed(self.cfg.seed)
            model = get_peft_model(base, lcfg)  # seeded A init; B starts at 0 as in LESS
        model.eval()  # no dropout anywhere: gradients are deterministic
        self._model = model
        layers = []
        for name, mod in model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                layers.append(
                    (
                        name,
                        mod.lora_A["default"],
                        mod.lora_B["default"],
                        float(mod.scaling["default"]),
                    )
                )
        if not layers:
            raise InputError("LoRA attached to no layer; check target_modules")
        self._layers = layers
        self._params = []
        for _, a, b, _ in layers:
            self._params += [a.weight, b.weight]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self._params:
            p.requires_grad_(True)

    def warm_up(self) -> None:
        """Train the adapter and keep one checkpoint per epoch (idempotent)."""
        if self._ckpts:
            return
        import torch

        from nncift.influence.base import CostMeter as _Meter

        self._ensure_model()
        meter = _Meter()
        with meter.timed():
            m = len(self.pool)
            k = max(self.cfg.warmup_min_items, math.ceil(self.cfg.warmup_fraction * m))
            k = min(k, m)
            rng = np.random.default_rng(self.cfg.seed)
            rows = np.sort(rng.choice(m, size=k, replace=False)).astype(np.int64)
            self.warmup_rows = rows
            seqs = [self._seq(self.pool, int(i)) for i in rows]
            live = [s for s in seqs if s[0][s[1] :]]
            steps_per_epoch = math.ceil(len(live) / self.cfg.batch_size) if live else 0
            total = max(1, steps_per_epoch * self.cfg.epochs)
            warm = max(1, int(round(self.cfg.warmup_ratio * total)))
            opt = torch.optim.AdamW(self._params, lr=self.cfg.lr, weight_decay=0.0, eps=1e-8)

            def lr_at(step: int) -> float:  # HF's linear schedule with warm-up
                if step < warm:
                    return self.cfg.lr * (step + 1) / warm
                return self.cfg.lr * max(0.0, (total - step) / max(1, total - warm))

            step = 0
            for _epoch in range(self.cfg.epochs):
                order = rng.permutation(len(live))
                lrs = []
                for s in range(0, len(order), self.cfg.batch_size):
                    batch = [live[j] for j in order[s : s + self.cfg.batch_size]]
                    lr = lr_at(step)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    opt.zero_grad(set_to_none=True)
                    loss = self._forward_losses(batch, meter).mean()
                    loss.backward()
                    meter.backward(len(batch))
                    opt.step()
                    lrs.append(lr)
                    step += 1
                self._ckpts.append(
                    self._snapshot(opt, step, float(np.mean(lrs)) if lrs else self.cfg.lr)
                )
        self.warmup_cost = meter.cost
        log.info("LESS warm-up on %d items: %s", len(rows), meter.cost)

    def _snapshot(self, opt: Any, step: int, mean_lr: float) -> _Checkpoint:
        import torch

        ea, eas = [], []
        for p in self._params:
            st = opt.state.get(p, {})
            ea.append(st["exp_avg"].detach().clone() if "exp_avg" in st else torch.zeros_like(p))
            eas.append(
                st["exp_avg_sq"].detach().clone() if "exp_avg_sq" in st else torch.zeros_like(p)
            )
        return _Checkpoint([p.detach().clone() for p in self._params], ea, eas, step, mean_lr)

    @property
    def checkpoint_weights(self) -> np.ndarray:
        """Normalised checkpoint learning rates ``w_c`` (sum 1), after `warm_up`."""
        lrs = np.array([c.mean_lr for c in self._ckpts], dtype=np.float64)
        return lrs / lrs.sum() if lrs.sum() > 0 else np.full(len(lrs), 1.0 / max(1, len(lrs)))

    # ---- gradients and features ----------------------------------------------------------------

    def per_example_gradients(self, seqs: list[tuple[list[int], int]], meter: CostMeter) -> Any:
        """Exact per-example LoRA gradients of the mean response loss -> (n, D) float32 tensor.

        Batched by `grad_batch_tokens`; an empty response gives a zero row.
        """
        import torch

        self._ensure_model()
        dim = sum(p.numel() for p in self._params)
        out = torch.zeros((len(seqs), dim), dtype=torch.float32)
        live = [j for j, (s, start) in enumerate(seqs) if len(s) > start]
        lengths = [len(seqs[j][0]) for j in live]
        for group in _batches(lengths, self.cfg.grad_batch_tokens, 64):
            batch = [seqs[live[g]] for g in group]
            with _LoraGradHooks(self._layers) as hooks:
                losses = self._forward_losses(batch, meter)
                for p in self._params:
                    p.grad = None
                losses.sum().backward()  # a sum, so per-example gradients separate exactly
                meter.backward(len(batch))
                parts = hooks.per_example()
            rows = torch.cat([p.float().cpu() for p in parts], dim=1)
            for b, g in enumerate(group):
                out[live[g]] = rows[b]
        return out

    def _load_checkpoint(self, c: int) -> None:
        import torch

        with torch.no_grad():
            for p, v in zip(self._params, self._ckpts[c].lora, strict=False):
                p.copy_(v)

    def _precondition(self, g: Any, c: int) -> Any:
        """One hypothetical AdamW step from checkpoint c's moments: m_hat / (sqrt(v_hat) + eps)."""
        import torch

        ck = self._ckpts[c]
        m = torch.cat([t.reshape(-1).float().cpu() for t in ck.exp_avg])
        v = torch.cat([t.reshape(-1).float().cpu() for t in ck.exp_avg_sq])
        b1, b2, eps = 0.9, 0.999, 1e-8
        t = ck.step + 1
        m2 = b1 * m + (1 - b1) * g
        v2 = b2 * v + (1 - b2) * g * g
        return (m2 / (1 - b1**t)) / (torch.sqrt(v2 / (1 - b2**t)) + eps)

    def _projection(self) -> RademacherProjection:
        if self._proj is None:
            self._ensure_model()
            dim = sum(p.numel() for p in self._params)
            self._proj = RademacherProjection(
                dim, self.proj_dim, self.cfg.seed, self.cfg.proj_cache_bytes
            )
        return self._proj

    def features(self, side: str, idx: np.ndarray, meter: CostMeter) -> np.ndarray:
        """Projected, L2-normalised features ``(C, len(idx), k)`` float32 for pool ("pool",
        preconditioned) or target ("target", plain) items; cached per item."""
        import torch

        self.warm_up()
        items = self.pool if side == "pool" else self.targets
        proj = self._projection()
        out = np.zeros((len(self._ckpts), idx.size, self.proj_dim), dtype=np.float32)
        for c in range(len(self._ckpts)):
            cache = self._feats.setdefault((side, c), {})
            todo = [int(i) for i in dict.fromkeys(idx.tolist()) if int(i) not in cache]
            if todo:
                self._load_checkpoint(c)
                g = self.per_example_gradients([self._seq(items, i) for i in todo], meter)
                if side == "pool":
                    nonzero = g.abs().sum(dim=1) > 0
                    g = torch.where(nonzero[:, None], self._precondition(g, c), g)
                z = proj.project(g.detach())
                norms = z.norm(dim=1, keepdim=True)
                z = torch.where(norms > 0, z / norms.clamp(min=1e-30), z)
                for i, row in zip(todo, z.numpy(), strict=False):
                    cache[i] = row
            for a, i in enumerate(idx.tolist()):
                out[c, a] = cache[int(i)]
        return out

    def _block(
        self, rows: np.ndarray, cols: np.ndarray, meter: CostMeter
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if not self._ckpts:
            # The first block pays for the warm-up; its passes and tokens are part of the
            # block's cost (its seconds already are: the block is timed as a whole).
            self.warm_up()
            if self.warmup_cost is not None:
                meter.forward(self.warmup_cost.lm_passes, self.warmup_cost.tokens)
                meter.backward(self.warmup_cost.backward_passes)
        fp = self.features("pool", rows, meter)  # (C, r, k)
        ft = self.features("target", cols, meter)  # (C, c, k)
        w = self.checkpoint_weights.astype(np.float32)
        values = np.einsum("c,crk,cjk->rj", w, fp, ft)
        return values, {
            "checkpoint_weights": w.tolist(),
            "warmup_rows": self.warmup_rows.tolist() if self.warmup_rows is not None else [],
        }

    def points(self, rows: Sequence[int] | np.ndarray | None = None) -> Result:
        """Pointwise LESS values of pool items `rows` -> float32 (len(rows),).

        value(i) = max over tasks of mean over that task's targets of ``K[i, t]``.
        """
        r = as_index(rows, len(self.pool), "row (pool)")
        res = self.block(r, None)
        tasks = self.target_tasks or ["all"] * len(self.targets)
        names = sorted(set(tasks))
        per_task = np.stack(
            [res.values[:, [j for j, t in enumerate(tasks) if t == n]].mean(axis=1) for n in names],
            axis=1,
        )
        return Result(per_task.max(axis=1).astype(np.float32), res.cost, {"tasks": names})


def _check_targets(model: Any, targets: Sequence[str]) -> None:
    """Refuse LoRA target names that match no Linear layer, listing the ones that exist."""
    import torch

    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    names = {n for n, _ in model.named_modules()}
    missing = [
        t
        for t in targets
        if t not in linear and not any(n == t or n.endswith("." + t) for n in names)
    ]
    if missing:
        raise InputError(
            f"LoRA target module(s) {missing} do not exist in {type(model).__name__}; "
            f"its linear layers are named {sorted(linear)}"
        )


__all__ = ["Less", "LessConfig", "RademacherProjection"]
