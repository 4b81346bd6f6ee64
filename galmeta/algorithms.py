"""The MAML family as one table of traits: what each algorithm differentiates, adapts and learns.

Every place that behaves differently per algorithm reads these traits (never the algorithm's name), so
two places cannot disagree about, say, whether Meta-SGD is second order.

Examples
--------
>>> ALGORITHMS["metasgd"].second_order, ALGORITHMS["metasgd"].learns_rates
(True, 'per-parameter')
>>> [name for name, traits in ALGORITHMS.items() if traits.adapts == "head"]
['anil']
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AlgorithmTraits", "ALGORITHMS", "ALGORITHM_NAMES", "traits_of"]


@dataclass(frozen=True)
class AlgorithmTraits:
    """What sets one member of the family apart.

    Attributes
    ----------
    name : str
    second_order : bool
        Meta-training differentiates through the inner gradients (``create_graph=True``).
    adapts : {"all", "head"}
        Which parameters the inner loop changes (ANIL: the output layer only).
    learns_rates : {None, "per-parameter"}
        Meta-SGD learns one inner learning rate per weight.
    query_gradient : bool
        The meta-gradient is the gradient of the query loss; False for Reptile, which moves towards the
        adapted weights instead.
    per_step_rates_allowed : bool
        MAML++'s learned per-layer, per-step rates can be added (not to Meta-SGD, which has its own rates,
        nor to Reptile).
    reference : str
        The paper.
    """

    name: str
    second_order: bool
    adapts: str = "all"
    learns_rates: str | None = None
    query_gradient: bool = True
    per_step_rates_allowed: bool = True
    reference: str = ""


ALGORITHMS = {
    "maml": AlgorithmTraits("maml", second_order=True, reference="Finn, Abbeel & Levine 2017"),
    "fomaml": AlgorithmTraits("fomaml", second_order=False, reference="Finn, Abbeel & Levine 2017 (first order)"),
    "metasgd": AlgorithmTraits("metasgd", second_order=True, learns_rates="per-parameter",
                               per_step_rates_allowed=False, reference="Li et al. 2017"),
    "anil": AlgorithmTraits("anil", second_order=True, adapts="head", reference="Raghu et al. 2020"),
    "reptile": AlgorithmTraits("reptile", second_order=False, query_gradient=False, per_step_rates_allowed=False,
                               reference="Nichol, Achiam & Schulman 2018"),
}

#: The names, in the order the course introduces them.
ALGORITHM_NAMES = tuple(ALGORITHMS)


def traits_of(algorithm: str) -> AlgorithmTraits:
    """The traits of ``algorithm``, or ValueError listing the known ones."""
    try:
        return ALGORITHMS[algorithm]
    except (KeyError, TypeError):
        raise ValueError(f"algorithm={algorithm!r} is not one of {ALGORITHM_NAMES}") from None
