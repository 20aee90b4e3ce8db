"""Weights files listener writes are readable as any new file is: the systemd units run
the daemon as a dynamic user (deploy/systemd), which a 0600 file would lock out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch
from safetensors.torch import save_file

from listener.atomic import atomic_write
from listener.model.ensemble import write_ensemble
from listener.model.network import build_model


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _new_file_mode(folder: Path) -> int:
    probe = folder / "probe"
    probe.touch()
    return _mode(probe)


def test_a_writer_that_makes_private_files_gets_the_umasks_mode(tmp_path: Path) -> None:
    def private(p: Path) -> None:
        p.write_bytes(b"x")
        os.chmod(p, 0o600)

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "w.bin", private)
        assert _mode(tmp_path / "w.bin") == 0o644 == _new_file_mode(tmp_path)
    finally:
        os.umask(old)


def test_safetensors_written_by_listener_are_readable_by_others(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    old = os.umask(0o022)
    try:
        assert _mode(plain) & 0o044 == 0  # the premise: safetensors alone makes it private
        member = tmp_path / "m.safetensors"
        atomic_write(member, lambda p: save_file(
            {k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()},
            str(p)))
        out = write_ensemble([member, member], tmp_path / "ens.safetensors")
        assert _mode(member) == _mode(out.path) == 0o644
    finally:
        os.umask(old)
