"""The model id shown is the one the checkpoint (or its card) declares, unless the config
sets one; the bundled demo model is ``listener-demo-resnet18`` everywhere."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from listener.config import default_config, parse_config
from listener.demo.run import station_config
from listener.model.bundled import (
    BUNDLED_WEIGHTS,
    declared_model_id,
    with_default_weights,
    with_weights,
)
from listener.model.scorer import Scorer

DEMO_ID = "listener-demo-resnet18"


def _tensors(path: Path, metadata: dict[str, str] | None = None) -> Path:
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    return path


def test_the_bundled_model_declares_its_id_in_its_card() -> None:
    assert declared_model_id(BUNDLED_WEIGHTS) == DEMO_ID
    cfg, notice = with_default_weights(default_config())
    assert cfg.model.weights == BUNDLED_WEIGHTS and cfg.model.model_id == DEMO_ID
    assert notice is not None and "bundled demo model" in notice
    # What detect and evaluate put in their JSON: the scorer's info.
    assert Scorer(cfg.model).info["id"] == DEMO_ID
    # The demo's station (the status page and build info read cfg.model.model_id).
    demo, said = station_config(None, None)
    assert demo.model.model_id == DEMO_ID and said == notice


def test_metadata_then_card_then_the_config_default(tmp_path: Path) -> None:
    meta = _tensors(tmp_path / "a.safetensors", {"model_id": "from-metadata"})
    (tmp_path / "a.md").write_text("- Model id: `from-card`\n", encoding="utf-8")
    assert declared_model_id(meta) == "from-metadata"
    carded = _tensors(tmp_path / "b.safetensors")
    (tmp_path / "b.md").write_text("# card\n\n- Model id: `from-card`\n", encoding="utf-8")
    assert declared_model_id(carded) == "from-card"
    plain = _tensors(tmp_path / "c.safetensors", {"model_id": "bad id with spaces"})
    assert declared_model_id(plain) is None
    assert with_weights(default_config(), plain).model.model_id == "orcahello-srkw"
    broken = tmp_path / "d.safetensors"
    broken.write_bytes(b"\xff" * 64)  # the loader reports it; the probe declares nothing
    assert declared_model_id(broken) is None


def test_a_config_model_id_wins(tmp_path: Path) -> None:
    weights = _tensors(tmp_path / "a.safetensors", {"model_id": "declared"})
    cfg = parse_config(f"station: {{id: s}}\nmodel: {{weights: {weights}, model_id: mine}}\n")
    assert with_weights(cfg).model.model_id == "mine"
    cfg = parse_config(f"station: {{id: s}}\nmodel: {{weights: {weights}}}\n")
    assert with_weights(cfg).model.model_id == "declared"
    # A models: entry is named by its id; the bundled model fills a primary without weights.
    cfg = parse_config("station: {id: s}\nmodels:\n  - {id: p}\n"
                       f"  - {{id: q, role: shadow, weights: {weights}}}\n")
    filled, notice = with_default_weights(cfg)
    assert notice and filled.model.model_id == "p"
    assert filled.models is not None and filled.models[0].weights == BUNDLED_WEIGHTS
    assert filled.models[1].weights == weights
