"""A bundle written by this version of eyegc (format ``eyegc-bundle/1``), checked into the repository,
must keep loading and predicting exactly: the fixture guards every later change to the bundle's
schema or loader (a newer format must upgrade it, not refuse it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from eyegc.common.bundle import BUNDLE_FORMAT, load_bundle, read_config
from eyegc.common.inference import Predictor
from eyegc.common.registry import get_task

FIXTURE = Path(__file__).parent / "fixtures" / "bundle-format-1-drac22"


def test_a_format_1_bundle_loads_and_predicts_as_when_it_was_written() -> None:
    plugin = get_task("drac22-task1")
    bundle = load_bundle(FIXTURE, task=plugin.name)  # checksums verified
    assert read_config(FIXTURE)["format"] == "eyegc-bundle/1" and BUNDLE_FORMAT == "eyegc-bundle/1"
    assert [fold.fold for fold in bundle.folds] == [0, 1]
    postprocessing = bundle.config["postprocessing"]
    assert postprocessing["thresholds"] == {"irma": 0.55, "npa": 0.55, "nv": 0.55} and postprocessing["tuned"] is True
    image = np.random.default_rng(0).integers(0, 256, (1, 1024, 1024), dtype=np.uint8)
    masks, probabilities = Predictor(plugin, [bundle], "flip", "cpu").predict(image)
    assert masks.shape == probabilities.shape == (3, 1024, 1024)
    # Recorded when the fixture was written (torch 2.13.0 CPU, flip TTA, the bundle's tuned thresholds).
    assert [int(m.sum()) for m in masks] == [0, 105240, 0]
    digest = hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest()
    assert digest == "55f4c467de3d84c62f6ef871b5d88c929609454afeae34960ca51d99cf68d4ef"
