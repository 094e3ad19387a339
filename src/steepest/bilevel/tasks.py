"""Two ready-made bilevel tasks on real data shipped inside scikit-learn (nothing is downloaded).

* :func:`digits_hyper_cleaning`: data hyper-cleaning (Franceschi, Donini, Frasconi, Pontil, ICML 2017,
  arXiv:1703.01785): a softmax regression trained on label-corrupted digits, one weight σ(λ_i) per
  training example, the weights learned so that the model does well on a small clean validation set.
* :func:`weight_decay_task`: per-feature weight decay for logistic regression (breast-cancer data plus
  pure-noise features), the decays learned on a validation split.

Both return objectives in the ``g(y, x)`` / ``f(y, x)`` convention of :mod:`steepest.bilevel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from steepest._extras import require
from steepest.bilevel._derivatives import Objective
from steepest.bilevel._tree import Tree


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-8
    return [(a - mean) / std for a in (train, *others)]


def _with_bias(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.hstack([a, np.ones((a.shape[0], 1))]), dtype=dtype)


@dataclass
class HyperCleaningTask:
    """Label-corrupted training set, clean validation and test sets (features include a bias column).

    Attributes:
        corrupted: boolean mask of the training examples whose label was replaced.
        l2: the inner problem's ridge coefficient c (makes it strongly convex).
    """

    X_train: Tensor
    y_train: Tensor
    corrupted: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor
    n_classes: int
    l2: float

    def inner(self) -> Objective:
        """g(W, λ) = (1/n) Σ σ(λ_i) CE(x_iᵀW, ỹ_i) + (c/2)‖W‖² (the weighted training loss)."""

        def g(W: Tree, lam: Tree) -> Tensor:
            losses = F.cross_entropy(self.X_train @ W, self.y_train, reduction="none")
            return (torch.sigmoid(lam) * losses).mean() + 0.5 * self.l2 * (W**2).sum()

        return g

    def baseline_inner(self) -> Objective:
        """The unweighted training loss on the noisy labels (every weight 1)."""

        def g(W: Tree, lam: Tree) -> Tensor:
            return F.cross_entropy(self.X_train @ W, self.y_train) + 0.5 * self.l2 * (W**2).sum()

        return g

    def outer(self) -> Objective:
        """f(W, λ) = mean cross-entropy on the clean validation set."""
        return lambda W, lam: F.cross_entropy(self.X_val @ W, self.y_val)

    def init_inner(self) -> Tensor:
        """Zero weights, (features + 1) × classes."""
        return torch.zeros(self.X_train.shape[1], self.n_classes, dtype=self.X_train.dtype)

    def inner_lipschitz(self) -> float:
        """An upper bound on the smoothness of g in W: ½ λ_max(XᵀX)/n + c (softmax CE curvature ≤ ½)."""
        n = self.X_train.shape[0]
        return 0.5 * float(torch.linalg.matrix_norm(self.X_train, ord=2)) ** 2 / n + self.l2

    @staticmethod
    def accuracy(W: Tensor, X: Tensor, y: Tensor) -> float:
        """Classification accuracy of the linear model W on (X, y)."""
        return float(((X @ W).argmax(1) == y).to(torch.float64).mean())


def digits_hyper_cleaning(
    n_train: int = 800,
    n_val: int = 200,
    noise: float = 0.5,
    l2: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> HyperCleaningTask:
    """Hyper-cleaning on scikit-learn's digits (1797 8×8 images, 10 classes), test set = the rest.

    Each training label is, independently with probability ``noise``, replaced by one of the other nine
    classes drawn uniformly (``corrupted`` marks them). Features are standardized with training statistics.
    """
    load_digits = require("sklearn.datasets", "the hyper-cleaning task's digits data").load_digits

    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    X, y = load_digits(return_X_y=True)
    if n_train + n_val >= len(y):
        raise ValueError(f"n_train + n_val must be < {len(y)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    tr, va, te = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    Xtr, Xva, Xte = _standardize(X[tr].astype(np.float64), X[va].astype(np.float64), X[te].astype(np.float64))
    noisy = y[tr].copy()
    flip = rng.random(n_train) < noise
    noisy[flip] = (noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    return HyperCleaningTask(
        _with_bias(Xtr, dtype), torch.as_tensor(noisy), torch.as_tensor(flip),
        _with_bias(Xva, dtype), torch.as_tensor(y[va]), _with_bias(Xte, dtype), torch.as_tensor(y[te]), 10, l2,
    )  # fmt: skip


@dataclass
class WeightDecayTask:
    """Binary classification splits for learning one L2 coefficient per feature.

    The first ``n_real`` features are the data set's, the rest are standard-normal noise.
    The hyperparameters are ``{"log_decay": (features,)}``; the decay of feature j is exp(log_decay_j).
    """

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor
    n_real: int

    def inner(self) -> Objective:
        """g(w, x) = mean logistic loss on the training split + ½ Σ_j exp(x_j) w_j² (bias undecayed)."""

        def g(w: Tree, x: Tree) -> Tensor:
            loss = F.binary_cross_entropy_with_logits(self.X_train @ w, self.y_train)
            return loss + 0.5 * (x["log_decay"].exp() * w[:-1] ** 2).sum()

        return g

    def outer(self) -> Objective:
        """f(w, x) = mean logistic loss on the validation split."""
        return lambda w, x: F.binary_cross_entropy_with_logits(self.X_val @ w, self.y_val)

    def loss(self, w: Tensor, X: Tensor, y: Tensor) -> float:
        """Mean logistic loss of w on (X, y)."""
        return float(F.binary_cross_entropy_with_logits(X @ w, y))

    def accuracy(self, w: Tensor, X: Tensor, y: Tensor) -> float:
        """Accuracy of w on (X, y)."""
        return float((((X @ w) > 0).to(y.dtype) == y).to(torch.float64).mean())


def weight_decay_task(
    n_train: int = 80, n_val: int = 150, n_noise: int = 30, seed: int = 0, dtype: torch.dtype = torch.float64
) -> WeightDecayTask:
    """Breast-cancer data (569 samples, 30 features) plus ``n_noise`` noise features; test = the rest.

    A small training split makes the unregularized model overfit, so the decays matter.
    """
    load_breast_cancer = require("sklearn.datasets", "the weight-decay task's data").load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    X = np.hstack([X, rng.standard_normal((X.shape[0], n_noise))])
    order = rng.permutation(len(y))
    tr, va, te = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    Xtr, Xva, Xte = _standardize(X[tr], X[va], X[te])
    t = torch.as_tensor(y, dtype=dtype)
    n_real = X.shape[1] - n_noise
    return WeightDecayTask(
        _with_bias(Xtr, dtype), t[tr], _with_bias(Xva, dtype), t[va], _with_bias(Xte, dtype), t[te], n_real
    )
