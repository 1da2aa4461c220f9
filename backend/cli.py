"""``python -m backend``: the command line of the inference backend.

Commands: predict, otsu, finalize, correct, inspect, stats, card, devices, scene, bench, demo.
Every command that runs reports through :mod:`~backend.progress` (a bar on stderr by
default, JSON lines on stdout with ``--progress json``) and ends with one ``result`` or
one ``error``. Exit codes: 0 done, 1 an error (one line naming the file and the
problem; one the backend did not foresee, a bug, also prints its traceback on
stderr), 2 a usage error from argparse, 130 cancelled (Ctrl-C or SIGTERM, with no
partial output left behind).

With ``SARFLOOD_PARENT_PIPE=1`` in the environment (the QGIS plugin sets it, and gives a
pipe as stdin that it never writes), the end of stdin is a cancel, as SIGTERM is: the
plugin closes the pipe to cancel, and the OS closes it when the plugin's process dies.
This works on every OS (Windows sends no signal a handler sees, macOS has no death signal)
and through a launcher between the two (a Windows venv's python.exe). Without it stdin
is never read: Ctrl-D at a terminal, or a closed stdin, cancels nothing.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import (EXIT_CANCELLED, EXIT_ERROR, BackendError, Cancelled, UsageError,
                     first_line)
from .pipeline import is_cleaning_up, keep_freed_memory, outputs_published, set_published
from .progress import JsonReporter, Reporter, make_reporter, readable_json, to_devnull


def _comma_list(kind: type, count: int, form: str) -> Callable[[str], tuple]:
    """An argparse type: ``count`` comma-separated values of ``kind``, e.g. ``2,1``."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count or not all(math.isfinite(v) for v in values):
            what = "whole numbers" if kind is int else "finite numbers"
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form} ({what})")
        return values
    return parse


# backend.units.UNITS, spelt out so that parsing does not import numpy
UNIT_NAMES = ("dB", "linear", "amplitude")


def _units(text: str) -> str:
    """Units in any case (``db``, ``DB``) as the backend spells them."""
    return next((u for u in UNIT_NAMES if u.lower() == text.lower()), text)


def _nodata(text: str) -> float:
    """A no-data value: a number, or nan."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number (or nan)") from None
    if value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number (or nan)")
    return value


_extent = _comma_list(float, 4, "XMIN,YMIN,XMAX,YMAX")
_band_pair = _comma_list(int, 2, "VV_INDEX,VH_INDEX, e.g. 2,1")


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="one 2-band raster (VV, VH) or two single-band rasters (VV VH); a "
                        "single-band VV raster where VV alone is read (Otsu, a VV-only model)")
    p.add_argument("--bands", type=_band_pair, metavar="VV_INDEX,VH_INDEX",
                   help="the VV and VH band numbers (from 1) of a single multi-band input "
                        "(default: from band descriptions)")
    p.add_argument("--nodata", type=_nodata, metavar="VALUE",
                   help="the inputs' no-data value, for every band, in place of the files' own "
                        "(a stored value, as gdal_translate -a_nodata sets it): e.g. 0 for a "
                        "border an export wrote as 0 without saying so")


def _add_io(p: argparse.ArgumentParser) -> None:
    _add_inputs(p)
    p.add_argument("--extent", type=_extent, metavar="XMIN,YMIN,XMAX,YMAX",
                   help="process only this extent (output on the input grid, cropped)")
    p.add_argument("--extent-crs", metavar="CRS", help="CRS of --extent (default: the raster's)")
    p.add_argument("--units", type=_units, choices=UNIT_NAMES,
                   help="input units (default: from metadata, else from the values)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _add_compress(p: argparse.ArgumentParser) -> None:
    # backend.sink.CODECS, spelt out so that parsing does not import rasterio (tested)
    p.add_argument("--compress", choices=("zstd", "deflate"), default="zstd",
                   help="GeoTIFF compression: zstd (default, fast; GDAL 2.3+ with zstd reads "
                        "it) or deflate (for software without ZSTD)")


def _add_progress(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="bar on stderr (default), JSON lines on stdout, or nothing")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusals go out as the protocol's start and error events
    too when the command line asks for ``--progress json`` (a parent reads stdout)."""
    json_errors = False

    def error(self, message: str):
        if _Parser.json_errors:
            JsonReporter().error(f"{self.prog}: {message}", kind="UsageError")
        super().error(message)   # the usage and the message on stderr, exit 2


def _asks_for_json(argv: list[str]) -> bool:
    return any(a == "--progress=json" or (a == "--progress" and b == "json")
               for a, b in zip(argv, [*argv[1:], ""]))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m backend", description="SAR Flood Mapper inference backend")
    parser.add_argument("--version", action="version", version=f"sarflood backend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="map water with an ONNX model")
    _add_io(p)
    p.add_argument("--mask", metavar="OUT.tif", help="uint8 mask: 0 dry, 1 water, 255 no data")
    p.add_argument("--probability", metavar="OUT.tif", help="water probability")
    p.add_argument("--uncertainty", metavar="OUT.tif",
                   help="spread of the TTA predictions (implies --tta)")
    p.add_argument("--model", metavar="PATH", help="ONNX model with a card (default: bundled)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="water if probability > T (default: the card's)")
    p.add_argument("--tta", action="store_true", help="average over 8 flips and rotations")
    p.add_argument("--tile-size", type=int, metavar="N",
                   help="tile stride and output block (default: the card's tile_size)")
    p.add_argument("--overlap", type=int, metavar="N",
                   help="tile overlap (default: 2 x margin + a blend zone)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="tiles per model call, at most a row's (default: 1 on CPU, 4 on CUDA; "
                        "memory grows with it)")
    p.add_argument("--probability-dtype", choices=("float32", "uint8"),
                   help="the --probability file's type (default float32)")
    _add_compress(p)
    _add_progress(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("otsu", help="the classic baseline: Otsu threshold on VV in dB")
    _add_io(p)
    p.add_argument("--mask", metavar="OUT.tif", required=True)
    _add_compress(p)
    _add_progress(p)
    p.set_defaults(func=_otsu)

    p = sub.add_parser("finalize", help="mask a probability raster at a threshold, with tags")
    p.add_argument("probability", metavar="PROBABILITY.tif")
    p.add_argument("--threshold", type=float, required=True, metavar="T")
    p.add_argument("--mask", metavar="OUT.tif", required=True)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--corrections", metavar="FILE.geojson",
                   help="polygons with property water: true/false, burnt into the mask")
    p.add_argument("--overwrite", action="store_true")
    _add_compress(p)
    _add_progress(p)
    p.set_defaults(func=_finalize)

    p = sub.add_parser("correct", help="burn an analyst's water/dry polygons into a mask")
    p.add_argument("mask", metavar="MASK.tif")
    p.add_argument("--corrections", metavar="FILE.geojson", required=True,
                   help="GeoJSON polygons (WGS 84, or the CRS a 'crs' member names) with "
                        "property water: true/false")
    p.add_argument("--out", metavar="OUT.tif", required=True)
    p.add_argument("--overwrite", action="store_true")
    _add_compress(p)
    _add_progress(p)
    p.set_defaults(func=_correct)

    p = sub.add_parser("inspect", help="bands, grid and detected units of inputs (no model)")
    _add_inputs(p)
    p.add_argument("--units", type=_units, choices=UNIT_NAMES,
                   help="preview a run's --units: the units taken, and any warning on them")
    p.add_argument("--json", action="store_true", help="the answer as JSON")
    p.set_defaults(func=_inspect, progress="none")

    p = sub.add_parser("stats", help="valid and water area of a water mask (0/1/255)")
    p.add_argument("mask", metavar="MASK.tif")
    output = p.add_mutually_exclusive_group()   # --json is a fourth --progress: one or other
    _add_progress(output)
    output.add_argument("--json", dest="progress", action="store_const", const="result",
                        help="only the result, as one JSON document on stdout")
    p.set_defaults(func=_stats)

    p = sub.add_parser("card", help="print (and validate) a model's card")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true", help="the card as JSON")
    p.set_defaults(func=_card, progress="none")

    p = sub.add_parser("devices", help="ONNX Runtime providers, and whether CUDA can be used")
    p.set_defaults(func=_devices, progress="none")

    p = sub.add_parser("scene", help="write a generated 2-band VV/VH scene")
    p.add_argument("out", metavar="OUT.tif")
    p.add_argument("--size", type=int, default=2048, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--units", type=_units, choices=UNIT_NAMES, default="dB")
    p.add_argument("--truth", metavar="TRUTH.tif", help="also write the true water mask")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_scene, progress="none")

    p = sub.add_parser("bench", help="throughput and memory on a generated N x N scene")
    p.add_argument("--model", metavar="PATH")
    p.add_argument("--size", type=int, action="append", metavar="N",
                   help="raster edge; repeat for several sizes (default 4096)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--probability", action="store_true",
                   help="also write the float32 probability in the end-to-end run")
    p.add_argument("--workdir", metavar="DIR",
                   help="an existing folder to hold the run's temporary folder of scene and "
                        "outputs (default: the system's temporary folder)")
    p.add_argument("--raw-seconds", type=float, default=3.0, metavar="S",
                   help="how long to time the session alone (default 3)")
    p.add_argument("--repeat", type=int, default=3, metavar="K",
                   help="end-to-end runs per size, the median reported (default 3)")
    p.add_argument("--latitude", type=float, metavar="DEG",
                   help="tag the scene as EPSG:4326 with Sen1Floods11's degree pixels from "
                        "this latitude (narrower than 10 m away from the equator: predict "
                        "resamples)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_bench, progress="none")

    p = sub.add_parser("demo", help="map a generated scene with the default model and Otsu")
    p.add_argument("--out", default="demo_output", metavar="DIR",
                   help="folder of the scene and the outputs (default demo_output)")
    p.add_argument("--size", type=int, default=3072, metavar="N",
                   help="scene edge in pixels (default 3072; the README's IoU is at that size)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the demo's names in a folder the demo did not write")
    p.set_defaults(func=_demo, progress="none")
    return parser


def _predict(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> dict:
    from .engine import PredictOptions, predict
    if a.probability_dtype and not a.probability:
        raise UsageError(f"--probability-dtype {a.probability_dtype} sets the type of the "
                         "--probability file: give --probability too")
    opts = PredictOptions(
        inputs=a.inputs, mask=a.mask, probability=a.probability, uncertainty=a.uncertainty,
        model=a.model, device=a.device, threshold=a.threshold, extent=a.extent,
        extent_crs=a.extent_crs, tta=a.tta, units=a.units, tile_size=a.tile_size,
        overlap=a.overlap, batch_size=a.batch_size,
        probability_dtype=a.probability_dtype or "float32",
        compress=a.compress, overwrite=a.overwrite, bands=a.bands, nodata=a.nodata)
    result = predict(opts, reporter, cancel)
    _summary(reporter, result)
    return result


def _otsu(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> dict:
    from .otsu import OtsuOptions, otsu_map
    result = otsu_map(OtsuOptions(inputs=a.inputs, mask=a.mask, extent=a.extent,
                                  extent_crs=a.extent_crs, units=a.units,
                                  overwrite=a.overwrite, bands=a.bands, compress=a.compress,
                                  nodata=a.nodata),
                      reporter, cancel)
    _summary(reporter, result)
    return result


def _finalize(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> dict:
    from .finalize import finalize, parse_tags
    result = finalize(a.probability, a.threshold, a.mask, a.overwrite, parse_tags(a.tag),
                      reporter, cancel, a.compress, a.corrections)
    _summary(reporter, result)
    return result


def _correct(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> dict:
    from .corrections import correct_mask
    result = correct_mask(a.mask, a.corrections, a.out, a.overwrite, reporter, cancel, a.compress)
    reporter.info(f"{result['corrected_pixels']} pixels corrected by {result['corrections']}")
    _summary(reporter, result)
    return result


def _inspect(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .inspection import describe_text, inspect_inputs
    answer = inspect_inputs(a.inputs, a.bands, a.units, a.nodata)
    print(readable_json(answer) if a.json else describe_text(answer))


def _stats(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> dict:
    from .stats import mask_stats
    result = mask_stats(a.mask, reporter, cancel)
    _summary(reporter, result)
    return result


def _summary(reporter: Reporter, r: dict) -> None:
    written = [f"{kind} {path}" for kind, path in r.get("outputs", {}).items() if path]
    if written:
        reporter.info(f"wrote {', '.join(written)}")
    m2 = 0 < r["valid_area_km2"] < 0.1   # both in one unit, the valid area's
    reporter.info(f"water {_area(r['water_area_km2'], m2)} of {_area(r['valid_area_km2'], m2)} valid "
                  f"({100 * r['water_fraction']:.2f}%) in {r.get('seconds', 0):.1f} s"
                  + (f" on {r['device']}" if "device" in r else ""))


def _area(km2: float, m2: bool) -> str:
    """km2 to 3 decimals, or m2 (for an area under 0.1 km2, a small --extent: not 0.000)."""
    return f"{km2 * 1e6:,.0f} m2" if m2 else f"{km2:.3f} km2"


def _card(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .model import OnnxModel
    model = OnnxModel(a.model, device="cpu", card_only=True)
    card = model.card
    if a.json:
        print(card.to_json())
        return
    s = card.summary()
    print(f"{s['name']} {s['version']}  ({s['task']}, card schema {s['schema_version']})")
    if s["description"]:
        print(f"  {s['description']}")
    for b in s["bands"]:
        shift = f"x + {-b['offset']:g}" if b["offset"] < 0 else f"x - {b['offset']:g}"
        print(f"  band {b['name']}: {b['units']}, clip {list(b['clip'])}, "
              f"({shift}) / {b['scale']:g}")
    print(f"  pixel size {s['pixel_size_m']:g} m; tiles {s['tile_size']} px, margin "
          f"{s['margin']}, size multiple {s['size_multiple']}")
    for line in _graph_fixes(model):
        print(f"  {line}")
    channel = "" if s["water_channel"] is None else f", water channel {s['water_channel']}"
    print(f"  input {s['input_name']!r} -> output {s['output_name']!r} ({s['output_kind']}"
          f"{channel}), default threshold {s['default_threshold']:g}")
    print(f"  training data: {s['training_data']}")
    print(f"  metrics: {json.dumps(s['metrics']) if s['metrics'] else 'none'}")
    if s["notes"]:
        print(f"  notes: {s['notes']}")
    print(f"  license: {s['license']}")


def _graph_fixes(model) -> list[str]:
    """What the graph fixes in place of the card's tiling and the run's options."""
    from .tiling import plan_tiles
    card, lines = model.card, []
    if model.fixed_tile:
        fixed = model.fixed_tile
        try:
            plan = plan_tiles(1, 1, card.margin, None, None, card.tile_size, card.size_multiple,
                              fixed)
            how = f"cells of {plan.stride} px, overlap {plan.overlap}"
        except UsageError as exc:   # the default overlap, from the margin, is too wide
            how = f"by default {exc} (--overlap), or a smaller tiling.margin"
        lines.append(f"the graph fixes tiles at {fixed} x {fixed} px, not the card's tile_size "
                     f"{card.tile_size} + overlap: {how}")
    if model.fixed_batch:
        lines.append(f"the graph fixes the batch size at {model.fixed_batch} (--batch-size is "
                     "not used)")
    return lines


def _devices(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .engine import default_model_path
    from .model import device_report
    print(json.dumps(device_report(default_model_path()), indent=1))


def _scene(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .scene import save_scene
    save_scene(a.out, a.size, seed=a.seed, units=a.units, truth=a.truth, overwrite=a.overwrite,
               cancel=cancel)


def _bench(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .bench import format_table, run_bench
    if a.repeat < 1:
        raise UsageError(f"--repeat {a.repeat}: give at least 1 run")
    results = run_bench(a.size or [4096], model=a.model, device=a.device,
                        probability=a.probability, workdir=a.workdir, raw_seconds=a.raw_seconds,
                        repeat=a.repeat, latitude=a.latitude,
                        log=lambda m: print(m, file=sys.stderr, flush=True), cancel=cancel)
    print(json.dumps(results, indent=1) if a.json else format_table(results))


def _demo(a: argparse.Namespace, reporter: Reporter, cancel: threading.Event) -> None:
    from .demo import run_demo
    run_demo(a.out, a.size, cancel, a.overwrite)


def _install_signals(cancel: threading.Event, reporter: Callable[[], Reporter]) -> None:
    """First SIGINT/SIGTERM: stop at the next batch and clean up. A second: stop now,
    unless the run is removing its partial outputs already, or has begun to rename its
    outputs into place (it then ends with its result). ``reporter`` gives the one in use
    when the signal comes."""
    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            if is_cleaning_up() or outputs_published():
                return
            raise KeyboardInterrupt
        cancel.set()
        reporter().info_from_signal(f"{signal.Signals(signum).name}: cancelling, removing "
                                    f"partial outputs")
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


PARENT_PIPE = "SARFLOOD_PARENT_PIPE"


def _watch_parent_pipe() -> None:
    """With ``SARFLOOD_PARENT_PIPE=1``: a thread that reads stdin to its end (or a read
    error: a broken pipe), then cancels the run as a SIGTERM does, through the handler of
    :func:`_install_signals`, which Python runs in the main thread."""
    if os.environ.get(PARENT_PIPE) != "1":
        return

    def wait_for_the_end() -> None:
        try:
            while os.read(0, 4096):
                pass   # the plugin writes nothing; whatever comes is not a cancel
        except OSError:
            pass
        signal.raise_signal(signal.SIGTERM)

    threading.Thread(target=wait_for_the_end, name="parent pipe", daemon=True).start()


def _check_names(args: argparse.Namespace) -> None:
    """UsageError for a file name that is not UTF-8 (Latin-1 bytes from an old archive,
    say): GDAL takes UTF-8 names only, and it failed deep inside rasterio."""
    for value in vars(args).values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    raise UsageError(f"{shown}: the name is not UTF-8 (shown with \ufffd for the "
                                     f"bytes that are not), and GDAL opens UTF-8 names only; "
                                     f"rename the file or folder") from None


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--extent -0.77,38.1,...`` as ``--extent=-0.77,38.1,...``: argparse reads a value
    that starts with '-' as an option unless it is a lone number, so an extent west of
    Greenwich (or at negative eastings) would be refused."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--extent" and re.match(r"-([0-9.]|inf|nan)", arg, re.I):
            out[-1] = f"--extent={arg}"
        else:
            out.append(arg)
    return out


def _use_wheel_data() -> None:
    """A rasterio wheel carries its own GDAL and PROJ and their data: point them at it,
    whatever the environment says, before rasterio is imported.

    QGIS on Windows runs with PROJ_LIB/PROJ_DATA, GDAL_DATA and GDAL_DRIVER_PATH of its own
    GDAL and PROJ, which its children inherit: a wheel's PROJ then read QGIS's older proj.db
    (here Debian's, PROJ 9.1: "extent CRS 'EPSG:4326' is not a CRS rasterio understands"),
    and a wheel's GDAL, which has no driver plugins, tried to load QGIS's. And rasterio gives
    the wheel's proj.db to the PROJ contexts it sets up, but GDAL's GeoTIFF driver reading a
    CRS in other units than metres (km) asked PROJ elsewhere and printed "Cannot find
    proj.db". A rasterio built on the system's GDAL has no wheel data: the environment's
    stays."""
    spec = importlib.util.find_spec("rasterio")
    if spec is None or not spec.submodule_search_locations:
        return
    root = Path(next(iter(spec.submodule_search_locations)))
    if (root / "proj_data" / "proj.db").is_file():
        os.environ["PROJ_DATA"] = str(root / "proj_data")
        os.environ.pop("PROJ_LIB", None)   # older PROJ reads it first
    if (root / "gdal_data").is_dir():
        os.environ["GDAL_DATA"] = str(root / "gdal_data")
        os.environ.pop("GDAL_DRIVER_PATH", None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _use_wheel_data()
    _Parser.json_errors = _asks_for_json(argv)
    args = build_parser().parse_args(_attach_negative_values(argv))
    keep_freed_memory()
    set_published(False)
    cancel = threading.Event()
    # the handlers come first: a signal right after the start line would otherwise end
    # the run with a bare traceback and no error line (one before it: a silent cancel)
    reporter: Reporter = Reporter()
    _install_signals(cancel, lambda: reporter)   # kept to the end: a late signal is a warning
    _watch_parent_pipe()   # after the handlers: before them, its SIGTERM ends the process
    reporter = make_reporter(args.progress)
    func: Callable = args.func
    try:
        _check_names(args)
        result = func(args, reporter, cancel)
        if cancel.is_set():   # it came after the outputs were in place
            reporter.warning("the cancel came after the outputs were complete: they are kept")
        if result is not None:
            reporter.result(**result)
        return 0
    except (Cancelled, KeyboardInterrupt):
        reporter.error("cancelled; no output was written", kind="Cancelled")
        return EXIT_CANCELLED
    except BackendError as exc:
        reporter.error(str(exc), kind=type(exc).__name__)
        return EXIT_ERROR
    except BrokenPipeError:  # stdout closed early (inspect ... | head): the text is cut short
        to_devnull(sys.stdout)
        return 0
    except MemoryError:
        reporter.error("not enough memory for this run (a smaller --tile-size or "
                       "--batch-size needs less)", kind="MemoryError")
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one error line (event), the traceback for a report
        traceback.print_exc(file=sys.stderr)
        reporter.error(f"internal error, please report it with the traceback printed on "
                       f"stderr: {type(exc).__name__}: {first_line(exc)}", kind="InternalError")
        return EXIT_ERROR
    finally:
        reporter.close()
