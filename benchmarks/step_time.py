"""Step time of every registered optimizer, per execution path, on a ~24M-parameter transformer shape.

One row per optimizer and path (``per-tensor``: the reference loop; ``foreach``: ``torch._foreach_*``;
``fused``: the per-tensor update compiled by :mod:`steepest.optim._fused`). Each row prints the median
[min, max] step time and, measured in the same row:

* ``/AdamW-foreach`` and ``/AdamW-fused``: step time over ``torch.optim.AdamW(foreach=True)`` and
  ``AdamW(fused=True)`` step times, all three alternated step by step on the same parameters (median
  [min, max] over the triples), so a burst of load from another process hits all alike;
* ``/floor``: step time over the optimizer's own bandwidth floor, the bytes its update must move
  (read parameter, gradient and every state tensor; write parameter and state; plus the reads an
  update that needs a norm must make before writing, see ``REDUCTION_READS``) divided by the
  bandwidth of an in-place ``a.add_(b)`` over 2 x 100 MB (an optimizer's access pattern: state read
  and written in place). The bandwidth is sampled once in every alternated round, just before the
  round's steps, and each step is divided by its own round's floor; the column is the median
  [min, max] of those per-round ratios and ``GB/s`` the median sample. (On the shared machine the
  bandwidth drifts between about 40 and 85 GB/s within minutes: one reading per row made the ratio
  of a steady step swing by 1.5x.) 1.0 is the memory-bandwidth limit; torch's ``AdamW(fused=True)``
  measured 0.97 at ~50 GB/s and 1.22 in a spell at ~80 GB/s, when compiled kernels lag ATen's
  ``add_``. Target: fused <= 1.3;
* AdaHessian and Sophia-H rows (``(update only)``) time the update alone, given a fixed Hessian
  estimate: their Hessian-vector product is a second backward pass, the same on every path and
  measured by ``benchmarks/curvature_cost.py``; the floor counts the estimate's read;
* ``first s``: the first step's time, which for the fused path includes compiling (cold or from
  inductor's on-disk cache, as the machine's cache stands: the script says which it cannot know,
  so it prints both the first and the second step).

Before each row the script waits for the machine to be idle (``/proc/stat``: under 15% busy, or
120 s) and prints the busy fraction it saw: another process on this 2-core machine slows a
2-thread step up to 40x.

With ``--device cuda`` parameters, gradients, state and the bandwidth probe live on the GPU and
every timed call is synchronized before and after (``torch.cuda.synchronize``); the fused path
compiles Triton kernels there. ``benchmarks/gpu_checks.sh`` runs that table and the CUDA tests.

Run: ``python benchmarks/step_time.py [--threads 2] [--repeats 15] [--only KEY ...]
[--paths per-tensor foreach fused] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

import steepest
from steepest.optim._registry import REGISTRY

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import InplaceBandwidthProbe, Timing, copy_bandwidth, inplace_bandwidth, timed, wait_for_idle

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


#: Not timed here. Newton-CG needs a model and a loss for its Hessian-vector products, and M-FAC
#: keeps ngrads gradient copies (64 x 25M floats): their step cost relative to SGD is measured by
#: benchmarks/curvature_cost.py (Sophia-G's plain step is timed here; its Hessian refresh there).
CURVATURE_KEYS = ("mfac", "newton_cg")

#: Timed on their update alone, with a fixed Hessian estimate standing in for the one their step
#: computes: the Hessian-vector product (a second backward pass, benchmarks/curvature_cost.py)
#: costs the same on every path, the update is what the paths differ in. Sophia-H is timed on a
#: refresh step (it reads the estimate; its other steps do not).
UPDATE_ONLY_KEYS = ("adahessian", "sophia_h")

#: Parameter-sized estimates an update-only row reads on top of its state (``UPDATE_ONLY_KEYS``).
ESTIMATE_READS = {"adahessian": 1, "sophia_h": 1}

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

    Plus the extra reads in :data:`REDUCTION_READS` for updates that need a norm first, and the
    Hessian estimate an update-only row reads (:data:`ESTIMATE_READS`).
    """
    total = 0
    passes = 3 + REDUCTION_READS.get(key, 0) + ESTIMATE_READS.get(key, 0)
    for group in opt.param_groups:
        for p in group["params"]:
            total += passes * p.numel() * p.element_size()
            for value in opt.state[p].values():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    total += 2 * value.numel() * value.element_size()
    return total


PATHS = ("per-tensor", "foreach", "fused")
#: Constructor keywords selecting each path.
PATH_KWARGS: dict[str, dict[str, bool]] = {
    "per-tensor": {"foreach": False, "fused": False},
    "foreach": {"foreach": True, "fused": False},
    "fused": {"fused": True},
}


@dataclass
class Row:
    """One optimizer on one path, timed in alternation with AdamW-foreach and AdamW-fused."""

    key: str
    path: str
    first: float
    second: float
    bandwidth: float
    timing: Timing
    vs_foreach: Timing
    vs_fused: Timing
    vs_floor: Timing
    traffic: int
    busy: float
    elementwise: bool


def needs_closure(key: str) -> bool:
    """Whether a step of ``key`` needs a closure (line searches, zeroth-order methods): no plain step to time."""
    capabilities = REGISTRY[key].capabilities
    return bool(capabilities.requires_closure or capabilities.gradient_free)


def supports_path(key: str, path: str) -> bool:
    """Whether optimizer ``key`` has ``path``."""
    entry = REGISTRY[key]
    if key in ("adamw", "sgd"):
        return True  # torch's own, all three paths
    if path == "foreach":
        return entry.capabilities.supports_foreach
    if path == "fused":
        return bool(getattr(entry.capabilities, "supports_fused", False))
    return True


def build(key: str, path: str, names: list[str], params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Optimizer ``key`` on ``params`` with its suggested hyperparameters, on ``path``."""
    entry = REGISTRY[key]
    named = list(zip(names, params, strict=True))
    kwargs = {**entry.suggested, **MODEL_KWARGS.get(key, {}), **PATH_KWARGS[path]}
    if not supports_path(key, "fused"):
        kwargs.pop("fused", None)
    return steepest.create_optimizer(key, named if entry.capabilities.needs_named_parameters else params, **kwargs)


def update_only_step(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """A step of a Hutchinson-estimate optimizer (``UPDATE_ONLY_KEYS``) without its Hessian-vector product.

    Hands the update the fixed estimate ``(u * Hu, Hu)`` for every parameter, as the optimizer's
    own step does right after its product, and runs the path's update on the gradients present.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    gen = torch.Generator().manual_seed(0)
    estimates = {
        p: (torch.rand(p.shape, generator=gen).to(p.device), torch.randn(p.shape, generator=gen).to(p.device))
        for p in params
    }

    @torch.no_grad()
    def step() -> None:
        opt._hessian = estimates  # type: ignore[attr-defined]
        try:
            for group in opt.param_groups:
                with_grad = [p for p in group["params"] if p.grad is not None]
                states = []
                for p in with_grad:
                    if not opt.state[p]:
                        opt._init_state(p, group, opt.state[p])  # type: ignore[attr-defined]
                    states.append(opt.state[p])
                opt._update_group(group, with_grad, [p.grad for p in with_grad], states)  # type: ignore[attr-defined]
        finally:
            opt._hessian = {}  # type: ignore[attr-defined]

    return step


def measure(
    key: str,
    path: str,
    names: list[str],
    params: list[torch.nn.Parameter],
    grads: list[torch.Tensor],
    repeats: int,
    probe: InplaceBandwidthProbe,
) -> Row:
    """Alternate ``repeats`` rounds: a bandwidth sample, an AdamW-foreach, an AdamW-fused and a ``key`` step.

    ``grads`` are the gradients every row starts from: BlockLLM freezes the blocks it does not
    select (``requires_grad`` off, ``grad`` None), which must not carry over to the next row.
    """
    for p, g in zip(params, grads, strict=True):
        p.requires_grad_(True)
        p.grad = g
    references = [torch.optim.AdamW(params, lr=1e-4, foreach=True), torch.optim.AdamW(params, lr=1e-4, fused=True)]
    opt = build(key, path, names, params)
    step = update_only_step(opt) if key in UPDATE_ONLY_KEYS else opt.step
    device = params[0].device
    first = timed(step, device)
    second = timed(step, device)
    for reference in references:  # create state and warm up outside the timed region
        reference.step()
    traffic = state_traffic_bytes(key, opt)
    busy = wait_for_idle()
    ours: list[float] = []
    theirs: tuple[list[float], list[float]] = ([], [])
    bandwidths: list[float] = []
    for _ in range(repeats):
        bandwidths.append(probe.sample())
        theirs[0].append(timed(references[0].step, device))
        theirs[1].append(timed(references[1].step, device))
        ours.append(timed(step, device))
    row = Row(
        key,
        path,
        first,
        second,
        statistics.median(bandwidths),
        Timing.of(ours),
        Timing.of([a / b for a, b in zip(ours, theirs[0], strict=True)]),
        Timing.of([a / b for a, b in zip(ours, theirs[1], strict=True)]),
        Timing.of([t * bw / traffic for t, bw in zip(ours, bandwidths, strict=True)]),
        traffic,
        busy,
        REGISTRY[key].capabilities.elementwise,
    )
    del opt, step, references
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, help="registry keys to measure")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--layers", type=int, default=5, help="transformer layers (5: 24.2M parameters)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where parameters, state and probe live")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    named_shapes = transformer_shapes(layers=args.layers)
    names = [name for name, _ in named_shapes]
    params = [torch.nn.Parameter(torch.randn(shape, device=device) * 0.02) for _, shape in named_shapes]
    grads = [torch.randn(p.shape, device=device) * 1e-3 for p in params]
    n = sum(p.numel() for p in params)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"# {n / 1e6:.1f}M parameters in {len(params)} tensors, float32, {where}, "
        f"torch {torch.__version__}, {args.repeats} alternated steps per row; each row waits for an idle "
        "machine first (busy = fraction of the machine used by others when the row started)"
    )
    wait_for_idle()
    copy_bw, copy_timing = copy_bandwidth(device=device)
    bandwidth, bw_timing = inplace_bandwidth(device=device)
    print(
        f"# bandwidth at the start: in-place a.add_(b) {bandwidth / 1e9:.2f} GB/s ({bw_timing.ms()} ms for 300 MB; "
        "/floor uses a sample taken in every round instead); "
        f"copy_ {copy_bw / 1e9:.2f} GB/s ({copy_timing.ms()} ms for 200 MB)"
    )

    keys = args.only or [k for k in REGISTRY if k not in CURVATURE_KEYS]
    untimed = [k for k in keys if k in CURVATURE_KEYS or needs_closure(k)]
    if untimed:
        print(
            f"# not timed here: {', '.join(untimed)} (a step re-evaluates the loss, or needs a model for "
            "Hessian-vector products: benchmarks/curvature_cost.py, zo_memory.py and the benchmark suite "
            "measure them)"
        )
        keys = [k for k in keys if k not in untimed]
    header = (
        f"{'optimizer':<14} {'path':<10} {'first s':>7} {'2nd ms':>8} {'step ms: median [min, max]':>30} "
        f"{'/AdamW-foreach':>18} {'/AdamW-fused':>18} {'MB':>5} {'GB/s':>5} {'/floor':>18} {'busy':>5}"
    )
    print(header)
    print("-" * len(header))
    above = []
    probe = InplaceBandwidthProbe(device=device)
    for key in keys:
        for path in args.paths:
            if not supports_path(key, path):
                continue
            row = measure(key, path, names, params, grads, args.repeats, probe)
            floor = row.vs_floor.median
            flag = "" if row.elementwise else "  (not elementwise)"
            if key in UPDATE_ONLY_KEYS:
                flag += "  (update only)"
            if path == "fused" and floor > 1.3:
                flag += "  > 1.3x floor"
                above.append(key)
            print(
                f"{row.key:<14} {row.path:<10} {row.first:>7.2f} {row.second * 1e3:>8.1f} {row.timing.ms():>30} "
                f"{row.vs_foreach.ratio():>18} {row.vs_fused.ratio():>18} {row.traffic / 1e6:>5.0f} "
                f"{row.bandwidth / 1e9:>5.1f} {row.vs_floor.ratio():>18} {row.busy:>5.2f}{flag}",
                flush=True,
            )
    if "fused" in args.paths:
        if above:
            print(f"# fused path above 1.3x its bandwidth floor: {', '.join(above)}")
        else:
            print("# every fused path measured is within 1.3x of its bandwidth floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
