"""The protect experiment's conditions: which (what, where, budget, epsilon) answers which of the paper's questions.

A :class:`Condition` is one way to protect a photo: ``fill`` (``optimised`` PGD, or ``black`` / ``noise`` /
``blur``, :mod:`leam.protect.fills`) placed at ``location`` (:mod:`leam.protect.locations`) with a pixel
``budget`` (fraction of the face region) and an L-infinity ``epsilon`` (pixel units; black and blur are not
bounded by it). :meth:`Design.conditions` lists, without repeats, the conditions of

- ``where`` (question 1): optimised at the headline budget and epsilon, at each LEAM map, each random
  location and (``sparse``) the location-free top-k gradient pixels;
- ``what`` (question 2): every fill and the optimised perturbation at the first LEAM map;
- ``person`` (question 3): the person-level map against the photo's own map and random face pixels;
- ``budget`` / ``epsilon``: the first LEAM map and random face pixels over the budget sweep, the first
  LEAM map over the epsilon sweep (the ``dvc plots``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from leam.errors import LeamError, check_choice
from leam.protect.fills import FILLS
from leam.protect.locations import RANDOM_LOCATIONS
from leam.topt import check_fraction

__all__ = ["QUESTIONS", "Condition", "Design", "networks"]

QUESTIONS = ("where", "what", "person", "budget", "epsilon")


def networks(sources: Sequence[str], held_out: Sequence[str], models: Sequence[str]) -> tuple[list[str], list[str]]:
    """The source and held-out networks (``held_out`` [] = every model that is not a source), checked against
    ``models`` (only those have embeddings and LEAM maps) and against each other; one LeamError line otherwise."""
    for key, names in (("protect.sources", sources), ("protect.held_out", held_out)):
        outside = [name for name in names if name not in models]
        if outside:
            raise LeamError(f"{key} has {outside[0]!r}, not in models ({', '.join(models)}): only those have "
                            f"embeddings and LEAM maps; add it to models or drop it")
    both = [name for name in held_out if name in sources]
    if both:
        raise LeamError(f"protect.held_out has {both[0]!r}, also a source: a held-out network is never seen by the "
                        f"optimiser")
    held_out = list(held_out) or [name for name in models if name not in sources]
    return list(sources), held_out


@dataclass(frozen=True)
class Condition:
    """One protection: what goes in (``fill``), where (``location``), how many pixels (``budget``), how strong."""

    fill: str
    location: str
    budget: float
    epsilon: float

    @property
    def name(self) -> str:
        """A stable id, also the PNG folder name: ``<fill>-<location>-b<budget>-e<epsilon>``."""
        strength = f"-e{self.epsilon:g}" if self.fill in ("optimised", "noise") else ""
        return f"{self.fill}-{self.location.replace(':', '_')}-b{self.budget:g}{strength}"


@dataclass(frozen=True)
class Design:
    """The params of ``protect`` that shape the conditions (validated here, before any heavy work)."""

    maps: tuple[str, ...]
    budget: float
    budgets: tuple[float, ...]
    epsilon: float
    epsilons: tuple[float, ...]
    fills: tuple[str, ...]
    random: tuple[str, ...]
    sparse: bool
    person: bool
    steps: int

    def __post_init__(self) -> None:
        if not self.maps:
            raise LeamError("protect.maps is empty; name at least one LEAM map, e.g. [overall]")
        for value in (self.budget, *self.budgets):
            check_fraction(value, "protect.budgets")
        for value in (self.epsilon, *self.epsilons):
            if not 0 < value <= 255:
                raise LeamError(f"protect.epsilons has {value!r}: epsilon must be in (0, 255] pixel units")
        for fill in self.fills:
            check_choice("protect.fills", fill, FILLS)
        for kind in self.random:
            check_choice("protect.random", kind, RANDOM_LOCATIONS)
        if self.steps < 1:
            raise LeamError(f"protect.steps={self.steps!r} must be >= 1")

    @property
    def own(self) -> str:
        return f"leam:{self.maps[0]}"

    def conditions(self) -> dict[Condition, tuple[str, ...]]:
        """Every condition once, with the questions it answers (``QUESTIONS``), in a stable order."""
        b, e = self.budget, self.epsilon
        found: dict[Condition, list[str]] = {}

        def add(condition: Condition, question: str) -> None:
            found.setdefault(condition, [])
            if question not in found[condition]:
                found[condition].append(question)

        randoms = [f"random_{kind}" for kind in self.random]
        for location in [*(f"leam:{m}" for m in self.maps), *randoms, *(["sparse"] if self.sparse else [])]:
            add(Condition("optimised", location, b, e), "where")
        add(Condition("optimised", self.own, b, e), "what")
        for fill in self.fills:
            add(Condition(fill, self.own, b, e if fill == "noise" else 0.0), "what")
        if self.person:
            for location in [f"person:{self.maps[0]}", self.own, *randoms[:1]]:
                add(Condition("optimised", location, b, e), "person")
        for budget in sorted({b, *self.budgets}):
            for location in [self.own, *randoms[:1]]:
                add(Condition("optimised", location, budget, e), "budget")
        for epsilon in sorted({e, *self.epsilons}):
            add(Condition("optimised", self.own, b, epsilon), "epsilon")
        return {condition: tuple(questions) for condition, questions in found.items()}
