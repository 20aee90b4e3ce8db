"""The command line's help: plain text, every argument explained, each subcommand its own."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from support.cli import run_cli

from listener.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_argument_of_every_command_has_help() -> None:
    missing = []
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"listener detect", "listener replay merge",
                                         "listener evaluate", "listener train"}
    for parser in parsers:
        for action in parser._actions:
            if action.help is None or not str(action.help).strip():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{parser.prog} {c.dest}" for c in action._choices_actions
                            if not c.help]
    assert not missing, missing


def test_top_level_help_is_plain_text() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    assert "``" not in res.stdout and ":func:" not in res.stdout
    for cmd in ("run", "demo", "replay", "detect", "evaluate"):
        assert f"\n    {cmd} " in res.stdout, cmd


def test_replay_merge_has_its_own_help() -> None:
    merge = run_cli("replay", "merge", "--help")
    plain = run_cli("replay", "--help")
    assert merge.returncode == plain.returncode == 0
    assert merge.stdout.startswith("usage: listener replay merge")
    assert "OUT" in merge.stdout and "--from" not in merge.stdout
    assert "--from" in plain.stdout and "merge" in plain.stdout
    # No stray positionals: an unknown action is refused by argparse (exit 2).
    bad = run_cli("replay", "unmerge")
    assert bad.returncode == 2 and "invalid choice: 'unmerge'" in bad.stderr


def test_replay_merge_without_out_is_a_usage_error() -> None:
    res = run_cli("replay", "merge")
    assert res.returncode == 2 and "OUT" in res.stderr


def test_replay_merge_reaches_the_merge(tmp_path: Path) -> None:
    res = run_cli("replay", "merge", str(tmp_path))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{tmp_path}: no replay part" in res.stderr


def test_a_bad_log_level_or_device_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("station: {id: s1}\n")
    for args, flag in ((["--log-level", "verbose", "check-config", str(config)], "--log-level"),
                       (["run", "--config", str(config), "--device", "gpu"], "--device")):
        res = run_cli(*args)
        assert res.returncode == 2, res.stderr
        assert f"argument {flag}: invalid choice" in res.stderr
        assert "Traceback" not in res.stderr and "s.yaml" not in res.stderr
    res = run_cli("--log-level", "debug", "check-config", str(config))
    assert "invalid choice" not in res.stderr
