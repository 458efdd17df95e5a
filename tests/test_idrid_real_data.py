"""IDRiD end to end on the real images in ../shared/data/IDRiD (skipped cleanly without them).

Proves the official layout, real JPEG and 1-bit TIFF decoding, and the full-size path: training
at a low working resolution, prediction written back at 4288×2848, pooled AUPR over every pixel.
"""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config
from eyegc.common.evaluation import evaluate_predictions
from eyegc.common.inference import predict_folder
from eyegc.common.registry import get_task
from eyegc.common.training import train
from sklearn.metrics import average_precision_score

IDRID = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDRiD"

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def idrid_root() -> Path:
    if not (IDRID / "A. Segmentation").is_dir():
        pytest.skip(f"real IDRiD data not found at {IDRID}")
    return IDRID


def test_train_predict_evaluate_full_size(idrid_root: Path, tmp_path: Path) -> None:
    plugin = get_task("idrid-lesions")
    cases = plugin.list_cases(idrid_root, "train")
    assert [c.case_id for c in cases][:4] == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]
    target = plugin.read_target(cases[0])
    assert target.shape == (4, 2848, 4288)
    # 1-bit palette TIFF masks: lesions are a small share of the image, never all of it.
    assert 0 < target[2].mean() < 0.05

    config = tiny_train_config(working_scale=1 / 16, patch_size=64, epochs=1, folds=2)
    run = train(plugin, idrid_root, tmp_path / "run", config)
    images = cases[0].image.parent
    out = tmp_path / "pred"
    predict_folder(plugin, [run], images, out, tta="none", device="cpu")
    probabilities = plugin.read_probabilities(out, [c.case_id for c in cases])
    assert probabilities[0].shape == (4, 2848, 4288) and probabilities[0].dtype == np.uint8

    result = evaluate_predictions(plugin, out, idrid_root, "train")
    assert result.cases == len(cases)
    # The pooled histogram AUPR equals scikit-learn on the same 8-bit scores (one lesion, all pixels).
    he = [c.key for c in plugin.classes].index("he")
    scores = np.concatenate([probabilities[i][he].ravel() for i in range(len(cases))])
    truth = np.concatenate([plugin.read_target(c)[he].ravel() for c in cases])
    assert result.per_class["he"]["aupr"] == pytest.approx(average_precision_score(truth, scores), abs=1e-9)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gib < 8, f"peak memory {peak_gib:.1f} GiB"
