"""BackendProcess against a real backend child: what a killed run leaves behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import PLUGINS_DIR, REPO


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
                       f"Flood map: scene failed: {outcome.error}\nThe backend's error output:\n"
                       + "\n".join(outcome.stderr) + f"\nThe command:\n{outcome.command}")]
    assert outcome.command.endswith(" -m backend no-such-command --progress json")


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


def _fake_python(folder, body: str):
    """An executable standing in for the backend's Python: a Python script, ``body``, that
    ignores the ``-m backend ...`` it is given; ``emit(**event)`` prints a JSON event."""
    import stat
    import sys
    import textwrap

    from sarflood.plugin.backend_env import Interpreter

    script = folder / "fake_python.py"
    script.write_text(f"#!{sys.executable}\nimport json, os, signal, sys, time\n"
                      "def emit(**event):\n"
                      "    sys.stdout.write(json.dumps(event) + '\\n')\n"
                      "    sys.stdout.flush()\n" + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return Interpreter(str(script), "setting")


def _run_in_thread(run, seconds: float = 30.0, *args):
    """``run.run(*args)`` in a worker thread, as the plugin runs it; None where it never ends."""
    import threading

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("outcome", run.run(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    return box.get("outcome")


def test_bytes_that_are_not_utf8_neither_hang_the_run_nor_stop_reading_stderr(tmp_path):
    """GDAL and PROJ print raw paths (a Latin-1 "café"): on stdout the reader thread died
    of UnicodeDecodeError, the run waited for ever (Cancel did nothing, QGIS could not
    exit); on stderr the stderr reader died, and the warnings after it filled the pipe
    and blocked the backend for ever. Two runs, as the two readers are not ordered
    against each other: one stderr flood would push a stdout line out of the lines kept
    whenever the stderr reader got ahead."""
    from sarflood.plugin.backend_process import BackendProcess

    on_stdout = _fake_python(tmp_path, """
        emit(event="progress", fraction=0.5)
        sys.stdout.buffer.write(b"caf\\xe9 from GDAL\\n")
        sys.stdout.flush()
        emit(event="result", outputs={}, valid_pixels=1)
    """)
    outcome = _run_in_thread(BackendProcess(on_stdout, ["predict", "scene.tif"]))
    assert outcome is not None, "the run never ended"
    assert outcome.ok and outcome.returncode == 0, outcome
    assert outcome.stderr == ["caf\ufffd from GDAL"]

    on_stderr = _fake_python(tmp_path, """
        sys.stderr.buffer.write(b"ERROR 1: PROJ: proj_create: cannot open caf\\xe9.db\\n")
        for number in range(20000):   # far more than a pipe holds
            sys.stderr.write(f"core.py:12: RuntimeWarning: invalid value encountered {number}\\n")
        emit(event="result", outputs={}, valid_pixels=1)
    """)
    outcome = _run_in_thread(BackendProcess(on_stderr, ["predict", "scene.tif"]))
    assert outcome is not None, "the run never ended"
    assert outcome.ok and outcome.returncode == 0, outcome
    assert outcome.stderr[0] == "ERROR 1: PROJ: proj_create: cannot open caf\ufffd.db"
    assert outcome.stderr[-1] == "core.py:12: RuntimeWarning: invalid value encountered 19999"


def test_a_crash_says_what_the_backend_said_last(tmp_path):
    """SIGABRT after ONNX Runtime's "what(): CUDA failure 2: out of memory" said only "stopped
    by signal 6 (SIGABRT)", a segfault left no error output at all, and a MemoryError
    followed by thousands of warnings was told as its last warning."""
    from sarflood.plugin.backend_process import BackendProcess

    crashes = {"abort": """
        sys.stderr.write("terminate called after throwing an instance of 'Ort::Exception'\\n"
                         "  what():  CUDA failure 2: out of memory ; GPU=0\\n")
        sys.stderr.flush()
        os.abort()
    """, "segfault": """
        import ctypes
        ctypes.string_at(0)
    """, "warnings after the error": """
        sys.stderr.write("Traceback (most recent call last):\\n  File 'x.py', line 1\\n"
                         "MemoryError: Unable to allocate 9.5 GiB\\n")
        for number in range(5000):
            sys.stderr.write(f"core.py:12: RuntimeWarning: invalid value encountered {number}\\n")
        sys.exit(1)
    """, "a long line": """
        sys.stderr.write("ValueError: bad tile " + repr(list(range(30000))) + "\\n")
        sys.exit(1)
    """}
    said = {}
    for name, body in crashes.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        outcome = BackendProcess(_fake_python(folder, body), ["predict", "scene.tif"]).run()
        assert not outcome.ok
        said[name] = outcome
    advice = ("; the backend crashed: try Device 'CPU' or fewer tiles per batch, and report it "
              "with the details in View > Panels > Log Messages, tab 'SAR Flood Mapper'")
    assert said["abort"].error == ("the backend was stopped by signal 6 (SIGABRT): what(): CUDA "
                                   "failure 2: out of memory ; GPU=0" + advice)
    # the fault handler's stack is in the log
    assert said["segfault"].error == ("the backend was stopped by signal 11 (SIGSEGV): Fatal "
                                      "Python error: Segmentation fault" + advice)
    assert any("fake_python.py\", line" in line for line in said["segfault"].stderr)
    assert said["warnings after the error"].error == (
        "the backend failed with exit code 1: MemoryError: Unable to allocate 9.5 GiB")
    # the traceback's start and the end, not 5000 lines
    kept = said["warnings after the error"].stderr
    assert kept[:3] == ["Traceback (most recent call last):", "  File 'x.py', line 1",
                        "MemoryError: Unable to allocate 9.5 GiB"]
    assert "[... 4943 lines left out ...]" in kept and len(kept) == 61
    long = said["a long line"]
    assert long.error.startswith("the backend failed with exit code 1: ValueError: bad tile [0, 1,")
    assert len(long.error) < 300 and long.error.endswith("...")
    assert max(len(line) for line in long.stderr) < 2100


def _stoppable_backend(folder):
    """A backend that writes its pid, says it started and works for 15 s; on SIGTERM it
    notes it and exits 130, as the real one does."""
    return f"""
        def cancel(number, frame):
            open({str(folder / 'terminated')!r}, 'w').close()
            emit(event="error", message="cancelled; no output was written", kind="Cancelled")
            sys.exit(130)
        signal.signal(signal.SIGTERM, cancel)
        open({str(folder / 'backend.pid')!r}, 'w').write(str(os.getpid()))
        emit(event="progress", fraction=0.1)
        time.sleep(15)
        open({str(folder / 'finished')!r}, 'w').close()
        emit(event="result", outputs={{}}, valid_pixels=1)
    """


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="process groups: POSIX")
def test_a_wrapper_that_does_not_exec_is_stopped_with_the_backend(tmp_path):
    """A backend Python set to a wrapper script that runs Python as its child: Cancel
    stopped the wrapper only, and the backend ran on to complete outputs ("the cancel came
    too late"); a wrapper killed (OOM) left the backend running on, its outputs unseen."""
    from sarflood.plugin.backend_env import Interpreter
    from sarflood.plugin.backend_process import BackendProcess

    python = _fake_python(tmp_path, _stoppable_backend(tmp_path))
    wrapper = tmp_path / "wrapper.sh"
    # "exit" after it: sh does not exec its last command
    wrapper.write_text(f'#!/bin/sh\nexport OMP_NUM_THREADS=1\n"{python.path}" "$@"\nexit $?\n')
    wrapper.chmod(0o755)
    wrapped = Interpreter(str(wrapper), "setting")
    for how in ("cancel", "kill the wrapper"):
        for made in tmp_path.glob("terminated"):
            made.unlink()
        run = BackendProcess(wrapped, ["predict", "scene.tif"], grace_s=5)
        started = []

        def on_event(event):
            if event.get("event") == "progress" and how == "kill the wrapper":
                os.kill(run.pid, signal.SIGKILL)
            started.append(event)

        begun = time.monotonic()
        outcome = _run_in_thread(run, 30, on_event, lambda: how == "cancel" and bool(started))
        assert outcome is not None and time.monotonic() - begun < 10, how
        assert (tmp_path / "terminated").exists(), how   # the backend was told to stop
        assert not _pid_alive(int((tmp_path / "backend.pid").read_text()))
        assert not (tmp_path / "finished").exists()
        assert not outcome.ok
        if how == "cancel":
            assert outcome.cancelled
        else:
            assert outcome.error.startswith("the backend was killed (signal 9, SIGKILL)")


@pytest.mark.skipif(os.name == "nt", reason="signals: POSIX")
def test_qgis_dying_cancels_the_backend_once(tmp_path):
    """QGIS crashed: on Linux its death signal came with its stdin's end, two cancels of
    which the backend took the second as 'stop now', and an Accept killed as the final
    mask's hidden file was made left that file. Its stdin's end is the one cancel now."""
    said = tmp_path / "said"
    python = _fake_python(tmp_path, f"""
        signal.signal(signal.SIGTERM, lambda number, frame: open({str(said)!r}, 'a').write('SIGTERM\\n'))
        emit(event="progress", fraction=0.1)
        while sys.stdin.read(1):
            pass
        open({str(said)!r}, 'a').write('end of stdin\\n')
        time.sleep(2)   # what came after the end, in time
        open({str(said)!r}, 'a').write('done\\n')
    """)
    qgis = tmp_path / "qgis.py"
    qgis.write_text(f"""import os, sys
sys.path.insert(0, {str(PLUGINS_DIR)!r})
from sarflood.plugin.backend_env import Interpreter
from sarflood.plugin.backend_process import BackendProcess
BackendProcess(Interpreter({python.path!r}, "setting"), ["predict", "scene.tif"]).run(
    lambda event: os._exit(0))   # a crash at the first event
""")
    subprocess.run([sys.executable, str(qgis)], check=True, timeout=60)
    for _ in range(100):
        if said.exists() and said.read_text().endswith("done\n"):
            break
        time.sleep(0.1)
    assert said.read_text() == "end of stdin\ndone\n"


def test_an_internal_error_sends_the_user_to_the_log_panel_not_to_stderr():
    """A QGIS user has no stderr: "please report it with the traceback printed on stderr"."""
    from sarflood.plugin.backend_process import in_qgis_words

    said = (REPO / "backend" / "cli.py").read_text()
    assert '"internal error, please report it with the traceback printed on "\n' in said
    message = "internal error, please report it with the traceback printed on stderr: ValueError: x"
    assert in_qgis_words(message) == (
        "internal error, please report it with the details in View > Panels > Log Messages, "
        "tab 'SAR Flood Mapper': ValueError: x")
    assert in_qgis_words(message, processing=True) == (
        "internal error, please report it with the details in this log: ValueError: x")


def test_the_module_missing_is_the_one_pythons_last_words_name(tmp_path):
    """Python's own words, not prose that mentions a module; the import that failed last."""
    from sarflood.plugin.backend_process import BackendProcess

    prose = _fake_python(tmp_path, """
        sys.stderr.write("GPU check skipped (No module named cupy). Carrying on\\n")
        sys.exit(1)
    """)
    outcome = BackendProcess(prose, ["predict", "s.tif"]).run()
    assert outcome.error_kind is None and outcome.error == (
        "the backend failed with exit code 1: GPU check skipped (No module named cupy). Carrying on")
    last = _fake_python(tmp_path, """
        sys.stderr.write("warning: No module named 'cupy'\\nTraceback (most recent call last):\\n"
                         "ModuleNotFoundError: No module named 'onnxruntime.capi'\\n")
        sys.exit(1)
    """)
    outcome = BackendProcess(last, ["predict", "s.tif"]).run()
    assert outcome.error_kind == "MissingDependency" and "onnxruntime" in outcome.error
    assert "cupy" not in outcome.error


def test_a_python_that_cannot_be_started_is_named(tmp_path):
    """Checked when the dialog opened, then deleted, or never executable: the run says so."""
    from sarflood.plugin.backend_env import Interpreter
    from sarflood.plugin.backend_process import BackendProcess

    gone, not_executable = tmp_path / "gone" / "python", tmp_path / "python"
    not_executable.write_text("#!/bin/sh\n")
    for python, why in ((gone, f"[Errno 2] No such file or directory: '{gone}'"),
                        (not_executable, f"[Errno 13] Permission denied: '{not_executable}'")):
        outcome = BackendProcess(Interpreter(str(python), "setting"), ["predict", "s.tif"]).run()
        assert not outcome.ok
        assert outcome.error == f"could not start the backend with {python}: {why}"


def test_a_plugin_without_its_backend_package_says_reinstall(tmp_path):
    """Python's own "-m" message names the module without quotes: it was read as any
    failure ("exit code 1: ... No module named backend"), never as the plugin incomplete."""
    from sarflood.plugin.backend_env import PLUGIN_ROOT, Interpreter
    from sarflood.plugin.backend_process import BackendProcess

    # a real Python, run where no backend package lies, and without site-packages (a venv
    # of ours has the repository in a .pth)
    elsewhere = tmp_path / "python"
    elsewhere.write_text(f"#!/bin/sh\ncd '{tmp_path}' && exec '{sys.executable}' -I -S \"$@\"\n")
    elsewhere.chmod(0o755)
    outcome = BackendProcess(Interpreter(str(elsewhere), "setting"), ["predict", "s.tif"]).run()
    assert outcome.stderr[-1].endswith("No module named backend")   # Python's words
    assert outcome.error == (f"the backend package was not found next to the plugin in "
                             f"{PLUGIN_ROOT} (the plugin is incomplete: reinstall it)")
    assert outcome.error_kind == "MissingDependency"


def test_a_handler_that_raises_stops_the_child(tmp_path):
    """An exception in the plugin's event handler left the backend running on unseen,
    to write its outputs after the run had been told as failed."""
    from sarflood.plugin.backend_process import BackendProcess

    ran_on = tmp_path / "ran on"
    python = _fake_python(tmp_path, f"""
        emit(event="progress", fraction=0.1)
        time.sleep(30)
        open({str(ran_on)!r}, "w").close()
    """)
    run = BackendProcess(python, ["predict", "scene.tif"], grace_s=1.0)

    def raising(event):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        run.run(raising)
    assert run._proc.poll() is not None and not ran_on.exists()


def test_a_quick_query_reads_bytes_that_are_not_utf8(tmp_path):
    """The model card and device queries decoded by the locale, strictly: a Latin-1 path in
    the error raised UnicodeDecodeError instead of the backend's message."""
    from sarflood.plugin.backend_process import QueryError, query_json

    python = _fake_python(tmp_path, """
        sys.stderr.buffer.write(b"error: /data/caf\\xe9/model.onnx: not an ONNX model\\n")
        sys.exit(1)
    """)
    with pytest.raises(QueryError, match="^/data/caf\ufffd/model.onnx: not an ONNX model$"):
        query_json(python, ["card", "model.onnx", "--json"])


def _long_run(folder, models) -> list[str]:
    """The arguments of a ``predict`` of several seconds (tiny tiles under TTA: thousands
    of model calls) into ``folder``/out."""
    import numpy as np

    from .conftest import write_raster

    vv = np.random.default_rng(0).normal(-15, 5, (1024, 1024)).astype(np.float32)
    scene = write_raster(folder / "scene.tif", [vv, vv - 7], descriptions=["VV", "VH"])
    out = folder / "out"
    out.mkdir()
    return ["predict", str(scene), "--mask", str(out / "m.tif"), "--probability",
            str(out / "p.tif"), "--model", str(models["threshold"]), "--tta",
            "--tile-size", "16", "--batch-size", "1"]


@pytest.mark.skipif(os.name == "nt", reason="the launcher's session: POSIX")
def test_cancel_reaches_the_backend_past_a_launcher(tmp_path, models):
    """A Windows venv's python.exe is a launcher that runs the real Python as its child, and
    Cancel was TerminateProcess of the launcher: the backend never cleaned up, and its
    hidden partial files stayed. Closing stdin reaches the backend past the launcher;
    here the launcher puts it in a session of its own, which no signal to the launcher's
    process group reaches."""
    from sarflood.plugin.backend_env import Interpreter, find_interpreter
    from sarflood.plugin.backend_process import BackendProcess

    launcher = tmp_path / "launcher.py"
    launcher.write_text(f"#!{sys.executable}\nimport subprocess, sys\nsys.exit(subprocess.call("
                        f"[{find_interpreter().path!r}, *sys.argv[1:]], start_new_session=True))\n")
    launcher.chmod(0o755)
    out = tmp_path / "out"
    run = BackendProcess(Interpreter(str(launcher), "setting"), _long_run(tmp_path, models),
                         grace_s=60)
    seen = []

    def writing():   # polled by the run loop between events
        return bool(seen) and any(out.glob(".*.sarflood-tmp"))

    outcome = run.run(seen.append, writing)
    assert outcome.cancelled and outcome.returncode == 130, outcome
    assert outcome.error_kind == "Cancelled" and outcome.result is None
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a process's children: /proc")
def test_a_killed_backends_leftovers_are_found_past_a_launcher(tmp_path, models):
    """The backend names its hidden partial files by its own pid, and the plugin looked them
    up by the pid of the process it started: behind a launcher (a Windows venv's python.exe)
    a backend killed mid-write left them for good. Its start event now gives its pid."""
    from sarflood.plugin.backend_env import Interpreter, find_interpreter
    from sarflood.plugin.backend_process import BackendProcess

    launcher = tmp_path / "launcher.py"
    launcher.write_text(f"#!{sys.executable}\nimport subprocess, sys\nsys.exit(subprocess.call("
                        f"[{find_interpreter().path!r}, *sys.argv[1:]], start_new_session=True))\n")
    launcher.chmod(0o755)
    out = tmp_path / "out"
    run = BackendProcess(Interpreter(str(launcher), "setting"), _long_run(tmp_path, models))
    killed = []

    def kill_once_writing(event):   # the OOM killer, say
        if not killed and any(out.glob(".*.sarflood-tmp")):
            children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
            os.kill(int(children[0]), signal.SIGKILL)   # the backend, the launcher's child
            killed.append(int(children[0]))

    outcome = run.run(kill_once_writing)
    assert killed and killed[0] != run.pid
    assert outcome.returncode != 0 and outcome.result is None, outcome
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL: POSIX")
def test_the_backend_stops_when_qgis_dies(tmp_path, models):
    """A backend whose QGIS crashed ran on to the end on macOS and Windows, which have no
    death signal, writing outputs nobody saw (an Accept replaced the final mask). The OS
    closes its stdin then, as everywhere."""
    out = tmp_path / "out"
    qgis = tmp_path / "qgis.py"
    qgis.write_text(f"""import os, signal, sys
sys.path.insert(0, {str(PLUGINS_DIR)!r})
from pathlib import Path
from sarflood.plugin import backend_process
from sarflood.plugin.backend_env import find_interpreter
run = backend_process.BackendProcess(find_interpreter(), {_long_run(tmp_path, models)!r})
def crash_once_writing(event):
    if event.get("event") == "progress" and any(Path({str(out)!r}).glob(".*.sarflood-tmp")):
        os.kill(os.getpid(), signal.SIGKILL)
run.run(crash_once_writing)
""")
    assert subprocess.run([sys.executable, str(qgis)], timeout=120).returncode == -signal.SIGKILL
    for _ in range(1200):   # the hidden files go as the run ends: cancelled, or complete
        if not list(out.glob(".*")):
            break
        time.sleep(0.1)
    assert list(out.iterdir()) == []
