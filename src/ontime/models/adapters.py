"""Adapters: small residual bottleneck layers added after each block of a trained network.

An adapter computes ``x + up(relu(down(x)))`` with ``down: d -> rank`` and ``up: rank -> d``
(Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP"). ``up`` starts at zero
(weight and bias), so a network with freshly added adapters computes exactly the function it
computed without them; fine-tuning then learns only the adapters (and optionally the head) while
the trained weights stay as they are (the ``adapter`` strategy of ``training/finetune.py``).

A network takes ``adapter_rank`` among its keyword arguments (0, the default: no adapters), so a
saved candidate's ``model.json`` rebuilds the adapted network like any other.

Shape:
    input: (..., d); output: (..., d).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Adapter(nn.Module):
    """A residual bottleneck: ``x + up(relu(down(x)))``, the identity until ``up`` learns.

    Shape:
        input: (..., d); output: (..., d).
    """

    def __init__(self, d: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(d, rank)
        self.up = nn.Linear(rank, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.relu(self.down(x)))  # (..., rank) inside, (..., d) out


def adapter_stack(n_blocks: int, d: int, rank: int) -> nn.ModuleList | None:
    """One adapter per block (``d`` wide, ``rank`` the bottleneck), or None for ``rank == 0``.

    Raises:
        ValueError: ``rank`` is negative.
    """
    if rank < 0:
        raise ValueError(f"adapter_rank must be >= 0 (0 = no adapters), however: adapter_rank={rank}")
    if rank == 0:
        return None
    return nn.ModuleList(Adapter(d, rank) for _ in range(n_blocks))
