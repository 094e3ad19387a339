"""Small reference models shared by the benchmark workloads and the paper-claim experiments.

:class:`TinyGPT` is a GPT-style decoder-only transformer (token and position embeddings, pre-norm blocks of
causal multi-head self-attention and a GELU MLP, a final LayerNorm and an untied output head), small enough to
train on two CPU cores. Its parameter names follow the conventions that name-driven optimizers recognise:

================================  ===========================================================================
parameter                         Adam-mini partition (``steepest.optim.adam_mini.partition``)
================================  ===========================================================================
``wte.weight``                    per row (token embedding, ``wte``)
``pos_embed.weight``              per row (position embedding, ``embed``)
``blocks.i.attn.q_proj.weight``   per head (query, ``q_proj``)
``blocks.i.attn.k_proj.weight``   per head (key, ``k_proj``)
``blocks.i.attn.v_proj.weight``   per row (value, ``v_proj``)
``blocks.i.attn.o_proj.weight``   per row (attention output, ``o_proj``)
``blocks.i.mlp.fc_in.weight``     per row (``mlp``)
``blocks.i.mlp.fc_out.weight``    per row (``mlp``)
``blocks.i.norm1/2.*``, ``norm_f.*``  one block per tensor (norm gains; biases elementwise), no weight decay
``lm_head.weight``                per row (output head, ``lm_head``; the last ``nn.Linear``, for SCALE)
================================  ===========================================================================

The q/k/v/o projections are separate bias-free ``nn.Linear`` layers, so low-rank projection methods (GaLore,
Fira, FRUGAL) find every attention and MLP matrix as a linear layer other than the head. ``model_facts()``
returns ``{"dim": ..., "n_heads": ...}`` for Adam-mini.

Determinism: with ``seed`` the weights are drawn from a private ``torch.Generator`` (GPT-2/nanoGPT scheme:
``N(0, 0.02^2)`` for linear and embedding weights, ``0.02 / sqrt(2 n_layers)`` for the residual output
projections ``o_proj`` and ``fc_out``, LayerNorm gains 1 and biases 0); the global RNG is not touched. The
forward pass uses ``scaled_dot_product_attention`` with a causal mask, which is deterministic on CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate bias-free ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"dim {dim} must be a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over earlier positions of ``x`` ``(B, T, dim)``."""
        b, t, d = x.shape

        def heads(z: Tensor) -> Tensor:
            return z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                           is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """``fc_in`` (dim -> 4 dim), GELU, ``fc_out`` (4 dim -> dim), bias-free."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(dim, 4 * dim, bias=False)
        self.fc_out = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The MLP applied position-wise."""
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim)

    def forward(self, x: Tensor) -> Tensor:
        """One residual attention and one residual MLP update."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """A small GPT-style character/token language model (see the module docstring for names and init).

    Args:
        vocab: vocabulary size.
        dim: model width (embedding size); a multiple of ``n_heads``.
        n_heads: attention heads per layer.
        n_layers: transformer blocks.
        context: maximum sequence length (size of the position embedding).
        seed: draw the initial weights from ``torch.Generator().manual_seed(seed)``; ``None`` uses the global
            RNG (like any ``nn.Module``).

    Example:
        >>> model = TinyGPT(vocab=16, dim=32, n_heads=2, n_layers=1, context=8, seed=0)
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 16])
        >>> model.model_facts()
        {'dim': 32, 'n_heads': 2}
    """

    def __init__(
        self, vocab: int, dim: int, n_heads: int, n_layers: int, context: int, seed: int | None = None
    ) -> None:
        super().__init__()
        self.vocab, self.dim, self.n_heads, self.n_layers, self.context = vocab, dim, n_heads, n_layers, context
        # The layers' own default initialisation draws from the global RNG; with a seed it is overwritten, so
        # run it on a forked RNG and leave the caller's RNG state untouched.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.wte = nn.Embedding(vocab, dim)
            self.pos_embed = nn.Embedding(context, dim)
            self.blocks = nn.ModuleList(Block(dim, n_heads) for _ in range(n_layers))
            self.norm_f = nn.LayerNorm(dim)
            self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.reset_parameters(None if seed is None else torch.Generator().manual_seed(seed))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (GPT-2 scheme), drawing from ``generator`` when given."""
        residual_std = 0.02 / math.sqrt(2 * self.n_layers)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if ".norm" in f".{name}":
                    param.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith(("o_proj.weight", "fc_out.weight")):
                    param.normal_(0.0, residual_std, generator=generator)
                else:
                    param.normal_(0.0, 0.02, generator=generator)

    def model_facts(self) -> dict[str, int]:
        """``{"dim", "n_heads"}``, what Adam-mini needs to partition queries and keys by head."""
        return {"dim": self.dim, "n_heads": self.n_heads}

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(B, T, vocab)`` for token ids ``(B, T)`` with ``T <= context``."""
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        x = self.wte(tokens) + self.pos_embed(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))
