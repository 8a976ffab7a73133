"""Parameter roles: each network says which of its parameters are embeddings, blocks, adapters or head.

Training and fine-tuning act on roles, never on parameter names or shapes:

- weight decay (``training/loop.py::parameter_groups``) applies to the weight matrices of the
  blocks, the adapters and the head (the ``nn.Linear`` weights there) and to nothing in
  ``no_decay``: biases, norm weights, embedding tables, per-feature weights and biases of the
  numeric embeddings, the CLS token;
- fine-tuning strategies (``training/finetune.py``) freeze roles and scale learning rates by role.

Adapters (``models/adapters.py``) exist only in a network built with ``adapter_rank > 0`` (the
``adapter`` fine-tuning strategy); elsewhere the role is empty.

A network implements `HasParameterRoles` by returning `roles_from_modules(...)` over its own
submodules; that call checks that every parameter belongs to exactly one role.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from torch import nn

Role = Literal["embeddings", "blocks", "adapters", "head"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True)
class ParameterRoles:
    """Names (as in ``named_parameters()``) of a model's parameters by role.

    Attributes:
        names: role -> parameter names; every parameter is in exactly one role.
        no_decay: parameters weight decay must not touch (everything but the weight matrices of
            the blocks, the adapters and the head).
    """

    names: dict[Role, tuple[str, ...]]
    no_decay: frozenset[str]

    def role_of(self, name: str) -> Role:
        for role, names in self.names.items():
            if name in names:
                return role
        raise KeyError(f"parameter {name!r} has no role")


@runtime_checkable
class HasParameterRoles(Protocol):
    """A network that declares its parameter roles (``models/mlp.py``, ``models/ft_transformer.py``)."""

    def parameter_roles(self) -> ParameterRoles: ...


Part = nn.Module | nn.Parameter | None


def roles_from_modules(
    model: nn.Module,
    *,
    embeddings: Iterable[Part],
    blocks: Iterable[Part],
    head: Iterable[Part],
    adapters: Iterable[Part] = (),
) -> ParameterRoles:
    """Roles from the submodules (or bare parameters) of ``model`` that make up each role.

    ``None`` parts (an absent optional submodule) are skipped. Weight decay applies to the
    ``weight`` of every ``nn.Linear`` inside blocks, adapters and head; every other parameter is in
    ``no_decay``.

    Raises:
        ValueError: a parameter of ``model`` is in no role or in more than one, or a part is not
            part of ``model``.
    """
    ids: dict[int, str] = {id(p): name for name, p in model.named_parameters()}
    names: dict[Role, tuple[str, ...]] = {}
    decay: set[str] = set()
    by_role: dict[Role, Iterable[Part]] = {
        "embeddings": embeddings,
        "blocks": blocks,
        "adapters": adapters,
        "head": head,
    }
    for role in ROLES:
        found: list[str] = []
        for part in by_role[role]:
            if part is None:
                continue
            params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
            foreign = [p for p in params if id(p) not in ids]
            if foreign:
                raise ValueError(f"role {role}: {len(foreign)} parameter(s) that are not the model's")
            found += [ids[id(p)] for p in params]
            if role != "embeddings" and isinstance(part, nn.Module):
                decay |= {ids[id(m.weight)] for m in part.modules() if isinstance(m, nn.Linear)}
        names[role] = tuple(found)
    roles = ParameterRoles(names=names, no_decay=frozenset(set(ids.values()) - decay))
    check_roles(model, roles)
    return roles


def check_roles(model: nn.Module, roles: ParameterRoles) -> None:
    """Every parameter of ``model`` in exactly one role, and no role naming anything else.

    Raises:
        ValueError: otherwise, naming the parameters concerned.
    """
    named = [name for name, _ in model.named_parameters()]
    listed = [n for names in roles.names.values() for n in names]
    twice = sorted(n for n, count in Counter(listed).items() if count > 1)
    missing = sorted(set(named) - set(listed))
    unknown = sorted(set(listed) - set(named))
    if twice or missing or unknown:
        raise ValueError(
            f"{type(model).__name__}: every parameter must have exactly one role; "
            f"in several roles: {twice}, in none: {missing}, not parameters: {unknown}"
        )


def parameter_roles(model: nn.Module) -> ParameterRoles:
    """The roles ``model`` declares, checked.

    Raises:
        TypeError: ``model`` does not declare roles (no ``parameter_roles`` method).
        ValueError: its roles do not cover its parameters exactly once.
    """
    if not isinstance(model, HasParameterRoles):
        raise TypeError(
            f"{type(model).__name__} does not declare parameter roles; add a parameter_roles() method "
            "(see ontime.models.roles)"
        )
    roles = model.parameter_roles()
    check_roles(model, roles)
    return roles
