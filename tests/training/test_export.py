"""Export to ONNX: parity with torch, the card, the backend's acceptance, refusals."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.model import OnnxModel
from training.checkpoint import load_checkpoint, load_model, save_checkpoint
from training.export import ExportError, _onnx_export, parity
from training.train import train

from .test_train import tiny_data, tiny_run

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(tiny_run("hand", steps=2, eval_every=2),
          tiny_data(), root / "hand", progress=False)
    train(tiny_run("teacher", steps=2, eval_every=2), tiny_data(), root / "teacher",
          progress=False)
    return root


def test_export_writes_one_file_that_matches_torch_and_the_backend_runs(runs, tmp_path):
    out = tmp_path / "model.onnx"
    proc = cli("training", "export", str(runs / "hand" / "best.pt"), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the report alone
    print(f"export parity: max abs difference {report['max_abs_diff']:.3g}")
    assert report["max_abs_diff"] < 1e-4
    assert report["backend_predict"]["event"] == "result"
    proc = cli("training", "export", str(runs / "hand" / "best.pt"), "--out", str(out))
    assert proc.returncode == 1 and "exists; pass --overwrite" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no .data file

    card = json.loads(cli("backend", "card", str(out), "--json").stdout)
    # Garg et al., Appendix A: VV clipped to [-20, 0] dB, VH to [-30, 0], scaled to [0, 1]
    assert card["inputs"]["bands"] == [
        {"name": "VV", "units": "dB", "clip": [-20.0, 0.0], "offset": -20.0, "scale": 20.0},
        {"name": "VH", "units": "dB", "clip": [-30.0, 0.0], "offset": -30.0, "scale": 30.0}]
    assert card["name"] == "sarflood-hand" and card["pixel_size_m"] == 10.0
    assert card["tiling"] == {"tile_size": 512, "margin": 64, "size_multiple": 16}

    # independent parity: the backend's normalisation of dB input + ONNX Runtime vs torch
    model, doc = load_model(runs / "hand" / "best.pt")
    onnx_model = OnnxModel(str(out), device="cpu")
    assert onnx_model.card.metrics["iou_valid"] == round(doc["best"]["iou_valid"], 4)
    assert onnx_model.card.training_data == ("in-memory test chips; learnt from the train "
                                             "split's hand labels")
    rng = np.random.default_rng(0)
    db = np.stack([rng.uniform(-25, 5, (1, 96, 160)), rng.uniform(-35, 5, (1, 96, 160))],
                  axis=1).astype(np.float32)
    got = onnx_model.infer(onnx_model.normalize(db)[0])
    x = torch.from_numpy(np.stack([(np.clip(db[:, 0], -20, 0) + 20) / 20,
                                   (np.clip(db[:, 1], -30, 0) + 30) / 30], axis=1))
    with torch.no_grad():
        expect = torch.softmax(model(x), dim=1)[:, 1].numpy()
    assert np.abs(got - expect).max() < 1e-4


def test_export_to_a_relative_path_from_another_folder(runs, tmp_path):
    """The backend's checks run from the repository: a relative --out (the temporary file
    beside it) was looked for there, and the export failed after all its work."""
    (tmp_path / "models").mkdir()
    proc = subprocess.run([sys.executable, "-m", "training", "export",
                           str(runs / "hand" / "best.pt"), "--out", "models/hand.onnx"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["hand.onnx"]


def test_teacher_is_refused_and_nothing_is_written(runs, tmp_path):
    out = tmp_path / "teacher.onnx"
    proc = cli("training", "export", str(runs / "teacher" / "best.pt"), "--out", str(out))
    assert proc.returncode == 1
    assert "takes 6 input channels" in proc.stderr and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_architecture_is_refused(runs, tmp_path):
    doc = load_checkpoint(runs / "hand" / "best.pt")
    doc.pop("format")
    doc["model_spec"] = {**doc["model_spec"], "arch": "deeplabv3plus_xception65"}
    save_checkpoint(tmp_path / "other.pt", doc)
    proc = cli("training", "export", str(tmp_path / "other.pt"), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1
    assert "weights are of another architecture than DeepLabV3Plus" in proc.stderr


def test_a_spec_too_big_for_its_weights_is_refused_before_the_model_is_built(runs, tmp_path):
    """A checkpoint is a file from anywhere: its few-byte model_spec asked for a DeepLab of
    width 4 (650 M parameters, 2.6 GB), built in full before its weights were found not
    to fit. The export's peak memory is measured in a fresh Python, whose children start
    without the tests' own high-water mark."""
    doc = load_checkpoint(runs / "hand" / "best.pt")
    doc.pop("format")
    doc["model_spec"] = {"arch": "deeplabv3plus_xception65", "in_channels": 2, "width": 4.0}
    save_checkpoint(tmp_path / "huge.pt", doc)
    measure = ("import json, resource, subprocess, sys\n"
               "done = subprocess.run([sys.executable, '-m', 'training', *sys.argv[1:]],\n"
               "                      capture_output=True, text=True)\n"
               "print(json.dumps([done.returncode, done.stderr,\n"
               "                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n")
    out = subprocess.run([sys.executable, "-c", measure, "export", str(tmp_path / "huge.pt"),
                          "--out", str(tmp_path / "m.onnx")], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    rc, stderr, peak_kb = json.loads(out)
    assert rc == 1 and stderr.count("\n") == 1, stderr
    assert "weights are of another architecture than DeepLabV3Plus" in stderr
    assert peak_kb / 1024 < 1500, f"peak {peak_kb / 1024:.0f} MB"
    assert not (tmp_path / "m.onnx").exists()


def test_a_network_that_amplifies_float32_rounding_fails_parity_and_says_so(tmp_path):
    """Two steps of DeepLab with zero_init_residual=false: ONNX and torch differ by up to
    1.0 here (1e-2 on the cpu preset), each as far from torch in float64, the exported
    graph being right; the export said only "ONNX and torch differ by ...", which reads
    as an export fault."""
    train(tiny_run("hand", steps=2, eval_every=2, arch="deeplabv3plus_xception65",
                   width=0.125, zero_init_residual=False), tiny_data(), tmp_path / "run",
          progress=False)
    out = tmp_path / "m.onnx"
    proc = cli("training", "export", str(tmp_path / "run" / "best.pt"), "--out", str(out))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "ONNX and torch differ by" in proc.stderr and "parity input (torch" in proc.stderr
    assert "against torch in float64, ONNX is off by" in proc.stderr
    assert "the network itself amplifies float32 rounding" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_parity_names_a_graph_that_computes_something_else(runs, tmp_path):
    model, _ = load_model(runs / "hand" / "best.pt")
    path = tmp_path / "m.onnx"
    _onnx_export(model, path)
    assert parity(model, path) < 1e-4
    with torch.no_grad():
        model.classifier.bias[1] += 1.0  # torch now computes another P(water) than the file
    with pytest.raises(ExportError) as exc:
        parity(model, path)
    assert "torch is close to exact, so the exported graph computes something else" in str(
        exc.value)


def test_parity_refuses_nan_which_compares_below_any_tolerance(runs, tmp_path):
    model, _ = load_model(runs / "hand" / "best.pt")
    with torch.no_grad():
        model.classifier.bias.fill_(float("inf"))  # the logit difference is inf - inf
    path = tmp_path / "m.onnx"
    _onnx_export(model, path)
    with pytest.raises(ExportError, match=r"P\(water\) is NaN in torch and ONNX Runtime"):
        parity(model, path)


@pytest.mark.parametrize("content,msg", [
    (b"not a checkpoint", "not a readable PyTorch checkpoint"),
    # text files broke the unpickler with a KeyError or an IndexError traceback
    (b"hello\n", "not a readable PyTorch checkpoint (KeyError while unpickling)"),
    (b"a", "not a readable PyTorch checkpoint (IndexError while unpickling)"),
    (None, "not a sarflood training checkpoint"),
])
def test_foreign_files_are_refused(tmp_path, content, msg):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    proc = cli("training", "export", str(path), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1 and msg in proc.stderr
    assert proc.stderr.count("\n") == 1 and "weights_only=False" not in proc.stderr


def test_last_state_and_unwritable_outputs_are_refused_before_any_work(runs, tmp_path):
    (tmp_path / "afile").write_text("x")
    for checkpoint, out, msg in (
            ("last.pt", tmp_path / "m.onnx", "is a run's last state, not the checkpoint chosen"),
            ("best.pt", tmp_path, "is a folder, not a file"),
            ("best.pt", tmp_path / "afile" / "m.onnx", "afile is a file, not a folder"),
            ("best.pt", Path("/proc/m.onnx"), "cannot write in /proc")):
        proc = cli("training", "export", str(runs / "hand" / checkpoint), "--out", str(out),
                   "--overwrite")
        assert proc.returncode == 1 and msg in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_out_without_onnx_suffix_and_a_version_not_semver_are_refused(runs, tmp_path):
    for extra, msg in ((["--out", str(tmp_path / "model.tif")], "must end in .onnx"),
                       (["--out", str(tmp_path / "m.onnx"), "--version", "not a version"],
                        "--version 'not a version': give MAJOR.MINOR.PATCH")):
        proc = cli("training", "export", str(runs / "hand" / "best.pt"), *extra)
        assert proc.returncode == 1 and msg in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_folder_as_out_is_named_at_once(runs, tmp_path):
    """It said "exists; pass --overwrite", and only then "is a folder, not a file"."""
    proc = cli("training", "export", str(runs / "hand" / "best.pt"), "--out", str(tmp_path))
    assert proc.returncode == 1 and f"{tmp_path}: is a folder, not a file" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_an_unfinished_run_is_exported_with_a_warning_and_says_so_in_its_card(runs, tmp_path):
    """An export during training (or of a killed run) gave a card no different from a
    finished run's."""
    run = tmp_path / "run"
    shutil.copytree(runs / "hand", run)
    (run / "summary.json").unlink()   # as a run still training, or killed
    proc = cli("training", "export", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx"),
               "--json")
    assert proc.returncode == 0, proc.stderr
    assert "its run is unfinished (no summary.json; stopped at step 2 of 2)" in proc.stderr
    assert json.loads(proc.stdout)["unfinished_at_step"] == 2
    notes = OnnxModel(str(tmp_path / "m.onnx"), device="cpu").card.notes
    assert notes.endswith("from an UNFINISHED run (stopped at step 2 of 2).")

    # a grid point reproduce recorded as diverged: its best.pt is from before the divergence
    (run / "summary.json").write_text(json.dumps({"diverged": "the loss is nan at step 3"}))
    proc = cli("training", "export", str(run / "best.pt"), "--out", str(tmp_path / "d.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "its run is unfinished (its summary.json says it diverged; stopped at step 2" in proc.stderr
    assert "UNFINISHED" in OnnxModel(str(tmp_path / "d.onnx"), device="cpu").card.notes

    # a run stopped before its first validation has no best.pt yet: said so, not "not found"
    (run / "best.pt").unlink()
    proc = cli("training", "export", str(run / "best.pt"), "--out", str(tmp_path / "e.onnx"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "best.pt: not written yet: a run writes best.pt at its first validation" in proc.stderr

    alone = tmp_path / "alone"   # a best.pt copied away from its run folder: nothing known
    alone.mkdir()
    shutil.copy(runs / "hand" / "best.pt", alone)
    proc = cli("training", "export", str(alone / "best.pt"), "--out", str(alone / "m.onnx"))
    assert proc.returncode == 0 and "unfinished" not in proc.stderr, proc.stderr
    assert "UNFINISHED" not in OnnxModel(str(alone / "m.onnx"), device="cpu").card.notes


def test_a_students_card_names_its_teachers_data_and_the_external_set(runs, tmp_path):
    """A student's card gave its own data line alone: not that its teacher learnt from
    synthetic data, nor that it read the external set (nor weak_ed's card that it did)."""
    from training.export import build_card
    synthetic = replace(tiny_data(), description="SYNTHETIC chips; not real Sentinel data")
    train(tiny_run("teacher", steps=1, eval_every=1), synthetic, tmp_path / "teacher",
          progress=False)
    train(tiny_run("student", steps=1, eval_every=1), tiny_data(pools=2), tmp_path / "student",
          teacher=tmp_path / "teacher" / "best.pt", progress=False)
    out = tmp_path / "student.onnx"
    proc = cli("training", "export", str(tmp_path / "student" / "best.pt"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    card = cli("backend", "card", str(out)).stdout
    assert ("training data: in-memory test chips; learnt from the train split's chips "
            "(unlabelled) and the external set's paired S1 + S2 chips (unlabelled), with its "
            "teacher's soft labels; its teacher (teacher run) learnt from the train split's "
            "hand labels of SYNTHETIC chips; not real Sentinel data\n") in card, card

    doc = load_checkpoint(tmp_path / "student" / "best.pt")
    doc["data"]["teacher"] = doc["data"]["description"]
    assert build_card(doc, {}, "1.0.0", 16).training_data.endswith("hand labels of the same data")
    doc["run"]["method"] = "weak_ed"
    assert build_card(doc, {}, "1.0.0", 16).training_data == (
        "in-memory test chips; learnt from the weakly labelled set's weak labels and the "
        "external set's NDWI weak labels")


def test_card_takes_grid_and_tiling_from_the_run(tmp_path):
    from training.export import build_card
    train(tiny_run("hand", steps=1, eval_every=1, pixel_size_m=16.0, tile_size=320,
                   tile_margin=32), tiny_data(), tmp_path, progress=False)
    doc = load_checkpoint(tmp_path / "best.pt")
    card = build_card(doc, {"iou_test": 0.5}, "2.0.0", 16)
    assert (card.pixel_size_m, card.tile_size, card.margin) == (16.0, 320, 32)
    assert card.metrics == {"iou_test": 0.5} and card.version == "2.0.0"
    assert card.name == "sarflood-hand" and "width 0.25" in card.extra["architecture"]


def test_sigterm_during_export_leaves_no_temporary_file(runs, tmp_path):
    """SIGTERM (timeout, Slurm, systemd) killed the export with its half-written model
    beside --out and its scratch folder left; what a SIGKILL leaves, the next export of
    that file removes."""
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (out / f".m.{gone.pid}.tmp.onnx").write_bytes(b"half")   # as a SIGKILL leaves it
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "export", str(runs / "hand" / "best.pt"),
         "--out", str(out / "m.onnx")], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)})
    deadline = time.time() + 300   # until the backend checks run on the written model
    while (time.time() < deadline and proc.poll() is None
           and not list(scratch.glob("sarflood-export-*"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert list(out.iterdir()) == [] and list(scratch.glob("sarflood-export-*")) == []


def test_metrics_json_is_written_atomically_and_a_truncated_one_named(runs, tmp_path,
                                                                      monkeypatch):
    """reproduce wrote metrics.json in place; a truncated one gave export a traceback."""
    from training.config import make_config
    from training.methods import get_method
    from training.reproduce import score_run

    from .tiny_chips import TinyChips

    best = tmp_path / "best.pt"
    shutil.copy(runs / "hand" / "best.pt", best)
    (tmp_path / "metrics.json").write_text('{"iou_test": 0.5}')
    real_write = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        score_run(best, get_method("hand"), {"test": TinyChips(2)}, make_config("cpu"),
                  torch.device("cpu"))
    monkeypatch.undo()
    assert (tmp_path / "metrics.json").read_text() == '{"iou_test": 0.5}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "metrics.json"]

    (tmp_path / "metrics.json").write_text('{"iou_test": 0.1')
    proc = cli("training", "export", str(best), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{tmp_path / 'metrics.json'}: not readable JSON" in proc.stderr


def test_a_run_folder_is_told_to_name_its_best_pt(runs, tmp_path):
    """export runs/hand said "checkpoint not found"."""
    proc = cli("training", "export", str(runs / "hand"), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1 and proc.stderr == (
        f"error: {runs / 'hand'}: a folder (a run folder?), not a checkpoint; give its "
        f"best.pt: {runs / 'hand' / 'best.pt'}\n"), proc.stderr
    assert list(tmp_path.iterdir()) == []
