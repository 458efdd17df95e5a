"""The allowed range of every numeric option, in one table that the command line and the Python API share.

Each rule is checked where a value is parsed: as an argparse ``type`` (a bad value stops the
command at parse time, exit 2) and on the values of the Python API (:class:`TrainConfig`,
:func:`write_sample_data`, ...), so both say the same thing, naming the option and its range::

    --lr must be a number > 0 and finite, got 0

``None`` means "the default" and is never checked; 0 is a value like any other (allowed only
where the rule allows it, e.g. ``--patch-size 0`` = whole image).
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eyegc.common.errors import EyegcError

__all__ = [
    "DEMO_OPTIONS",
    "GC_TRY_OPTIONS",
    "REPORT_OPTIONS",
    "SAMPLE_DATA_OPTIONS",
    "SEED",
    "TRAIN_OPTIONS",
    "FoldRule",
    "NumberListRule",
    "NumberRule",
    "Rule",
    "check_options",
]


def _number(value: float) -> str:
    """A bound as the user would type it: ``1``, ``0.5``, ``4294967295``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: object) -> str:
    """An offending Python value: numbers as Python writes them (``2.0`` for a float), anything else quoted."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return str(int(value)) if isinstance(value, numbers.Integral) else str(float(value))
    return repr(value)


def _typed(text: str) -> str:
    """An offending command-line value: as typed when it is a number, else quoted."""
    try:
        float(text)
    except ValueError:
        return repr(text)
    return text.strip()


class _ArgparseType:
    """``argparse_type`` for rules with ``parse``: argparse shows the message after ``argument --x:``."""

    option: str

    def parse(self, text: str) -> Any:  # pragma: no cover - every rule defines it
        raise NotImplementedError

    def argparse_type(self) -> Callable[[str], Any]:
        """A callable for ``add_argument(type=...)`` that raises :class:`argparse.ArgumentTypeError`."""

        def parse(text: str) -> Any:
            try:
                return self.parse(text)
            except EyegcError as exc:
                # argparse already names the option ("argument --lr: ..."): drop it from the message.
                raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{self.option} ")) from None

        return parse


@dataclass(frozen=True)
class NumberRule(_ArgparseType):
    """One number: its kind (``int`` or ``float``) and its bounds; floats must also be finite.

    Args:
        option: the command-line spelling, used in every message (``"--lr"``).
        kind: ``int`` (whole numbers only) or ``float``.
        minimum: the lower bound, or ``None``.
        maximum: the upper bound, or ``None``.
        min_inclusive: whether ``minimum`` itself is allowed.
        max_inclusive: whether ``maximum`` itself is allowed.
        note: what a special value means, shown with the range (``"0 = whole image"``).
    """

    option: str
    kind: type = int
    minimum: float | None = None
    maximum: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    note: str = ""

    def bounds(self) -> str:
        """The bounds in words: ``at least 1``, ``from 0 to 9``, ``> 0 and finite``, ``in (0, 1]``."""
        low, high = self.minimum, self.maximum
        if self.kind is int:  # whole numbers: an exclusive bound is the next whole number, inclusive
            low = None if low is None else (low if self.min_inclusive else math.floor(low) + 1)
            high = None if high is None else (high if self.max_inclusive else math.ceil(high) - 1)
            if low is not None and high is not None:
                return f"from {_number(low)} to {_number(high)}"
            return f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
        if low is not None and high is not None:
            left, right = "[" if self.min_inclusive else "(", "]" if self.max_inclusive else ")"
            return f"in {left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f"{'>=' if self.min_inclusive else '>'} {_number(low)} and finite"
        if high is not None:
            return f"{'<=' if self.max_inclusive else '<'} {_number(high)} and finite"
        return "finite"

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``a whole number of at least 1``."""
        bounds = self.bounds()
        noun = "a whole number" if self.kind is int else "a number"
        joined = f"{noun} of {bounds}" if bounds.startswith("at ") else f"{noun} {bounds}"
        return f"{joined} ({self.note})" if self.note else joined

    def _fail(self, shown: str) -> EyegcError:
        return EyegcError(f"{self.option} must be {self.allowed()}, got {shown}")

    def in_range(self, value: float) -> bool:
        """Whether a number of the right kind lies inside the bounds (and, for floats, is finite)."""
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value < self.minimum or (value == self.minimum and not self.min_inclusive)):
            return False
        return self.maximum is None or (value < self.maximum or (value == self.maximum and self.max_inclusive))

    def check(self, value: object) -> int | float:
        """``value`` as the rule's kind.

        Raises:
            EyegcError: not a number of that kind (a bool, a string, ``2.0`` for a whole number), or
                out of range; the message names the option and the range.
        """
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._fail(_shown(value))
        if self.kind is int and not isinstance(value, numbers.Integral):
            raise self._fail(_shown(value))
        number = int(value) if self.kind is int else float(value)
        if not self.in_range(number):
            raise self._fail(_shown(value))
        return number

    def parse(self, text: str) -> int | float:
        """A command-line value, checked like :meth:`check`."""
        try:
            value: int | float = int(text) if self.kind is int else float(text)
        except ValueError:
            raise self._fail(_typed(text)) from None
        if not self.in_range(value):
            raise self._fail(_typed(text))
        return value


@dataclass(frozen=True)
class NumberListRule(_ArgparseType):
    """Comma-separated numbers on the command line, a sequence in the API; each obeys ``item``.

    Args:
        option: the command-line spelling.
        item: the rule of each value (its bounds and kind).
        count: the exact number of values, or ``None`` for any number (at least one).
        not_all_zero: refuse values that are all 0 (class weights).
        names: what the values are, shown in the message (``"H,W"``).
    """

    option: str
    item: NumberRule
    count: int | None = None
    not_all_zero: bool = False
    names: str = ""

    def allowed(self) -> str:
        """The allowed values in words."""
        noun = "whole numbers" if self.item.kind is int else "numbers"
        how_many = {None: "", 1: "one ", 2: "two ", 3: "three "}.get(self.count, f"{self.count} ")
        text = f"{how_many}comma-separated {noun}" + (f" {self.names}" if self.names else "")
        text += f", each {self.item.bounds()}"
        return text + (", not all 0" if self.not_all_zero else "")

    def _fail(self, shown: str) -> EyegcError:
        return EyegcError(f"{self.option} must be {self.allowed()}, got {shown}")

    def check(self, value: object) -> list[int | float]:
        """``value`` (a sequence of numbers) as a list of the item's kind.

        Raises:
            EyegcError: not a sequence, the wrong count, a value out of range, or all 0 where refused.
        """
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
            raise self._fail(_shown(value))
        items = list(value)  # type: ignore[call-overload]
        shown = "[" + ", ".join(_shown(v) for v in items) + "]"
        if not items or (self.count is not None and len(items) != self.count):
            raise self._fail(shown)
        try:
            numbers_ = [self.item.check(v) for v in items]
        except EyegcError:
            raise self._fail(shown) from None
        if self.not_all_zero and not any(numbers_):
            raise self._fail(shown)
        return numbers_

    def parse(self, text: str) -> list[int | float]:
        """A command-line value (``"1,0.5,2"``), checked like :meth:`check`."""
        try:
            values = [self.item.parse(part.strip()) for part in text.split(",")]
        except EyegcError:
            raise self._fail(repr(text)) from None
        if (self.count is not None and len(values) != self.count) or (self.not_all_zero and not any(values)):
            raise self._fail(repr(text))
        return values


@dataclass(frozen=True)
class FoldRule(_ArgparseType):
    """``--fold``: ``all`` or the index of one fold (whether the run has that fold is checked later)."""

    option: str = "--fold"

    def allowed(self) -> str:
        """The allowed values in words."""
        return "'all' or a fold index (a whole number of at least 0)"

    def check(self, value: object) -> str:
        """``value`` as ``"all"`` or a fold index in text (``0`` and ``"0"`` give ``"0"``)."""
        if value == "all":
            return "all"
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0:
            return str(int(value))
        if isinstance(value, str) and value.isdigit():
            return str(int(value))
        raise EyegcError(f"{self.option} must be {self.allowed()}, got {_shown(value)}")

    def parse(self, text: str) -> str:
        """A command-line value, checked like :meth:`check`."""
        return self.check(text.strip())


#: what ``check`` and ``argparse_type`` are offered by.
Rule = NumberRule | NumberListRule | FoldRule

#: seeds go to numpy and scikit-learn, which take 0 .. 2**32 - 1.
SEED = NumberRule("--seed", int, 0, 2**32 - 1)

#: ``TrainConfig`` field (``extra["input_size"]``: ``input_size``) -> rule; ``eyegc train`` options.
TRAIN_OPTIONS: dict[str, Rule] = {
    "fold": FoldRule(),
    "folds": NumberRule("--folds", int, 2),  # each fold validates on held-out cases
    "epochs": NumberRule("--epochs", int, 1),
    "batch_size": NumberRule("--batch-size", int, 1),
    "patch_size": NumberRule("--patch-size", int, 0, note="0 = whole image"),
    # Above 4x a fundus image or B-scan only costs memory; 0 or less has no image at all.
    "working_scale": NumberRule("--working-scale", float, 0, 4, min_inclusive=False),
    "class_weights": NumberListRule("--class-weights", NumberRule("--class-weights", float, 0), not_all_zero=True),
    "learning_rate": NumberRule("--lr", float, 0, min_inclusive=False),
    "rmi_weight": NumberRule("--rmi-weight", float, 0, note="0 = no RMI"),
    "super_resolution": NumberRule("--super-resolution", int, 2, 4),
    "sr_weights": NumberListRule("--sr-weights", NumberRule("--sr-weights", float, 0), count=2, names="SR,FA"),
    "patches_per_image": NumberRule("--patches-per-image", int, 1),
    "seed": SEED,
    # scikit-image's clip limit is a fraction of the histogram.
    "clahe_clip": NumberRule("--clahe-clip", float, 0, 1, min_inclusive=False),
    "validate_every": NumberRule("--validate-every", int, 1),
    "jobs": NumberRule("--jobs", int, 1),
    "input_size": NumberListRule("--input-size", NumberRule("--input-size", int, 1), count=2, names="H,W"),
}

#: training augmentation pipelines by name (``--augmentation``; eyegc.common.augmentation), the default first.
AUGMENTATIONS: tuple[str, ...] = ("batched", "per-sample")

#: torchrun's options as ``eyegc train`` takes them (``LaunchOptions`` fields).
LAUNCH_OPTIONS: dict[str, Rule] = {
    "nproc_per_node": NumberRule("--nproc-per-node", int, 1),
    "nnodes": NumberRule("--nnodes", int, 1),
    "node_rank": NumberRule("--node-rank", int, 0),
    "master_port": NumberRule("--master-port", int, 1, 65535),
}

#: ``write_sample_data`` argument -> rule; ``eyegc sample-data`` options.
SAMPLE_DATA_OPTIONS: dict[str, Rule] = {
    "cases": NumberRule("--cases", int, 1),
    "test_cases": NumberRule("--test-cases", int, 0),
    "seed": SEED,
}

#: ``run_demo`` argument -> rule; ``eyegc demo`` options. The demo trains 2 folds and predicts the test cases.
DEMO_OPTIONS: dict[str, Rule] = {
    "cases": NumberRule("--cases", int, 2),
    "test_cases": NumberRule("--test-cases", int, 1),
    "epochs": TRAIN_OPTIONS["epochs"],
}

#: ``eyegc gc try`` options: seconds to wait for the platform's job and between status reads.
GC_TRY_OPTIONS: dict[str, Rule] = {
    "timeout": NumberRule("--timeout", float, 0, min_inclusive=False),
    "poll": NumberRule("--poll", float, 0, min_inclusive=False),
}

#: ``eyegc report`` and ``eyegc serve`` options.
REPORT_OPTIONS: dict[str, Rule] = {
    "cases": NumberRule("--cases", int, 0, 50, note="worst and best cases drawn, each"),
    "port": NumberRule("--port", int, 1, 65535),
    "max_upload_mb": NumberRule("--max-upload-mb", float, 0, 2048, min_inclusive=False),
}


def check_options(rules: Mapping[str, Rule], values: Mapping[str, Any]) -> None:
    """Check every value that has a rule; ``None`` (the default) and names without a rule are skipped.

    Raises:
        EyegcError: the first bad value, in the order of ``rules``, naming its option and range.
    """
    for name, rule in rules.items():
        if values.get(name) is not None:
            rule.check(values[name])
