"""A dataset an interrupted synth left (its manifest says ``"complete": false``) is refused
by every command that reads one, before any work."""
import json

import pytest

from training.cli import main
from training.synth import writer


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A whole tiny synthetic set whose manifest says what a killed synth's says."""
    root = tmp_path_factory.mktemp("partial") / "ds"
    writer.generate(root, chips=4, weak=4, external=4)
    manifest = root / writer.MANIFEST
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "complete": False}))
    return root


def refused(capsys, root) -> None:
    err = capsys.readouterr().err
    assert err == (f"error: {root}: a partial synthetic dataset (an interrupted synth); "
                   f"rerun synth with --overwrite to replace it\n")


@pytest.mark.parametrize("given", ["root", "v1.1"])
def test_train_refuses_a_partial_dataset(partial, tmp_path, capsys, given):
    """train took it, and its data line said 'seed None' while it read the chips there."""
    data = partial if given == "root" else partial / "v1.1"
    assert main(["train", "weak", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--preset", "cpu", "--set", "steps=2", "--no-progress"]) == 1
    refused(capsys, partial)
    assert not (tmp_path / "run").exists()


def test_reproduce_refuses_a_partial_dataset(partial, tmp_path, capsys):
    assert main(["reproduce", "--data", str(partial), "--preset", "cpu", "--seeds", "1",
                 "--methods", "hand_compact", "--set", "steps=2", "--out", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results"), "--no-progress"]) == 1
    refused(capsys, partial)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_evaluate_refuses_a_partial_dataset(partial, tmp_path, capsys):
    """evaluate scored the chips an interrupted synth had written, with no word."""
    assert main(["evaluate", "--data", str(partial), "--split", "weak", "--otsu",
                 "--json", str(tmp_path / "scores.json")]) == 1
    refused(capsys, partial)
    assert not (tmp_path / "scores.json").exists()


def test_figure_refuses_a_partial_dataset(partial, tmp_path, capsys):
    assert main(["figure", "--data", str(partial), "--split", "test",
                 "--out", str(tmp_path / "chips.png")]) == 1
    refused(capsys, partial)
    assert not (tmp_path / "chips.png").exists()


def test_reproduce_says_nothing_of_rows_left_out_of_data_it_refuses(partial, tmp_path, capsys):
    """Before the refusal it printed which rows the data left out of the table: moot."""
    import shutil
    copy = tmp_path / "ds"
    shutil.copytree(partial, copy)
    shutil.rmtree(next(copy.glob("v1.1/data/flood_events/WeaklyLabeled")))
    assert main(["reproduce", "--data", str(copy), "--preset", "cpu", "--seeds", "1",
                 "--set", "steps=2", "--out", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results"), "--no-progress"]) == 1
    said = capsys.readouterr()
    assert "a partial synthetic dataset" in said.err and "left out of the table" not in said.out
