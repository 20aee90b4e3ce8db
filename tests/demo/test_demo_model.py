"""The bundled demo model: present, documented, loadable, and what ``listener demo`` picks."""

from __future__ import annotations

import torch

from listener.demo.run import DEMO_WEIGHTS
from listener.model.checkpoints import load_model


def test_demo_model_loads_and_has_a_card() -> None:
    assert DEMO_WEIGHTS.is_file(), "run scripts/train_demo_model.sh"
    model, info = load_model(DEMO_WEIGHTS)
    assert info.architecture == "resnet18" and info.layout == "listener"
    assert DEMO_WEIGHTS.stat().st_size < 30 * 2**20  # float16: about 22 MB
    with torch.inference_mode():
        assert torch.isfinite(model(torch.zeros(1, 1, 256, 312))).all()
    card = DEMO_WEIGHTS.with_suffix(".md").read_text(encoding="utf-8")
    for needed in ("shared/data/train", "Held-out check", "precision", "L pod demo recording",
                   "not the OrcaHello production model",
                   # the recipe's card: sources, epoch 0 (the start), per-source figures,
                   # the site audio's screening, time and CPU
                   "Held-out windows per source", "| 0 | ", "call:riptide",
                   "Site audio", "min on cpu", "clip ROC-AUC"):
        assert needed in card, needed
