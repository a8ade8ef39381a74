"""CLI: eval JSON, models listing, user errors as one line with exit code 2, and where commands and
their choices come from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.backends.artifacts import PRECISIONS
from edgeseg.backends.registry import backend_names
from edgeseg.cli import main
from edgeseg.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    result = train(TrainConfig(model="fcn8s_mobilenet_v2", data="synthetic:48x64", width=0.35, batch_size=4,
                               epochs=1, max_train_samples=8, max_val_samples=4, workers=0, out=out),
                   log=lambda s: None)
    return result.best_path


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_eval_json_has_the_documented_keys(tiny_checkpoint: Path) -> None:
    res = _run("eval", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:48x64", "--split", "val", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert {"miou", "pixel_acc", "per_class_iou"} <= set(summary)
    assert 0 <= summary["miou"] <= 100 and 0 <= summary["pixel_acc"] <= 100


def test_models_lists_params_and_macs() -> None:
    res = _run("models", "--filter", "deeplabv3plus_mobilenet_v2", "--input-size", "64x64")
    assert res.exit_code == 0, res.output
    assert "deeplabv3plus_mobilenet_v2" in res.output and "GMACs" in res.output


@pytest.mark.parametrize("args, message", [
    (["eval", "--checkpoint", "missing.pt", "--data", "synthetic"], "does not exist"),
    (["eval", "--model", "fcn_resnet50", "--data", "synthetic"], "expected --checkpoint"),
    (["train", "--model", "deeplabv9_resnet50", "--data", "synthetic", "--out", "x"], "unknown model"),
    (["train", "--model", "fcn8s_resnet50", "--data", "nosuchkind:/x", "--out", "x"], "unknown dataset kind"),
])
def test_user_errors_are_one_line_with_exit_code_2(args: list[str], message: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _run(*args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_truncated_checkpoint_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:2048])
    res = _run("eval", "--checkpoint", str(cut), "--data", "synthetic:48x64")
    assert res.exit_code == 2 and "truncated" in res.output


def test_checkpoint_for_other_class_count_is_refused(tiny_checkpoint: Path, camvid_root: Path) -> None:
    res = _run("eval", "--checkpoint", str(tiny_checkpoint), "--data", f"camvid:{camvid_root}")
    assert res.exit_code == 2 and "predicts" in res.output and "classes" in res.output


def test_a_command_lives_in_the_module_named_after_it() -> None:
    for name, command in main.commands.items():
        assert command.callback.__module__ == f"edgeseg.cli.{name.replace('-', '_')}", name


def _choices(option: str) -> dict[str, tuple[str, ...]]:
    """{command: choices} of every command with ``option`` as a click.Choice."""
    import click

    return {name: tuple(p.type.choices) for name, command in main.commands.items() for p in command.params
            if option in getattr(p, "opts", ()) and isinstance(p.type, click.Choice)}


def test_precision_and_backend_choices_come_from_the_one_tuple() -> None:
    precisions = _choices("--precision")
    assert precisions["build"] == PRECISIONS
    assert set(precisions["quantize"]) == set(PRECISIONS) - {"fp32"}
    for name, choices in _choices("--backend").items():
        assert set(choices) - {"auto"} <= set(backend_names()), name
