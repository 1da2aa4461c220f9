"""BackendProcess against a real backend child: what a killed run leaves behind."""
import os
import signal
import subprocess

from .conftest import REPO


def test_a_killed_run_leaves_no_temporary_file(tmp_path):
    """SIGKILL (the grace period ran out, or the OOM killer) gives the child no chance to
    clean up; the plugin removes its half-written files, and no one else's."""
    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.backend_process import BackendProcess

    python = find_interpreter()
    scene = tmp_path / "scene.tif"
    subprocess.run([python.path, "-m", "backend", "scene", str(scene), "--size", "2048"],
                   cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    other_run = out / ".other.tif.1-abcd1234.sarflood-tmp"   # another run's, still writing
    other_run.write_text("not ours")
    run = BackendProcess(python, ["predict", str(scene), "--mask", str(out / "m.tif"),
                                  "--probability", str(out / "p.tif"), "--tta"])
    seen = []

    def kill_once_writing(event):
        seen.append(event)
        if event.get("event") == "progress" and event.get("fraction", 0) > 0.05 and \
                not any(e.get("event") == "result" for e in seen) and \
                len(list(out.glob("*.sarflood-tmp"))) > 1:
            os.kill(run.pid, signal.SIGKILL)

    outcome = run.run(kill_once_writing)
    assert outcome.returncode == -signal.SIGKILL and not outcome.ok
    assert sorted(p.name for p in out.iterdir()) == [other_run.name]
    # it said "exit code -9: no message"
    assert outcome.error.startswith("the backend was killed (signal 9, SIGKILL), most often by the "
                                    "system running out of memory: try a smaller tile size")


def test_a_killed_command_other_than_predict_is_not_given_predicts_advice():
    """A killed Accept (finalize) was told to try a smaller tile size and no test-time
    augmentation, which it does not have."""
    from sarflood.plugin.backend_process import killed_message

    assert killed_message(9, mapping=False) == (
        "the backend was killed (signal 9, SIGKILL), most often by the system running out of "
        "memory; close other programs and try again")


def test_a_failed_run_keeps_its_error_output_for_the_log(qgis_app):
    """The last stderr lines were kept for the one-line message only, never shown."""
    from qgis.core import Qgis, QgsApplication

    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.backend_process import BackendProcess
    from sarflood.plugin.task import log_failure

    outcome = BackendProcess(find_interpreter(), ["no-such-command"]).run()
    assert outcome.returncode == 2 and not outcome.ok
    assert any("invalid choice: 'no-such-command'" in line for line in outcome.stderr)
    # argparse's refusal comes as the protocol's error event, not as a bare exit code
    assert outcome.error.startswith("python -m backend: argument COMMAND: invalid choice")
    logged = []

    def log(message, tag, level):
        logged.append((tag, level, message))

    QgsApplication.messageLog().messageReceived.connect(log)
    try:
        log_failure("Flood map: scene", outcome)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(log)
    assert logged == [("SAR Flood Mapper", Qgis.MessageLevel.Critical,
                       f"Flood map: scene failed: {outcome.error}\nThe backend's last error output:\n"
                       + "\n".join(outcome.stderr))]


def test_backend_messages_name_the_qgis_settings_not_the_options(tmp_path):
    """QGIS showed the backend's "given by --units" and "(band 1, by --bands)": options an
    analyst in the dialog never sees."""
    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.backend_process import BackendProcess, in_qgis_words

    python = find_interpreter()
    scene = tmp_path / "scene.tif"
    subprocess.run([python.path, "-m", "backend", "scene", str(scene), "--size", "256"],
                   cwd=REPO, check=True, capture_output=True)
    messages = []
    outcome = BackendProcess(python, ["predict", str(scene), "--mask", str(tmp_path / "m.tif"),
                                      "--units", "dB", "--bands", "2,1"]).run(
        lambda event: messages.append(event.get("message", "")))
    assert outcome.ok, outcome.error
    text = "\n".join(messages + outcome.warnings)
    assert "given by 'Units'" in text and "by the 'VV band' and 'VH band' choice" in text, text
    assert "--" not in text, text
    assert in_qgis_words("--extent-crs without --extent; --device cpu, --tile-size") == (
        "the extent's CRS without 'Extent'; 'Device' cpu, 'Tile size'")


def test_a_cancel_after_the_outputs_are_in_place_keeps_the_run(models, two_band_scene, tmp_path):
    """A cancel after the backend had written its outputs (it printed them and its result)
    ended as "cancelled", the complete files left unmentioned. The SIGTERM finds the backend
    before its exit (it keeps the outputs, says so, exits 0) or past its signal handlers,
    exiting (-15): either way a success."""
    import pytest

    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.backend_process import BackendProcess

    for when in ("wrote", "result"):   # mostly exit 0, and -15
        out = tmp_path / f"{when}_{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        mask = out / "mask.tif"
        seen = []

        def record(event):
            seen.append(event)

        def cancel_now():   # polled by the run loop between events
            if when == "result":
                return any(e.get("event") == "result" for e in seen)
            return any(str(e.get("message", "")).startswith("wrote ") for e in seen)

        outcome = BackendProcess(find_interpreter(), ["predict", str(two_band_scene), "--model",
                                                      str(models["threshold"]), "--mask", str(mask)]
                                 ).run(record, cancel_now)
        assert outcome.ok and outcome.cancel_came_late and not outcome.cancelled, (when, outcome)
        assert outcome.error is None and outcome.result["outputs"]["mask"] == str(mask)
        assert outcome.result["water_area_km2"] == pytest.approx(0.2048)
        assert not any("cancel came after" in w for w in outcome.warnings)
        assert [p.name for p in out.iterdir()] == ["mask.tif"]


def test_extents_and_band_advice_in_qgis_words():
    """An extent typed in QGIS's order (xmin,xmax,ymin,ymax) came back in the backend's
    (xmin,ymin,xmax,ymax); band advice showed the command line's VV_INDEX,VH_INDEX."""
    from sarflood.plugin.backend_process import in_qgis_words

    said = in_qgis_words("/d/s.tif: the extent 10,50,11,51 (in EPSG:4326; 1410521,5620113,1501521,"
                         "5743737 in the raster's) does not overlap the raster (bounds 500000,"
                         "4289760,510240,4300000 in EPSG:32630)")
    assert said == ("/d/s.tif: the extent 10,11,50,51 (in EPSG:4326; 1410521,1501521,5620113,5743737 "
                    "in the raster's) does not overlap the raster (bounds 500000,510240,4289760,"
                    "4300000 in EPSG:32630)")
    # the advice too: following the command line's order, the analyst typed it wrong again
    assert in_qgis_words("/d/s.tif: the extent 0,1,2,3 does not overlap the raster (bounds "
                         "0,1,2,3 in EPSG:4326); an extent in longitude and latitude is "
                         "west,south,east,north") == (
        "/d/s.tif: the extent 0,2,1,3 does not overlap the raster (bounds 0,2,1,3 in "
        "EPSG:4326); an extent in longitude and latitude is west,east,south,north in QGIS's "
        "order")
    assert in_qgis_words("the extent -1.5,2,3.25,4 reaches past the raster: (3 x 4 pixels; the "
                         "raster's bounds 0,1,2,3 in EPSG:4326)") == (
        "the extent -1.5,3.25,2,4 reaches past the raster: (3 x 4 pixels; the raster's bounds "
        "0,2,1,3 in EPSG:4326)")
    swapped = ("(band 1, by --bands) ... are VV and VH swapped? (--bands VV_INDEX,VH_INDEX chooses "
               "the bands of one file; two files go in the order VV, VH)")
    assert in_qgis_words(swapped, processing=True) == (
        "(band 1, by VV_BAND and VH_BAND) ... are VV and VH swapped? (setting VV_BAND and VH_BAND "
        "chooses the bands of one file; two files go in the order VV, VH)")
    assert in_qgis_words(swapped) == (
        "(band 1, by the 'VV band' and 'VH band' choice) ... are VV and VH swapped? (setting "
        "'VV band' and 'VH band' chooses the bands of one file; two files go in the order VV, VH)")


def test_a_run_killed_between_its_renames_leaves_the_outputs_as_they_were(tmp_path):
    """Killed while renaming its outputs into place (the OOM killer, say), a run had put its
    new mask where the old one was and not yet its probability: the old mask, kept aside by
    the backend, was deleted as a leftover, and a new output stayed without its partners.
    Here what the backend leaves at that moment (raster_io.temporary_path), for a dead pid."""
    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.backend_process import BackendProcess

    out = tmp_path / "out"
    out.mkdir()
    pid = 999999
    (out / "m.tif").write_text("the killed run's new mask")           # renamed in
    (out / f".m.tif.{pid}-aaaa1111.sarflood-kept").write_text("the mask before")
    (out / "p.tif").write_text("the probability before")            # not reached yet
    (out / f".p.tif.{pid}-bbbb2222.sarflood-tmp").write_text("its new probability")
    (out / "u.tif").write_text("the killed run's uncertainty")      # renamed in, replaced none
    (out / f".u.tif.{pid}-cccc3333.sarflood-new").write_text("")
    (out / f".u.tif.{pid}-dddd4444.sarflood-tmp.aux.xml").write_text("GDAL's")
    other = out / ".m.tif.1-eeee5555.sarflood-kept"                  # another run's, alive
    other.write_text("not ours")
    run = BackendProcess(find_interpreter(), ["predict", "scene.tif", "--mask", str(out / "m.tif"),
                                              "--probability", str(out / "p.tif"),
                                              "--uncertainty", str(out / "u.tif")])
    run._remove_leftovers(pid)
    assert sorted(p.name for p in out.iterdir()) == sorted(["m.tif", "p.tif", other.name])
    assert (out / "m.tif").read_text() == "the mask before"
    assert (out / "p.tif").read_text() == "the probability before"
