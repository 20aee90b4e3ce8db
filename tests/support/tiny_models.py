"""Tiny real models saved to disk for tests: no download, random weights, seconds to build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from listener.model.network import build_model

PODS_LABELS = ("water", "resident", "transient", "humpback", "vessel", "jingle", "human")


def save_tiny_audio_classifier(folder: Path, labels: tuple[str, ...] = PODS_LABELS,
                               sampling_rate: int = 16000, seed: int = 0) -> Path:
    """A two-layer wav2vec2 audio classifier + its feature extractor, via save_pretrained."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    # A dict: the typed signature omits the keys PretrainedConfig takes as **kwargs.
    params: dict[str, Any] = dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)}, do_stable_layer_norm=False)
    cfg = Wav2Vec2Config(**params)
    torch.manual_seed(seed)
    Wav2Vec2ForSequenceClassification(cfg).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                             do_normalize=True, return_attention_mask=False
                             ).save_pretrained(folder)
    return folder


def save_resnet_snapshot(folder: Path, *, architecture: str = "resnet18", seed: int = 0,
                         config: dict | None = None) -> Path:
    """The ResNet in the hub layout (``model.*`` names) + a config.json, like the hub port."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sd = build_model(architecture).state_dict()
    ren = {"head.bn1.": "model.fc.1.", "head.fc1.": "model.fc.3.", "head.bn2.": "model.fc.5.",
           "head.fc2.": "model.fc.7."}
    hub = {}
    for k, v in sd.items():
        new = next((dst + k[len(src):] for src, dst in ren.items() if k.startswith(src)),
                   "model." + k)
        hub[new] = v.contiguous()
    save_file(hub, str(folder / "model.safetensors"))
    doc = config if config is not None else {"architecture": architecture}
    (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder
