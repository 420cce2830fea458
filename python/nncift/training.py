"""Training one network: the data on the device (`_Data`), the step budget
(`step_budget`), the closed-form fits of the proxies (constant, cosine-linear, and the start
of cosine-residual), the Adam loop with early stopping on the stop half (`_train_one`), the
optimizer (`_Adam`) and the progress bar.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncift.labels import PairLabels
from nncift.settings import CLOSED_FORM, EstimatorSettings

log = logging.getLogger(__name__)

# Fewest optimizer steps between two evaluations when eval_every is None (an epoch of a
# small block is a few steps; evaluating that often makes patience meaningless).
_MIN_EVAL_EVERY = 100


@dataclass
class _Data:
    rows_e: Any  # (M, d) float32 tensor on device
    cols_e: Any  # (N, d) or None (pointwise)
    lab: PairLabels
    train_idx: np.ndarray  # indices into lab
    stop_idx: np.ndarray  # early-stopping pairs (the stop half of the held-out items)
    y_scaled: np.ndarray  # (n,) float64, all labels scaled with the training fit
    device: Any


def _cosines(data: _Data, idx: np.ndarray) -> np.ndarray:
    r = data.rows_e.cpu().numpy()[data.lab.rows[idx]]
    c = data.cols_e.cpu().numpy()[data.lab.cols[idx]]
    nr = np.linalg.norm(r, axis=1).clip(1e-12)
    nc = np.linalg.norm(c, axis=1).clip(1e-12)
    return np.asarray(((r * c).sum(axis=1) / (nr * nc)), dtype=np.float64)


def _cosine_fit(data: _Data, idx: np.ndarray | None = None) -> tuple[float, float]:
    """Least-squares a, b with y_scaled ~ a cos + b on the pairs idx (default: training)."""
    idx = data.train_idx if idx is None else idx
    x = _cosines(data, idx)
    y = data.y_scaled[idx]
    if np.ptp(x) == 0:
        return 0.0, float(y.mean())
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def _refit_closed_form(net: Any, name: str, data: _Data) -> None:
    """Refit a closed-form proxy in place on every labelled pair (held-out items included)."""
    import torch

    idx = np.arange(len(data.lab))
    a, b = (0.0, float(data.y_scaled.mean())) if name == "constant" else _cosine_fit(data, idx)
    with torch.no_grad():
        net.linear(0).bias.fill_(b)
        if net.cosine_weight is not None:
            net.cosine_weight.fill_(a)


def _val_mse(net: Any, data: _Data) -> float | None:
    import torch

    if len(data.stop_idx) == 0:
        return None
    with torch.no_grad():
        pred = _forward_idx(net, data, data.stop_idx).double().cpu().numpy()
    return float(np.mean((pred - data.y_scaled[data.stop_idx]) ** 2))


def _forward_idx(net: Any, data: _Data, idx: np.ndarray) -> Any:
    import torch

    i = torch.from_numpy(data.lab.rows[idx]).to(data.device)
    if net.pointwise:
        return net.forward_points(data.rows_e, i)
    j = torch.from_numpy(data.lab.cols[idx]).to(data.device)
    out = []
    # Bounded chunks so validation on a large block never allocates (n, h) at once.
    for s in range(0, len(idx), 1 << 16):
        out.append(
            net.forward_pairs(data.rows_e, data.cols_e, i[s : s + (1 << 16)], j[s : s + (1 << 16)])
        )
    return torch.cat(out) if out else torch.zeros(0, device=data.device)


@dataclass
class _Trained:
    net: Any
    history: list[dict[str, float]]
    best_epoch: int
    best_step: int
    steps: int  # optimizer steps taken
    best_val: float | None  # best early-stopping MSE (stop half, scaled)
    settings: EstimatorSettings


def step_budget(st: EstimatorSettings, n_train: int) -> tuple[int, int, int]:
    """(steps per epoch, step budget, steps between evaluations) for n_train pairs.

    The budget is `max_steps`, capped by `epochs` passes when `epochs` is set.
    """
    spe = max(1, -(-n_train // st.batch_size))
    budget = st.max_steps if st.epochs is None else min(st.max_steps, st.epochs * spe)
    every = st.eval_every if st.eval_every is not None else max(_MIN_EVAL_EVERY, spe)
    return spe, budget, every


def _train_one(
    name: str, st: EstimatorSettings, data: _Data, seed: int, progress: bool
) -> _Trained:
    """Train one variant: Adam steps up to the step budget, early stopping every
    `eval_every` steps on the stop half with `patience` evaluations; the best evaluation
    (step 0 included) is restored."""
    import torch

    from nncift.network import InfluenceNetwork

    d = int(data.rows_e.shape[1])
    net = InfluenceNetwork(
        d,
        hidden_sizes=st.hidden_sizes,
        input_layout=st.input_layout,
        cosine_feature=st.cosine_feature,
        output_cosine=st.output_cosine,
        bilinear_rank=st.bilinear_rank,
    ).to(data.device)
    if name in CLOSED_FORM or name == "cosine-residual":
        # Closed-form fit: zero first-layer weights; bias (and cosine weight) by least squares.
        a, b = (
            _cosine_fit(data)
            if name != "constant"
            else (0.0, float(data.y_scaled[data.train_idx].mean()))
        )
        with torch.no_grad():
            if name in CLOSED_FORM:
                net.linear(0).weight.zero_()
                net.linear(0).bias.fill_(b)
            else:
                # cosine-residual starts exactly at the cosine-linear fit: last layer zeroed.
                net.linear(-1).weight.zero_()
                net.linear(-1).bias.fill_(b)
            if net.cosine_weight is not None:
                net.cosine_weight.fill_(a)
        if name in CLOSED_FORM:
            val = _val_mse(net, data)
            hist = [{"step": 0, "epoch": 0.0, "val_mse": _nan(val)}]
            return _Trained(net, hist, 0, 0, 0, val, st)

    params = [p for p in net.parameters() if p.requires_grad]
    opt = _Adam(params, lr=st.lr, weight_decay=st.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    tr = torch.from_numpy(data.train_idx)
    rows_all = torch.from_numpy(data.lab.rows).to(data.device)
    cols_all = torch.from_numpy(data.lab.cols).to(data.device)
    y_all = torch.from_numpy(data.y_scaled.astype(np.float32)).to(data.device)
    spe, budget, every = step_budget(st, len(tr))

    best_val = _val_mse(net, data)
    best_state = copy.deepcopy(net.state_dict())
    best_step, bad, step = 0, 0, 0
    history: list[dict[str, float]] = [
        {"step": 0, "epoch": 0.0, "train_mse": float("nan"), "val_mse": _nan(best_val)}
    ]
    bar = _progress(progress, budget, name)
    total, count, stop = 0.0, 0, False
    # A batch of 64 pairs is too small to split across threads: on a busy 2-core box two
    # threads ran 250 steps in 8.9 s, one thread in 0.2 s. Restored after training.
    threads = torch.get_num_threads()
    if data.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        while step < budget and not stop:
            net.train()
            perm = tr[torch.randperm(len(tr), generator=gen)].to(data.device)
            for s in range(0, len(perm), st.batch_size):
                bt = perm[s : s + st.batch_size]
                i = rows_all.index_select(0, bt)
                if net.pointwise:
                    pred = net.forward_points(data.rows_e, i)
                else:
                    pred = net.forward_pairs(
                        data.rows_e, data.cols_e, i, cols_all.index_select(0, bt)
                    )
                loss = torch.mean((pred - y_all.index_select(0, bt)) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += float(loss.detach()) * len(bt)
                count += len(bt)
                if step % every and step < budget:
                    continue
                net.eval()
                val = _val_mse(net, data)
                net.train()
                history.append(
                    {
                        "step": step,
                        "epoch": step / spe,
                        "train_mse": total / max(1, count),
                        "val_mse": _nan(val),
                    }
                )
                total, count = 0.0, 0
                if bar is not None:
                    bar[0].update(bar[1], completed=step, description=f"{name} val={_nan(val):.4g}")
                if val is None:
                    best_state, best_step = copy.deepcopy(net.state_dict()), step
                elif best_val is None or val < best_val:
                    best_val, best_state, best_step, bad = (
                        val,
                        copy.deepcopy(net.state_dict()),
                        step,
                        0,
                    )
                else:
                    bad += 1
                    if st.patience is not None and bad >= st.patience:
                        log.info("%s: early stop at step %d (best %d)", name, step, best_step)
                        stop = True
                if stop or step >= budget:
                    break
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar[0].stop()
    net.load_state_dict(best_state)
    net.eval()
    return _Trained(net, history, -(-best_step // spe), best_step, step, best_val, st)


class _Adam:
    """Adam (Kingma & Ba), with decoupled weight decay (AdamW) when weight_decay > 0.

    The same update as `torch.optim.Adam` / `AdamW` with their defaults (betas 0.9 / 0.999,
    eps 1e-8). Written out because constructing any `torch.optim` optimizer imports
    `torch._dynamo`, which costs 5-20 s of start-up on a small CPU box — longer than
    training the paper's network on a u = 0.05 block.
    """

    def __init__(
        self,
        params: list[Any],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        import torch

        self.params = params
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                g = p.grad
                if g is None:  # e.g. the paper layout's dead separator column never has one
                    continue
                if self.wd > 0:
                    p.mul_(1.0 - self.lr * self.wd)
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v / c2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / c1)


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _progress(enabled: bool, total: int, name: str) -> tuple[Any, Any] | None:
    if not enabled or total == 0:
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    task = p.add_task(name, total=total)  # optimizer steps
    p.start()
    return p, task


__all__ = ["step_budget"]
