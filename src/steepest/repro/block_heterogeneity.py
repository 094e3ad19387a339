r"""Block heterogeneity of the Hessian: a tiny transformer against a tiny MLP.

Paper: Zhang, Chen, Ding, Li, Sun, Luo, "Why Transformers Need Adam: A Hessian Perspective",
NeurIPS 2024, arXiv:2402.16788. Claim: the Hessian of a transformer is *block heterogeneous* — the
spectra of its diagonal blocks :math:`H_{bb}` (one block per weight matrix) differ widely from block
to block — while the blocks of an MLP/CNN have similar spectra; they measure the difference with
the Jensen-Shannon distance between the blocks' spectral densities (SLQ with Gaussian broadening of
variance 1e-5, as in their code, zyushun/hessian-spectrum).

Here, at initialization and on synthetic data (no download): a pre-norm causal transformer (token
and position embeddings, per layer LayerNorm, q/k/v/o projections, a GELU MLP, LayerNorm, head)
on sequences from a random bigram chain, and a 4-layer GELU MLP classifying Gaussian inputs. The
blocks are the weight matrices (the embeddings, q, k, v, o, fc1, fc2 and the head for the
transformer; each linear layer's weight for the MLP). For each model we report

* the *spread* of the blocks' top eigenvalues, max over min (Lanczos, :func:`top_eigenvalues`), and
* the mean pairwise JS distance between the blocks' SLQ densities on a common grid.

The claim holds when both are much larger for the transformer than for the MLP.

Differences from the paper: models a few thousand parameters in size, random data, one SLQ probe
of 30 steps per block (the paper: 10 probes of 100 steps), eigenvalue spreads as a second measure.
The JS distance depends on the absolute kernel width (1e-5, the paper's), not only on the shapes of
the spectra.

Run ``python -m steepest.repro.block_heterogeneity [--seeds 0 1 2] [--train-steps 0]``.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from steepest.diagnostics import HessianDiagnostics, LossFn, js_distance

VOCAB, SEQ_LEN, BATCH = 16, 8, 32


class _Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention (q/k/v/o) and a GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim, bias=False), nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.ln1(x)

        def heads(z: Tensor) -> Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        attn = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        x = x + self.o((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """A tiny pre-norm causal language model (GPT-style), for Hessian experiments.

    Args:
        vocab: vocabulary size.
        dim: model width.
        heads: attention heads.
        layers: transformer blocks.
        seq_len: maximum sequence length.
    """

    def __init__(
        self, vocab: int = VOCAB, dim: int = 16, heads: int = 2, layers: int = 2, seq_len: int = SEQ_LEN
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(batch, seq, vocab)`` for token ids ``(batch, seq)``."""
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _tiny_mlp(width: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, width),
        nn.GELU(),
        nn.Linear(width, width),
        nn.GELU(),
        nn.Linear(width, width),
        nn.GELU(),
        nn.Linear(width, VOCAB),
    )


def _lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    inputs, targets = batch
    return nn.functional.cross_entropy(model(inputs).reshape(-1, VOCAB), targets.reshape(-1))


def _cls_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _bigram_batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    transition = torch.softmax(3 * torch.randn(VOCAB, VOCAB, generator=gen), dim=-1)
    seqs = torch.zeros(BATCH, SEQ_LEN + 1, dtype=torch.long)
    seqs[:, 0] = torch.randint(0, VOCAB, (BATCH,), generator=gen)
    for t in range(SEQ_LEN):
        seqs[:, t + 1] = torch.multinomial(transition[seqs[:, t]], 1, generator=gen).squeeze(1)
    return seqs[:, :-1], seqs[:, 1:]


@dataclass(frozen=True)
class ModelHeterogeneity:
    """Block-Hessian figures of one model.

    Attributes:
        top_eigenvalues: ``{block: top eigenvalue of H_bb}``.
        max_residual: the largest Lanczos residual bound among them.
        spread: max over min of the (positive) top eigenvalues.
        mean_js: mean pairwise JS distance between the blocks' spectral densities.
        loss: the loss at the evaluation point.
    """

    top_eigenvalues: dict[str, float]
    max_residual: float
    spread: float
    mean_js: float
    loss: float


@dataclass(frozen=True)
class HeterogeneityResult:
    """Transformer and MLP figures for one seed."""

    seed: int
    transformer: ModelHeterogeneity
    mlp: ModelHeterogeneity

    @property
    def spread_ratio(self) -> float:
        """Transformer spread over MLP spread (the claim: much larger than 1)."""
        return self.transformer.spread / self.mlp.spread

    @property
    def js_ratio(self) -> float:
        """Transformer mean JS distance over the MLP's."""
        return self.transformer.mean_js / self.mlp.mean_js


def _measure(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Tensor, Tensor],
    seed: int,
    lanczos_steps: int,
    slq_steps: int,
    variance: float,
) -> ModelHeterogeneity:
    groups = {name: [name] for name, p in model.named_parameters() if p.ndim == 2}
    monitor = HessianDiagnostics(
        groups, top_k=1, lanczos_steps=lanczos_steps, spectrum_steps=slq_steps, whole_model=False, seed=seed
    )
    report = monitor(model, loss_fn, batch)
    tops = {name: block.top_eigenvalues[0] for name, block in report.blocks.items()}
    spectra = [block.spectrum for block in report.blocks.values() if block.spectrum is not None]
    lo = min(float(s.nodes.min()) for s in spectra) - 5 * math.sqrt(variance)
    hi = max(float(s.nodes.max()) for s in spectra) + 5 * math.sqrt(variance)
    points = max(2000, int(8 * (hi - lo) / math.sqrt(variance)))
    grid = torch.linspace(lo, hi, points, dtype=torch.float64)
    densities = [s.density(grid, variance=variance)[1] for s in spectra]
    js = [js_distance(a, b) for a, b in itertools.combinations(densities, 2)]
    return ModelHeterogeneity(
        top_eigenvalues=tops,
        max_residual=max(r for block in report.blocks.values() for r in block.residuals),
        spread=report.top_eigenvalue_spread(),
        mean_js=sum(js) / len(js),
        loss=float(report.loss) if report.loss is not None else float("nan"),
    )


def block_heterogeneity(
    seed: int = 0, *, train_steps: int = 0, lanczos_steps: int = 30, slq_steps: int = 30, variance: float = 1e-5
) -> HeterogeneityResult:
    """Measure block heterogeneity of a tiny transformer and a tiny MLP for one seed.

    Args:
        seed: seeds the models' initialization, the data and the probes.
        train_steps: Adam steps (lr 1e-2) on the fixed batch before measuring (0: at initialization).
        lanczos_steps: Lanczos steps for each block's top eigenvalue.
        slq_steps: SLQ steps (one probe) for each block's spectral density.
        variance: Gaussian kernel variance of the densities (the paper's code: 1e-5).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    transformer, mlp = TinyTransformer(), _tiny_mlp()
    lm_batch = _bigram_batch(gen)
    cls_batch = (torch.randn(4 * BATCH, 16, generator=gen), torch.randint(0, VOCAB, (4 * BATCH,), generator=gen))
    figures = []
    cases: list[tuple[nn.Module, LossFn, tuple[Tensor, Tensor]]] = [
        (transformer, _lm_loss, lm_batch),
        (mlp, _cls_loss, cls_batch),
    ]
    for model, loss_fn, batch in cases:
        if train_steps:
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            for _ in range(train_steps):
                opt.zero_grad()
                loss_fn(model, batch).backward()
                opt.step()
        figures.append(_measure(model, loss_fn, batch, seed, lanczos_steps, slq_steps, variance))
    return HeterogeneityResult(seed=seed, transformer=figures[0], mlp=figures[1])


def format_table(results: Sequence[HeterogeneityResult]) -> str:
    """A plain-text table of the figures, one row per seed."""
    header = (
        f"{'seed':>4}  {'spread TF':>10}  {'spread MLP':>10}  {'ratio':>7}  "
        f"{'JS TF':>6}  {'JS MLP':>6}  {'ratio':>6}  {'max resid':>9}"
    )
    rows = [header]
    for r in results:
        resid = max(r.transformer.max_residual, r.mlp.max_residual)
        rows.append(
            f"{r.seed:>4}  {r.transformer.spread:>10.1f}  {r.mlp.spread:>10.2f}  {r.spread_ratio:>7.1f}  "
            f"{r.transformer.mean_js:>6.3f}  {r.mlp.mean_js:>6.3f}  {r.js_ratio:>6.2f}  {resid:>9.1e}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (and each block's top eigenvalue with ``--verbose``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    results = [block_heterogeneity(seed, train_steps=args.train_steps) for seed in args.seeds]
    print(format_table(results))
    if args.verbose:
        for r in results:
            for label, fig in (("transformer", r.transformer), ("mlp", r.mlp)):
                tops = "  ".join(f"{name}={value:.2e}" for name, value in fig.top_eigenvalues.items())
                print(f"seed {r.seed} {label} (loss {fig.loss:.3f}): {tops}")


if __name__ == "__main__":
    main()
