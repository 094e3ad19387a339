"""The penalty method's solution approaches the bilevel solution as σ shrinks (a problem with a known answer).

Toy problem of algorithm-specs-2.md §29: f = ½‖y − a‖² + ½‖x‖², g = ½‖y − Bx‖², so y*(x) = Bx,
F(x) = ½‖Bx − a‖² + ½‖x‖² and x* = (BᵀB + I)⁻¹Bᵀa. The penalty method (Kwon et al., arXiv:2309.01753)
with a fixed σ converges to the stationary point x_σ of ψ_σ, known in closed form:
x_σ = (BᵀB/(1+σ) + I)⁻¹ Bᵀa/(1+σ), so ‖x_σ − x*‖ = O(σ). Also runs a decreasing σ schedule.

Run: ``python examples/bilevel_penalty_sigma.py OUT_DIR``. Writes ``penalty_sigma.png``, prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from steepest.bilevel import InnerLoop, Penalty, power_sigma_schedule, run_bilevel

DT = torch.float64


def main() -> None:
    """Run fixed σ values and a schedule, print the distances to x*, write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--outer-steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(6, 3, generator=gen, dtype=DT) / 6**0.5
    a = torch.randn(6, generator=gen, dtype=DT)

    def f(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - a) ** 2).sum() + 0.5 * (x**2).sum()

    def g(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - B @ x) ** 2).sum()

    eye = torch.eye(3, dtype=DT)
    x_star = torch.linalg.solve(B.T @ B + eye, B.T @ a)
    lr = 1 / (1 + float(torch.linalg.eigvalsh(B.T @ B)[-1]))

    def run(sigma: object) -> tuple[torch.Tensor, list[float]]:
        x = torch.zeros(3, dtype=DT, requires_grad=True)
        dist: list[float] = []

        def record(k: int, x_: torch.Tensor, y: torch.Tensor, info: dict[str, float]) -> None:
            dist.append(float(torch.linalg.vector_norm(x_.detach() - x_star)))

        opt = torch.optim.SGD([x], lr=lr)
        inner = InnerLoop(lr=0.9, steps=5)
        run_bilevel(f, g, torch.zeros(6, dtype=DT), x, opt, Penalty(sigma=sigma), inner=inner,  # type: ignore[arg-type]
                    outer_steps=args.outer_steps, callback=record)  # fmt: skip
        return x.detach(), dist

    sigmas = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    finals, curves = [], {}
    print(f"{'sigma':>8s} {'|x_sigma - x*| (run)':>22s} {'closed form':>12s}")
    for s in sigmas:
        _, dist = run(s)
        closed = torch.linalg.solve(B.T @ B / (1 + s) + eye, B.T @ a / (1 + s))
        finals.append(dist[-1])
        curves[f"σ = {s:g}"] = dist
        print(f"{s:8.3g} {dist[-1]:22.3e} {float(torch.linalg.vector_norm(closed - x_star)):12.3e}")
    _, sched = run(power_sigma_schedule(1.0, power=2.0, sigma_min=1e-4))
    print(f"schedule σ_k = max(1e-4, 1/(k+1)^2): final distance {sched[-1]:.3e}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].loglog(sigmas, finals, "o-", label="penalty method, fixed σ")
    axes[0].loglog(sigmas, [finals[0] * s / sigmas[0] for s in sigmas], "k--", label="slope 1 (O(σ))")
    axes[0].set(xlabel="σ", ylabel="‖x_σ − x*‖ after the run", title="penalty solution vs σ")
    axes[0].legend()
    for name in ("σ = 1", "σ = 0.1", "σ = 0.01", "σ = 0.001"):
        axes[1].semilogy(curves[name], label=name)
    axes[1].semilogy(sched, "k", label="σ_k = max(1e-4, 1/(k+1)²)")
    axes[1].set(xlabel="outer step", ylabel="‖x_k − x*‖", title="convergence")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(args.out_dir / "penalty_sigma.png", dpi=120)
    print(f"figure written to {args.out_dir}")


if __name__ == "__main__":
    main()
