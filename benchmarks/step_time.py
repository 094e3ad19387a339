"""Step time of every registered optimizer's foreach path on a ~25M-parameter transformer shape.

Prints, per optimizer, the median [min, max] step time over repeated steps, and three ratios
measured in the same run:

* ``vs AdamW``: step time / ``torch.optim.AdamW(foreach=True)`` step time, taken per pair of
  alternated steps on the same parameters (median [min, max] over the pairs);
* ``per byte``: the same ratio after dividing each time by the bytes its update must move
  (read parameter, gradient and every state tensor; write parameter and state; plus the reads
  an update that needs a norm must make before writing, see ``REDUCTION_READS``). The target
  is <= 1.25 for every elementwise optimizer;
* ``vs bandwidth``: step time / (bytes moved / measured copy bandwidth), i.e. how far the step
  is from the memory-bandwidth limit (1.0 = at the limit).

Before each row the script waits for the machine to be idle (``/proc/stat``), and prints the
busy fraction it saw; within a row the two optimizers alternate step by step.

Run: ``python benchmarks/step_time.py [--threads 2] [--repeats 15] [--only KEY ...]``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import steepest
from steepest.optim._registry import REGISTRY

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import Timing, copy_bandwidth, wait_for_idle

WIDTH, HEADS = 512, 8


def transformer_shapes(
    layers: int = 5, width: int = WIDTH, ffn: int = 2048, vocab: int = 8192
) -> list[tuple[str, tuple[int, ...]]]:
    """Named shapes: embedding, per-layer q/k/v/o and MLP matrices with biases and norms, untied head.

    Names follow the LLaMA/GPT conventions that name-driven optimizers (Adam-mini) recognise.
    """
    shapes: list[tuple[str, tuple[int, ...]]] = [("embed_tokens.weight", (vocab, width))]
    for i in range(layers):
        prefix = f"layers.{i}"
        shapes += [(f"{prefix}.input_norm.weight", (width,)), (f"{prefix}.input_norm.bias", (width,))]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes += [(f"{prefix}.attn.{proj}.weight", (width, width)), (f"{prefix}.attn.{proj}.bias", (width,))]
        shapes += [(f"{prefix}.post_norm.weight", (width,)), (f"{prefix}.post_norm.bias", (width,))]
        shapes += [(f"{prefix}.mlp.up_proj.weight", (ffn, width)), (f"{prefix}.mlp.up_proj.bias", (ffn,))]
        shapes += [(f"{prefix}.mlp.down_proj.weight", (width, ffn)), (f"{prefix}.mlp.down_proj.bias", (width,))]
    shapes += [("final_norm.weight", (width,)), ("final_norm.bias", (width,)), ("lm_head.weight", (vocab, width))]
    return shapes


#: Not timed here. AdaHessian, Sophia-H and Newton-CG need a model and a loss for their
#: Hessian-vector products, and M-FAC keeps ngrads gradient copies (64 x 25M floats): their step
#: cost relative to SGD is measured by benchmarks/curvature_cost.py (Sophia-G's plain step is
#: timed here; its Hessian refresh there).
CURVATURE_KEYS = ("adahessian", "sophia_h", "mfac", "newton_cg")

#: Model facts some optimizers need beyond their suggested hyperparameters.
MODEL_KWARGS = {"adam_mini": {"dim": WIDTH, "n_heads": HEADS}}


#: Parameter-sized reads that an update needing a norm must make before its first write, on
#: top of the single pass (no fused kernel can avoid them: the write depends on a reduction).
#: lamb: pass 1 reads p, g, m, v and writes m, v while reducing ||p|| and ||u||; pass 2 reads
#: p, m, v again to rebuild u and writes p (3 extra reads). lars: ||p|| and ||g|| first (2).
#: normalized_sd (l2, its default) and adagrad_norm (global scope): ||g|| of the group first (1).
REDUCTION_READS = {"lamb": 3, "lars": 2, "normalized_sd": 1, "adagrad_norm": 1}


def state_traffic_bytes(key: str, opt: torch.optim.Optimizer) -> int:
    """Bytes an update must move at least: read p and g, read+write each state tensor, write p.

    Plus the extra reads in :data:`REDUCTION_READS` for updates that need a norm first.
    """
    total = 0
    passes = 3 + REDUCTION_READS.get(key, 0)
    for group in opt.param_groups:
        for p in group["params"]:
            total += passes * p.numel() * p.element_size()
            for value in opt.state[p].values():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    total += 2 * value.numel() * value.element_size()
    return total


@dataclass
class Row:
    """One optimizer, timed in alternation with AdamW-foreach on the same parameters."""

    key: str
    timing: Timing
    adamw: Timing
    ratio: Timing  # per-pair step-time ratio to AdamW
    traffic: int
    adamw_traffic: int
    busy: float
    elementwise: bool

    @property
    def per_byte(self) -> float:
        """Median step-time ratio to AdamW after dividing each by the bytes it moves."""
        return self.ratio.median * self.adamw_traffic / self.traffic


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(key: str, names: list[str], params: list[torch.nn.Parameter], repeats: int) -> Row:
    """Alternate ``repeats`` foreach steps of ``key`` and of torch AdamW on the same parameters.

    Alternating step by step means a burst of load from another process hits both alike, so
    the per-pair ratio stays meaningful on a shared machine even when absolute times jump.
    """
    adamw = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if key == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    else:
        entry = REGISTRY[key]
        named = list(zip(names, params, strict=True))
        kwargs = {**entry.suggested, **MODEL_KWARGS.get(key, {}), "foreach": True}
        opt = steepest.create_optimizer(key, named if entry.capabilities.needs_named_parameters else params, **kwargs)
    for _ in range(2):  # create state and warm up outside the timed region
        adamw.step()
        opt.step()
    busy = wait_for_idle()
    ours, theirs = [], []
    for _ in range(repeats):
        theirs.append(_timed(adamw.step))
        ours.append(_timed(opt.step))
    row = Row(
        key,
        Timing.of(ours),
        Timing.of(theirs),
        Timing.of([a / b for a, b in zip(ours, theirs, strict=True)]),
        state_traffic_bytes(key, opt),
        state_traffic_bytes("adamw", adamw),
        busy,
        REGISTRY[key].capabilities.elementwise,
    )
    del opt, adamw
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, help="registry keys to measure")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    named_shapes = transformer_shapes()
    names = [name for name, _ in named_shapes]
    params = [torch.nn.Parameter(torch.randn(shape) * 0.02) for _, shape in named_shapes]
    for p in params:
        p.grad = torch.randn(p.shape) * 1e-3
    n = sum(p.numel() for p in params)
    print(
        f"# {n / 1e6:.1f}M parameters in {len(params)} tensors, float32, "
        f"{args.threads} threads, torch {torch.__version__}, {args.repeats} alternated steps per row"
    )
    wait_for_idle()
    bandwidth, bw_timing = copy_bandwidth()
    print(f"# copy bandwidth {bandwidth / 1e9:.2f} GB/s (copy of 100 MB: {bw_timing.ms()} ms)")

    keys = args.only or [k for k in REGISTRY if k not in CURVATURE_KEYS]
    header = (
        f"{'optimizer':<14} {'step ms: median [min, max]':>30} {'AdamW ms (same rows)':>30} {'MB moved':>9} "
        f"{'vs AdamW [min, max]':>20} {'per byte':>9} {'vs bandwidth':>12} {'busy':>5}"
    )
    print(header)
    print("-" * len(header))
    failures = []
    for key in keys:
        row = measure(key, names, params, args.repeats)
        vs_bw = row.timing.median / (row.traffic / bandwidth)
        flag = ""
        if not row.elementwise:
            flag = "  (not elementwise)"
        elif row.per_byte > 1.25:
            flag = "  > 1.25"
            failures.append(row.key)
        ratio = f"{row.ratio.median:.2f} [{row.ratio.low:.2f}, {row.ratio.high:.2f}]"
        print(
            f"{row.key:<14} {row.timing.ms():>30} {row.adamw.ms():>30} {row.traffic / 1e6:>9.0f} "
            f"{ratio:>20} {row.per_byte:>9.2f} {vs_bw:>12.2f} {row.busy:>5.2f}{flag}",
            flush=True,
        )
    if failures:
        print(f"# above the 1.25x per-byte target: {', '.join(failures)}")
    else:
        print("# every elementwise optimizer is within 1.25x of AdamW-foreach per byte moved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
