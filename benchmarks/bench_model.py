"""Benchmark: fused vs naive Inception in one TimesBlock, and training throughput.

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--paper-seq-len 1000]
        [--data data/prepared]

Prints forward+backward seconds per record of one TimesBlock with the fused Inception (one conv
with the averaged kernel) and the naive one (num_kernels convs), at the CPU profile and at the
paper's widths (d_model 128, d_ff 256, num_kernels 6; batch 2; on CPU a shorter sequence than
6000, printed), their ratio, and the training throughput (records/s, forward + backward +
AdamW step) of the default profile in params.yaml with an estimate of both phases' wall time.
Everything runs with denormals flushed to zero, as the training stages do (`set_up_torch`).
With --data, it first times pretraining steps on real records (the prepared pretraining split)
with denormals kept and flushed, in turn, each in a fresh process, and says whether the two
give the same weights bit for bit: on real records the weaker period's branch gets a softmax
weight near exp(-100), and its backward pass runs in denormal arithmetic (the synthetic input
of the other measurements does not trigger it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import numpy as np
import torch

from timesnet_gen.config import load_params
from timesnet_gen.models.timesnet import TimesBlock, TimesNetConfig, TimesNetGen
from timesnet_gen.prepare import load_prepared, select
from timesnet_gen.runtime import set_up_torch


def make_block(cfg: TimesNetConfig, batch: int, device: torch.device):
    """A TimesBlock and one forward+backward closure on accelerogram-like input.

    No station condition, so fused and naive differ only in the Inception computation (with a
    station the fused path also skips the per-record one-hot convolutions)."""
    torch.manual_seed(0)
    block = TimesBlock(cfg).to(device)
    # periods of 50 and 20 samples (2 and 5 Hz at 100 Hz) plus noise, so the 2D maps have
    # realistic shapes (white noise would pick 2-3 sample periods)
    t = torch.arange(cfg.seq_len, device=device, dtype=torch.float32)[None, :, None]
    x = (torch.sin(2 * torch.pi * t / 50) + 0.5 * torch.sin(2 * torch.pi * t / 20)
         + 0.1 * torch.randn(batch, cfg.seq_len, cfg.d_model, device=device))
    x.requires_grad_(True)

    def step() -> tuple[float, float]:
        """(wall s, process CPU s) of one forward + backward."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        block(x).square().mean().backward()  # no station: pure Inception
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w0, time.process_time() - c0

    return step


def compare(name: str, cfg: TimesNetConfig, batch: int, repeats: int,
            device: torch.device) -> None:
    """Fused vs naive, runs interleaved so that load from other processes hits both alike."""
    naive_cfg = TimesNetConfig(**{**asdict(cfg), "fused_inception": False})
    fused, naive = make_block(cfg, batch, device), make_block(naive_cfg, batch, device)
    fused(), naive()  # warm-up
    runs = [(fused(), naive()) for _ in range(repeats)]
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    tf, tn = med([f[0] for f, _ in runs]) / batch, med([n[0] for _, n in runs]) / batch
    ratio = med([n[0] / f[0] for f, n in runs])
    cpu_ratio = med([n[1] / f[1] for f, n in runs])
    print(f"{name:<26} d_model {cfg.d_model:>3} d_ff {cfg.d_ff:>3} kernels {cfg.num_kernels} "
          f"T {cfg.seq_len:>5} batch {batch}: fused {tf * 1e3:7.1f} ms/record, naive "
          f"{tn * 1e3:7.1f} ms/record, naive/fused = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
          "time", flush=True)


def train_step(model: TimesNetGen, opt: torch.optim.Optimizer, x: torch.Tensor,
               station: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> None:
    """One training step as the stages take it: reconstruction MSE, backward, clip, AdamW."""
    loss = torch.mean((model(x, station, noise) - x) ** 2)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def throughput(cfg: TimesNetConfig, batch: int, steps: int, device: torch.device,
               conditioned: bool) -> float:
    """Training records/s: forward + backward + clip + AdamW step, batch of `batch`."""
    torch.manual_seed(0)
    model = TimesNetGen(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t = torch.arange(cfg.seq_len, device=device, dtype=torch.float32)
    x = 10 * torch.sin(2 * torch.pi * t / 50) + torch.randn(batch, cfg.c_in, cfg.seq_len,
                                                             device=device)
    station = (torch.arange(batch, device=device) % cfg.n_stations) if conditioned else None
    noise = torch.full((cfg.d_model,), 0.1, device=device) if conditioned else None
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:  # skip the warm-up step
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        train_step(model, opt, x, station, noise)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def in_fresh_process(fn, *args):
    """fn(*args) in a fresh (spawned) process, so that no thread pool, denormal flag or other
    torch state of this one carries over. A process pool rather than multiprocessing.Pool, whose
    exit kills the worker and leaks the semaphores torch made there."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def denormal_run(cfg: TimesNetConfig, data: str, batch: int, steps: int, threads: int,
                 flush: bool) -> tuple[float, dict]:
    """In a fresh process: `steps` pretraining steps on real records from seed 0 (seconds per
    step, after an untimed pass that builds every period shape's oneDNN kernels) and the
    weights they end with. The flag comes first: torch sets it in the calling thread only, and
    OpenMP's worker threads take it from the thread that creates them."""
    torch.set_flush_denormal(flush)
    torch.set_num_threads(threads)
    waveforms, index = load_prepared(data)
    rows = select(index, "pretrain", "train")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()
    batches = [torch.from_numpy(np.ascontiguousarray(waveforms[np.sort(rows[order[i:i + batch]])]))
               for i in range(0, steps * batch, batch)]
    for _ in range(2):  # the same steps twice from the same seed; the second pass is timed
        torch.manual_seed(0)
        model = TimesNetGen(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
        t0 = time.perf_counter()
        for x in batches:
            train_step(model, opt, x)
    return (time.perf_counter() - t0) / len(batches), model.state_dict()


def denormals(cfg: TimesNetConfig, data: str, batch: int, steps: int, repeats: int,
              threads: int) -> None:
    """Pretraining on real records with denormals kept and flushed, each in a fresh process,
    in turn (`repeats` times each): seconds per step, their ratio, and whether the weights
    agree bit for bit."""
    load_prepared(data)  # a bad folder stops here, in this process, with one line
    runs = {False: [], True: []}
    for _ in range(repeats):
        for flush in (False, True):
            runs[flush].append(in_fresh_process(denormal_run, cfg, data, batch, steps, threads,
                                                flush))
    kept, flushed = (sorted(r[0] for r in runs[f])[repeats // 2] for f in (False, True))
    same = all(torch.equal(a, runs[True][0][1][name]) for name, a in runs[False][0][1].items())
    print(f"pretraining on real records ({steps} steps of {batch}, median of {repeats}, one "
          f"process each): denormals kept {kept:.2f} s/step, flushed {flushed:.2f} s/step, "
          f"kept/flushed = {kept / flushed:.2f}x; weights bit for bit the same: {same}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper-seq-len", type=int, default=1000,
                        help="sequence length at paper widths (6000 = paper; slow on CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--pretrain-records", type=int, default=360)
    parser.add_argument("--finetune-records", type=int, default=260)
    parser.add_argument("--data", default=None,
                        help="prepared corpus: real pretraining steps, denormals kept and flushed")
    parser.add_argument("--real-steps", type=int, default=8, help="with --data: steps timed")
    parser.add_argument("--real-repeats", type=int, default=1, help="with --data: repeats")
    args = parser.parse_args()
    set_up_torch(args.threads)
    device = torch.device(args.device)
    params = load_params(args.params)
    cpu_cfg = TimesNetConfig(**asdict(params.model), n_stations=len(params.data.target_stations))
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    if args.data is not None:
        denormals(cpu_cfg, args.data, params.train.pretrain.batch_size, args.real_steps,
                  args.real_repeats, args.threads)

    compare("CPU profile (params.yaml)", cpu_cfg, 4, args.repeats, device)
    paper = TimesNetConfig(**{**asdict(cpu_cfg), "d_model": 128, "d_ff": 256, "num_kernels": 6,
                              "seq_len": args.paper_seq_len})
    compare("paper widths", paper, 2, args.repeats, device)

    bs_pre, bs_ft = params.train.pretrain.batch_size, params.train.finetune.batch_size
    r_pre = throughput(cpu_cfg, bs_pre, args.steps, device, conditioned=False)
    r_ft = throughput(cpu_cfg, bs_ft, args.steps, device, conditioned=True)
    print(f"training throughput, default profile: pretrain {r_pre:.2f} records/s "
          f"(batch {bs_pre}), finetune {r_ft:.2f} records/s (batch {bs_ft}, conditioned, noise)")
    # validation / std passes are forward only (about 1/3 of a training step)
    e_pre, e_ft = params.train.pretrain.epochs, params.train.finetune.epochs
    n_pre, n_ft = args.pretrain_records, args.finetune_records
    t_pre = e_pre * (n_pre / r_pre + 0.25 * n_pre / 3 / r_pre) + n_pre / 3 / r_pre
    t_ft = e_ft * (n_ft / r_ft + n_ft / 3 / r_ft)
    print(f"estimated training wall time: pretrain {e_pre} epochs x {n_pre} records "
          f"{t_pre / 60:.1f} min + finetune {e_ft} epochs x {n_ft} records {t_ft / 60:.1f} min "
          f"= {(t_pre + t_ft) / 60:.1f} min")


if __name__ == "__main__":
    import sys

    from timesnet_gen.errors import one_line_errors

    sys.exit(one_line_errors(main, "bench_model"))  # bad --data or params: one line
