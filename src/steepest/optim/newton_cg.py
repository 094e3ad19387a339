"""Newton-CG that keeps negative curvature, with a strong-Wolfe line search allowing negative steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._estimators import RankAveraging, hessian_vector_products, release_graph, require_graph
from steepest.optim._linesearch import refuse_grad_scaler, strong_wolfe_search
from steepest.optim._step_size_base import OptimizerWideSettings
from steepest.optim._validation import Boolean, Integer, Interval, Rule

Vector = list[Tensor]


def _dot(a: Vector, b: Vector) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def _as_float(value: Any) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def _axpy(alpha: float, x: Vector, y: Vector) -> Vector:
    """``y + alpha * x`` as a new vector."""
    return [yi + alpha * xi for xi, yi in zip(x, y, strict=True)]


@dataclass
class CGResult:
    """What :func:`conjugate_gradient` found."""

    direction: Vector
    iterations: int
    negative_curvature: bool


def conjugate_gradient(
    hvp: Callable[[Vector], Vector], gradient: Vector, max_iter: int, tol: float, keep_negative: bool
) -> CGResult:
    """Approximately solve ``H d = -g`` by conjugate gradient from ``d = 0``.

    Stops when ``||r|| <= tol * ||g||`` or after ``max_iter`` products. On a direction ``p`` with
    ``p^T H p <= 0``: with ``keep_negative`` the iteration goes on (CG's recurrences do not need
    positive curvature; the result is the Newton direction on the Krylov space, possibly an ascent
    direction), stopping only on an exact breakdown ``p^T H p == 0``; without it, classic truncated
    Newton stops there and returns the current iterate (``-g`` if that is still zero).
    """
    direction = [torch.zeros_like(g) for g in gradient]
    residual = [-g for g in gradient]
    search = [r.clone() for r in residual]
    rr = _dot(residual, residual)
    g_norm = math.sqrt(rr)
    negative = False
    iterations = 0
    if g_norm == 0.0 or not math.isfinite(g_norm):
        return CGResult(direction if g_norm == 0.0 else search, 0, False)
    for iterations in range(1, max_iter + 1):
        product = hvp(search)
        curvature = _dot(search, product)
        if not curvature > 0:
            negative = True
            if not keep_negative or curvature == 0 or not math.isfinite(curvature):
                if iterations == 1:
                    direction = search
                break
        alpha = rr / curvature
        direction = _axpy(alpha, search, direction)
        residual = _axpy(-alpha, product, residual)
        rr_new = _dot(residual, residual)
        if math.sqrt(rr_new) <= tol * g_norm:
            break
        search = _axpy(rr_new / rr, search, residual)
        rr = rr_new
    return CGResult(direction, iterations, negative)


class NewtonCG(OptimizerWideSettings, RankAveraging, SteepestOptimizer):
    r"""Hessian-free Newton-CG that keeps negative curvature, with negative step sizes.

    Paper: Shea, Schmidt, "Don't Be So Positive: Negative Step Sizes in Second-Order Methods",
    2024, arXiv:2411.11224. Newton-CG and the line search: Nocedal & Wright, *Numerical
    Optimization* (2006), Algorithms 7.1, 3.5 and 3.6.

    Each step, at the current point with loss :math:`f`, gradient :math:`g` and Hessian
    :math:`H` (Hessian-vector products by double backward):

    1. Conjugate gradient on :math:`H d = -g` from :math:`d = 0`, stopped at
       :math:`\|r\| \le \text{cg\_tol}\,\|g\|` or ``cg_max_iter`` products. Where classic
       truncated Newton stops on a direction of non-positive curvature, this keeps iterating
       (``negative_steps=True``, the paper's method), so :math:`d` is the Newton direction on the
       Krylov space even when :math:`H` is indefinite, and may point uphill.
    2. Per param group, :math:`D = \eta_{group}\, d` (``lr`` scales the direction; 1 is Newton's).
    3. If :math:`g^\top D > 0` the step size is searched over **negative** values
       (:math:`\alpha = -\tau`), otherwise over positive ones: a strong-Wolfe search in
       :math:`\tau > 0` from :math:`\tau = 1` on :math:`f(\theta + \sigma\tau D)`,
       :math:`\sigma = -\mathrm{sign}(g^\top D)`, with :math:`c_1, c_2`. Then
       :math:`\theta \leftarrow \theta + \alpha D`, :math:`\alpha = \sigma\tau`.

    With ``negative_steps=False`` it is classic Newton-CG (Nocedal & Wright Algorithm 7.1: stop
    CG at negative curvature, return the iterate or :math:`-g`), the paper's baseline.
    The search is the library's shared :func:`~steepest.optim._linesearch.strong_wolfe_search`
    (bracketing and bisection zoom). Without a strong-Wolfe point in ``max_evals`` evaluations the
    best point of sufficient decrease is taken; without one, the parameters do not move.

    Differences from the paper: the paper states the method for deterministic full-batch
    problems; here it is a ``torch.optim`` optimizer for small models. ``lr`` scaling per group
    and ``maximize`` are additions. One CG solve and one line search span all param groups, so
    every setting but ``lr`` (``cg_max_iter``, ``cg_tol``, ``c1``, ``c2``, ``max_evals``,
    ``negative_steps``, ``maximize``, ``foreach``) is optimizer-wide: a group giving one a
    different value raises ``ValueError`` (it would be ignored).

    State per parameter: ``step`` (scalar), ``step_size`` (float64 scalar: the last signed
    :math:`\alpha`, negative after a negative step), ``direction`` (the last CG direction :math:`d`, like the
    parameter). ``last_info`` holds the last step's CG iterations, whether negative curvature was
    met, the number of closure evaluations and :math:`\alpha`.

    Args:
        params: parameters or param groups.
        lr: scale of the Newton direction per group, default 1.0 (a Newton step).
        cg_max_iter: maximum Hessian-vector products per step, default 50.
        cg_tol: relative residual tolerance of CG, default 1e-6.
        c1: sufficient-decrease constant, default 1e-4 (Nocedal & Wright).
        c2: curvature constant of the strong Wolfe conditions, default 0.9 (Newton methods, N&W).
        max_evals: closure evaluations allowed per line search, default 25 (as torch's L-BFGS).
        negative_steps: keep negative curvature and allow negative step sizes (the paper),
            default True; False gives classic Newton-CG.
        maximize: ascend the objective instead.
        foreach: accepted for interface compatibility; the work is a few whole-vector
            operations, so both settings run the same code.

    Requirements: a closure (capability ``requires_closure``) that follows the closure contract
    with ``loss.backward(create_graph=True)`` (capability ``needs_create_graph``). ``step``
    raises ``RuntimeError`` without a closure or when the gradients have no graph. Every
    evaluation's graph is released (``p.grad`` detached), and ``p.grad`` is left as the last
    evaluation set it. Cost: up to ``cg_max_iter`` double-backward products plus one forward and
    backward per line-search evaluation: for small models. Not with ``torch.compile(model)``: the
    Hessian-vector product differentiates the gradient a second time, and torch's AOTAutograd
    does not support double backward
    ("torch.compile with aot_autograd does not currently support double backward", torch 2.13);
    run the model eagerly. Not with ``torch.amp.GradScaler`` (refused with a ``RuntimeError``):
    use bfloat16 autocast, which needs no scaler.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([0.0, 0.5]))
        >>> opt = steepest.NewtonCG([w])
        >>> def closure():  # f = w0^2 - w1^2 + w1^4 / 4, minima at w1 = ±sqrt(2)
        ...     opt.zero_grad()
        ...     loss = w[0] ** 2 - w[1] ** 2 + w[1] ** 4 / 4
        ...     if torch.is_grad_enabled():
        ...         loss.backward(create_graph=True)
        ...     return loss
        >>> _ = opt.step(closure)  # H = diag(2, -1.25): the Newton direction points uphill
        >>> opt.last_info["negative_curvature"], opt.last_info["step_size"] < 0
        (True, True)
        >>> bool(closure() < -0.5)  # the negative step went downhill, past the saddle
        True
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        requires_closure=True, needs_create_graph=True, elementwise=False, global_statistic=True
    )
    dtensor_refusal: ClassVar[str | None] = (
        "Hessian-vector products through gradients with an autograd graph (backward(create_graph=True)); "
        "FSDP2's reduce-scatter returns gradients without one"
    )
    param_state = ("direction",)
    scalar_state = ("step",)
    optimizer_wide_reason = "one CG solve and one line search span all param groups"
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "cg_max_iter": Integer(1),
            "cg_tol": Interval(0.0, 1.0, low_open=True, high_open=True),
            "c1": Interval(0.0, 1.0, low_open=True, high_open=True),
            "c2": Interval(0.0, 1.0, low_open=True, high_open=True),
            "max_evals": Integer(1),
            "negative_steps": Boolean(),
        }
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        cg_max_iter: int = 50,
        cg_tol: float = 1e-6,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_evals: int = 25,
        negative_steps: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            cg_max_iter=cg_max_iter,
            cg_tol=cg_tol,
            c1=c1,
            c2=c2,
            max_evals=max_evals,
            negative_steps=negative_steps,
            maximize=maximize,
            foreach=foreach,
        )
        for group in self.param_groups:
            if group["c1"] >= group["c2"]:
                raise ValueError(f"NewtonCG: c1={group['c1']} must be below c2={group['c2']}")
        self.last_info: dict[str, Any] = {}

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``step`` (float32), ``step_size`` (float64: the exact signed alpha), ``direction`` (like the parameter)."""
        shapes = super().state_shapes(param, group)
        shapes["step_size"] = ((), torch.float64)
        return shapes

    #: ``GradScaler.step`` then hands ``grad_scale``/``found_inf`` over instead of unscaling, and
    #: ``step`` refuses with an error naming bfloat16 autocast (``refuse_grad_scaler``).
    _step_supports_amp_scaling: ClassVar[bool] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Newton-CG step with a (possibly negative) strong-Wolfe step size; returns the initial loss."""
        refuse_grad_scaler(self, "hvp")
        if closure is None:
            raise RuntimeError("NewtonCG.step requires a closure that re-evaluates the loss")
        settings = self.param_groups[0]
        sign = -1.0 if settings["maximize"] else 1.0
        with torch.enable_grad():
            loss = closure()
        gathered = [self._params_with_grad(group) for group in self.param_groups]
        params = [p for ps, _ in gathered for p in ps]
        lrs = [group["lr"] for group, (ps, _) in zip(self.param_groups, gathered, strict=True) for _ in ps]
        if not params:
            return loss
        graph_grads = [g for _, grads in gathered for g in grads]
        hvp_calls: list[int] = []
        try:
            require_graph(type(self).__name__, graph_grads)
            work = [torch.promote_types(p.dtype, torch.float32) for p in params]
            gradient = [sign * g.detach().to(w) for g, w in zip(graph_grads, work, strict=True)]
            self._average_over_ranks(gradient)

            def hvp(vector: Vector) -> Vector:
                hvp_calls.append(1)
                seeds = [v.to(p.dtype) for v, p in zip(vector, params, strict=True)]
                products = [
                    sign * hv.to(w)
                    for hv, w in zip(hessian_vector_products(params, graph_grads, seeds), work, strict=True)
                ]
                self._average_over_ranks(products)
                return products

            result = conjugate_gradient(
                hvp, gradient, settings["cg_max_iter"], settings["cg_tol"], settings["negative_steps"]
            )
        finally:
            graph_grads = []  # drop the references to the graph
            release_graph(params)
        direction = [lr * d for lr, d in zip(lrs, result.direction, strict=True)]
        slope = _dot(gradient, direction)
        f0 = sign * _as_float(loss)
        origin = [p.detach().clone() for p in params]
        evals, alpha = 0, 0.0
        if slope != 0 and math.isfinite(slope) and math.isfinite(f0):
            orientation = -1.0 if slope > 0 else 1.0
            searched = [orientation * d for d in direction]

            def phi(t: float) -> tuple[float, float]:
                for p, o, d in zip(params, origin, searched, strict=True):
                    p.copy_(o + t * d.to(o.dtype))
                with torch.enable_grad():
                    value = closure()
                release_graph(params)
                grads = [
                    torch.zeros_like(d) if p.grad is None else sign * p.grad.to(d.dtype)
                    for p, d in zip(params, searched, strict=True)
                ]
                self._average_over_ranks(grads)
                return sign * _as_float(value), _dot(grads, searched)

            search = strong_wolfe_search(
                phi, f0, -abs(slope), 1.0, settings["c1"], settings["c2"], settings["max_evals"]
            )
            evals = search.evaluations
            alpha = orientation * search.step_size
        for p, o, d in zip(params, origin, direction, strict=True):
            p.copy_(o + alpha * d.to(o.dtype) if alpha != 0 else o)
        for group, (ps, _) in zip(self.param_groups, gathered, strict=True):
            for p in ps:
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)
        for p, d in zip(params, result.direction, strict=True):
            state = self.state[p]
            state["step"].add_(1.0)
            state["step_size"].fill_(alpha)
            state["direction"].copy_(d)
        self.last_info = {
            "cg_iterations": result.iterations,
            "negative_curvature": result.negative_curvature,
            "evaluations": evals,
            "step_size": alpha,
            "hvp_evals": len(hvp_calls),
        }
        return loss
