r"""A binary kernel SVM trained by coordinate descent on its dual, with a scikit-learn-like interface.

The dual (libsvm's form): :math:`\min_\alpha \tfrac12\alpha^\top Q\alpha - 1^\top\alpha` s.t.
:math:`y^\top\alpha = 0`, :math:`0 \le \alpha \le C`, :math:`Q_{ij} = y_iy_jK(x_i, x_j)`. With
:math:`z = y\odot\alpha` it is :math:`\min_z \tfrac12 z^\top Kz - y^\top z` s.t. :math:`1^\top z = 0`,
:math:`\min(0, y_iC) \le z_i \le \max(0, y_iC)`: a sum- and bound-constrained problem for
:func:`~steepest.coordinate.solver.minimize_sum_constrained`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from steepest.coordinate.kernels import KernelCache, KernelFn, linear_kernel, rbf_kernel
from steepest.coordinate.objectives import QuadraticObjective
from steepest.coordinate.solver import SELECTIONS, Selection, SumConstrainedResult, minimize_sum_constrained


def _as_tensor(a: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(dtype=dtype, device="cpu")
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def libsvm_rho(z: Tensor, grad: Tensor, lower: Tensor, upper: Tensor) -> float:
    r"""The offset :math:`\rho` (decision :math:`= \sum_i z_iK(x_i, x) - \rho`) as libsvm computes it.

    In the z-variables :math:`y_iG_i` of libsvm equals the gradient :math:`g_i` of the z-problem.
    :math:`\rho` is the mean of :math:`g_i` over free coordinates (:math:`l_i < z_i < u_i`); with none
    free it is the midpoint of :math:`[\max_{z_i = u_i} g_i, \min_{z_i = l_i} g_i]`
    (libsvm ``Solver::calculate_rho``).
    """
    at_lower = z <= lower
    at_upper = z >= upper
    free = ~(at_lower | at_upper)
    if bool(free.any()):
        return float(grad[free].mean())
    ub = float(grad[at_lower].min()) if bool(at_lower.any()) else float("inf")
    lb = float(grad[at_upper].max()) if bool(at_upper.any()) else float("-inf")
    return 0.5 * (ub + lb)


class SVC:
    r"""Binary C-support vector classifier solved by greedy coordinate descent on the dual.

    Paper (the solver's default rule): Ramesh, Mishkin, Schmidt, Zhou, Lavington, She, "Analyzing and
    Improving Greedy 2-Coordinate Updates for Equality-Constrained Optimization via Steepest Descent
    in the 1-Norm", 2023, arXiv:2307.01169 — the bound-and-sum-constrained 1-norm steepest-descent
    rule, computed in O(n log n) per iteration. For comparison ``selection`` also takes libsvm's rules
    (``"mvp"``, ``"wss2"``; Fan, Chen, Lin, JMLR 6, 2005) and ``"random"``.

    The interface follows ``sklearn.svm.SVC`` for two classes: ``dual_coef_`` holds
    :math:`y_i\alpha_i` of the support vectors (y = +1 for ``classes_[1]``), ``intercept_`` is
    :math:`-\rho` with :math:`\rho` from libsvm's rule (:func:`libsvm_rho`), and a positive
    ``decision_function`` means ``classes_[1]``.

    Differences from libsvm: no shrinking, no probability estimates, binary problems only; the
    stopping rule (maximal KKT violation <= ``tol``) is libsvm's.

    Args:
        C: box bound, > 0. Default 1.0 (scikit-learn).
        kernel: ``"rbf"`` (default) or ``"linear"``.
        gamma: RBF width: ``"scale"`` (default, :math:`1/(d\,\mathrm{Var}(X))`, scikit-learn's),
            ``"auto"`` (:math:`1/d`) or a positive float.
        tol: KKT-violation tolerance, default 1e-3 (scikit-learn / libsvm).
        selection: working-set rule, default ``"greedy"``.
        cache_size: kernel-row cache in MB, default 200 (scikit-learn).
        max_iter: iteration cap, default 10_000_000 (libsvm's floor).
        seed: seed for ``selection="random"``.
        dtype: floating dtype of the computation, default float64 (as libsvm).

    Attributes (after ``fit``): ``classes_``, ``support_``, ``support_vectors_``, ``dual_coef_``
    (shape ``(1, n_SV)``), ``intercept_`` (shape ``(1,)``), ``n_iter_``, ``kkt_violation_``,
    ``dual_objective_`` (:math:`\tfrac12\alpha^\top Q\alpha - 1^\top\alpha`), ``result_``, ``cache_``.

    Example:
        >>> import torch
        >>> X = torch.tensor([[0.0], [1.0], [3.0], [4.0]], dtype=torch.float64)
        >>> clf = SVC(kernel="linear").fit(X, [0, 0, 1, 1])
        >>> clf.predict(torch.tensor([[0.5], [3.5]], dtype=torch.float64)).tolist()
        [0, 1]
    """

    def __init__(
        self,
        C: float = 1.0,
        kernel: str = "rbf",
        gamma: float | str = "scale",
        tol: float = 1e-3,
        selection: Selection = "greedy",
        cache_size: float = 200.0,
        max_iter: int = 10_000_000,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if not C > 0:
            raise ValueError(f"C must be positive, got {C}")
        if kernel not in ("rbf", "linear"):
            raise ValueError(f"kernel must be 'rbf' or 'linear', got {kernel!r}")
        if isinstance(gamma, str):
            if gamma not in ("scale", "auto"):
                raise ValueError(f"gamma must be 'scale', 'auto' or a positive float, got {gamma!r}")
        elif not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not cache_size > 0:
            raise ValueError(f"cache_size must be positive, got {cache_size}")
        self.C, self.kernel, self.gamma, self.tol = float(C), kernel, gamma, float(tol)
        self.selection: Selection = selection
        self.cache_size, self.max_iter, self.seed, self.dtype = cache_size, max_iter, seed, dtype

    def _kernel_fn(self, X: Tensor) -> KernelFn:
        if self.kernel == "linear":
            return linear_kernel
        if self.gamma == "scale":
            var = float(X.var(unbiased=False))
            gamma = 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        elif self.gamma == "auto":
            gamma = 1.0 / X.shape[1]
        else:
            gamma = float(self.gamma)
        self._gamma = gamma
        return rbf_kernel(gamma)

    def fit(self, X: Any, y: Any, record: bool = False) -> SVC:
        """Train on data ``X`` (shape ``(n, d)``) with two-class labels ``y``; returns self.

        With ``record=True`` the dual objective after every iteration is kept in ``result_.history``.
        """
        Xt = _as_tensor(X, self.dtype)
        labels = np.asarray(y.cpu().numpy() if isinstance(y, Tensor) else y)
        if Xt.ndim != 2 or labels.shape != (Xt.shape[0],):
            raise ValueError("X must be (n, d) and y must be (n,)")
        self.classes_ = np.unique(labels)
        if len(self.classes_) != 2:
            raise ValueError(f"SVC here is binary; got {len(self.classes_)} classes")
        sign = torch.as_tensor(np.where(labels == self.classes_[1], 1.0, -1.0), dtype=self.dtype)
        self._kfn = self._kernel_fn(Xt)
        cache = KernelCache(Xt, self._kfn, int(self.cache_size * 2**20))
        zero, box = torch.zeros_like(sign), torch.full_like(sign, self.C)  # C in the solver's dtype
        lower = torch.where(sign > 0, zero, -box)
        upper = torch.where(sign > 0, box, zero)
        result: SumConstrainedResult = minimize_sum_constrained(
            QuadraticObjective(cache, -sign),
            torch.zeros_like(sign),
            lower=lower,
            upper=upper,
            selection=self.selection,
            tol=self.tol,
            max_iter=self.max_iter,
            seed=self.seed,
            record=record,
        )
        z = result.x
        self.support_ = torch.nonzero(z != 0).flatten()
        self.support_vectors_ = Xt[self.support_]
        self.dual_coef_ = z[self.support_].unsqueeze(0)
        self.intercept_ = torch.tensor([-libsvm_rho(z, result.grad, lower, upper)], dtype=self.dtype)
        self.n_iter_ = result.n_iter
        self.kkt_violation_ = result.violation
        self.dual_objective_ = result.objective
        self.result_, self.cache_ = result, cache
        return self

    def decision_function(self, X: Any) -> Tensor:
        """Signed distance-like score; positive means ``classes_[1]``. Shape ``(n,)``."""
        if not hasattr(self, "dual_coef_"):
            raise RuntimeError("call fit before decision_function")
        Xt = _as_tensor(X, self.dtype)
        out = []
        for k in range(0, Xt.shape[0], 4096):  # bounded memory for large test sets
            out.append(self._kfn(Xt[k : k + 4096], self.support_vectors_) @ self.dual_coef_[0])
        return torch.cat(out) + self.intercept_

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (from ``classes_``)."""
        return np.asarray(self.classes_[(self.decision_function(X) > 0).long().numpy()])
