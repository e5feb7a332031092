"""What every generator's stages share: device choice, checkpoints, the training loop, station
tables, the station-index check, training curves and writing generated/recon corpora.

A model module brings its network, its loss and its sampler; everything around them is here, so
TimesNet-Gen's two phases and the VAE (and any generator added through the registry) run the
same loop and write the same files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from timesnet_gen.atomic import staged_dir, staged_file
from timesnet_gen.corpus.format import write_corpus_into
from timesnet_gen.errors import UserError


class CheckpointError(UserError):
    """A model file that is missing, unreadable, of another kind or of another configuration."""


class RuntimeSetupError(UserError):
    """The run cannot start: device, station order or training data."""


# --------------------------------------------------------------------------------------------
# device


def resolve_device(spec: str, key: str = "train.device") -> torch.device:
    """A device parameter (named `key` in errors): auto -> cuda when available, else cpu;
    cuda without CUDA is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeSetupError(f"{key}={spec} but CUDA is not available")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise RuntimeSetupError(f"{key}={spec!r}: not a device (auto, cpu, cuda, "
                                "cuda:N)") from None


def set_up_torch(n_threads: int) -> None:
    """CPU threads (0 keeps torch's default) and denormal floats flushed to zero, for every
    stage that trains or samples a model. Call it before the process's first parallel torch
    op: torch sets the flag in the calling thread, and OpenMP's worker threads take it from
    the thread that creates them.

    TimesNet weighs its period branches by a softmax of raw FFT amplitudes, which can give the
    weaker period a weight near exp(-100): that branch's backward pass then runs in denormal
    arithmetic, which this machine's Intel CPUs execute many times slower. On real records
    (`benchmarks/bench_model.py --data`) a pretraining step took 4.10 s kept and 0.79 s
    flushed, and TimesNet-Gen's two stages 9.3 min against 29.6 min the run before (7 Dec
    2026). The flushed values are below 1.2e-38 and are added to gradients of normal size, so
    the weights come out bit for bit the same (the benchmark checks it; so did the pipeline's
    checkpoints)."""
    torch.set_flush_denormal(True)
    if n_threads > 0:
        torch.set_num_threads(n_threads)


# --------------------------------------------------------------------------------------------
# checkpoints


def config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every differing (nested) key."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def save_checkpoint(payload: dict, path: Path) -> None:
    """torch.save through a staging file (plain tensors, numbers, strings, lists, dicts)."""
    with staged_file(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, kind: str | None = None,
                    expected: dict[str, Any] | None = None, what: str = "config") -> dict:
    """Read a checkpoint (weights_only: no code runs); a folder means its model.pt.

    kind: the checkpoint's "kind" must equal it. expected: the checkpoint's `what` entry must
    equal it, else the error lists every differing key (checkpoint -> params).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no model checkpoint (run the stage that trains it)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on corrupt files
        # the cause only: torch wraps it in paragraphs of advice
        text = str(exc).strip()
        cause = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        first = (f"not a weights-only torch file: {cause.group(1)}" if cause
                 else re.split(r"(?<=\.)\s", text, maxsplit=1)[0] or type(exc).__name__)
        raise CheckpointError(f"{path}: unreadable checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a model checkpoint of this project")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind') or 'unknown'!s} checkpoint, "
                              f"expected {kind}")
    if expected is not None:
        diff = config_diff(ckpt.get(what, {}), expected)
        if diff:
            raise CheckpointError(f"{path} was trained with another configuration "
                                  f"(checkpoint -> params): {'; '.join(diff)}")
    return ckpt


# --------------------------------------------------------------------------------------------
# stations


def check_station_index(rows: pd.DataFrame, stations: Sequence[str], where: str) -> None:
    """Every row's station is one of `stations` and its station_index is its position there."""
    unknown = sorted(set(rows["station"]) - set(stations))
    if unknown:
        raise RuntimeSetupError(f"{where}: station(s) {unknown} not in data.target_stations "
                                f"{list(stations)}; rerun the prepare stage")
    expected = rows["station"].map({s: i for i, s in enumerate(stations)}).to_numpy()
    if not np.array_equal(expected, rows["station_index"].to_numpy()):
        raise RuntimeSetupError(f"{where}: station_index does not match the order of "
                                f"data.target_stations {list(stations)}; rerun the prepare stage")


def station_table(stations: Sequence[str], raw_dir: str | Path | None) -> pd.DataFrame:
    """stations.csv of an output corpus: target rows, f0_true_hz from the raw corpus if known."""
    table = pd.DataFrame({"station": list(stations), "role": "target", "f0_true_hz": np.nan})
    path = None if raw_dir is None else Path(raw_dir) / "stations.csv"
    if path is not None and path.exists():
        raw = pd.read_csv(path, dtype={"station": str})
        if "f0_true_hz" in raw.columns:
            f0 = raw.drop_duplicates("station").set_index("station")["f0_true_hz"]
            table["f0_true_hz"] = table["station"].map(f0)
    return table


# --------------------------------------------------------------------------------------------
# the training loop


def run_epochs(
    epochs: Iterable[int],
    batches: Callable[[int], Sequence[torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, float]]],
    optimiser: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    grad_clip: float = 0.0,
    scheduler: Any = None,
    end_epoch: Callable[[int, dict, int], None] | None = None,
    desc: str = "train",
    show: bool = True,
) -> list[dict]:
    """The one loop: per epoch, per batch of indices, loss -> backward -> clip -> step.

    batches(epoch) gives the epoch's batches of record indices (the caller seeds and orders);
    loss_fn(batch, epoch) returns (loss, {term: value}); terms are averaged over records into
    the epoch's row {"epoch", "train_loss", term...}; end_epoch(epoch, row, n_records) may add
    validation values, combine ranks and write checkpoints. A non-finite loss stops the run with an error.
    """
    parameters = list(parameters)
    rows = []
    for epoch in epochs:
        order = batches(epoch)
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(order, desc=f"{desc} {epoch + 1}", disable=not show, leave=False,
                   mininterval=2.0, dynamic_ncols=True)
        for batch in bar:
            loss, terms = loss_fn(batch, epoch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            for key, value in {"train_loss": float(loss.detach()), **terms}.items():
                sums[key] = sums.get(key, 0.0) + value * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{sums['train_loss'] / count:.4g}")
        row = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}}
        if end_epoch is not None:
            end_epoch(epoch, row, count)
        if not math.isfinite(row.get("train_loss", 0.0)):
            raise RuntimeSetupError(f"{desc}: training diverged at epoch {epoch + 1} "
                                    f"(loss {row['train_loss']}); lower the learning rate")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# training curves


def write_losses(history: Sequence[dict] | pd.DataFrame, path: Path,
                 columns: Sequence[str] | None = None) -> None:
    """losses.tsv (epoch, train_loss, ...): DVC plots data and the training-curve figure."""
    frame = pd.DataFrame(history, columns=columns)
    with staged_file(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def plot_curve(history: Sequence[dict] | pd.DataFrame, path: Path, title: str,
               ylabel: str = "loss") -> None:
    """Every loss column of a training history against epoch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for column, style in zip([c for c in frame.columns if c != "epoch"], ("o-", "s--", "^:", "v-.")):
        values = frame[column].to_numpy(dtype=np.float64)
        if np.all(values > 0):
            ax.plot(frame["epoch"], values, style, ms=3, label=column)
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# outputs of a generator


def record_ids(prefix: str, stations: Sequence[str]) -> list[str]:
    """'<prefix>-<station>-001', -002 ... numbered per station in order of appearance."""
    counters: dict[str, int] = {}
    out = []
    for station in stations:
        counters[station] = counters.get(station, 0) + 1
        out.append(f"{prefix}-{station}-{counters[station]:03d}")
    return out


def write_generator_outputs(out: str | Path, table: pd.DataFrame,
                            generated: tuple[np.ndarray, pd.DataFrame],
                            recon: tuple[np.ndarray, pd.DataFrame] | None = None,
                            sources: Iterable[str | Path] = ()) -> None:
    """<out>/generated and <out>/recon (when given) as canonical corpora, in one atomic step."""
    with staged_dir(out, sources) as tmp:
        parts = {"generated": generated, **({"recon": recon} if recon is not None else {})}
        for name, (waveforms, records) in parts.items():
            (tmp / name).mkdir()
            write_corpus_into(tmp / name, waveforms, records, table)
