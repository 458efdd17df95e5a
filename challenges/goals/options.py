"""The GOALS thickness model's option rules, light to import: the CLI builds its parser from them
without loading the model's code (scikit-learn, torch)."""

from __future__ import annotations

from eyegc.common.options import SEED, NumberRule, Rule

__all__ = ["THICKNESS_OPTIONS"]

#: ``fit_thickness_model`` argument -> rule; ``eyegc thickness-model`` options.
THICKNESS_OPTIONS: dict[str, Rule] = {
    "sectors": NumberRule("--sectors", int, 1),
    "C": NumberRule("--C", float, 0, min_inclusive=False),  # the inverse regularisation strength
    "folds": NumberRule("--folds", int, 2),
    "seed": SEED,
}
