"""The run under review, and how it is kept in the project so that its review survives
saving and reopening the project (or restarting QGIS).

What the review dock needs of a run (the backend result's areas and probability histogram,
the run's parameters) is written, as a small versioned JSON document, into a custom property
of the run's mask layer: QGIS saves layer custom properties in the project file. Reading
the project back, :func:`saved_review` finds the most recent run whose layers and files are
there and rebuilds its :class:`ReviewRun`; where it cannot, it says why.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsProviderRegistry, QgsRasterLayer
from qgis.PyQt import sip

from .layers import RunLayers, in_qgis_temporary_folder
from .params import PredictParams, SceneInput, output_stem

KEY = "sarflood/review"                      # the run, on its mask layer
THRESHOLD_KEY = "sarflood/review_threshold"  # the threshold in force in the dock
HIDDEN_KEY = "sarflood/review_hidden"  # while the dock hides the water layers: their own ticks
VERSION = 1
# the backend result's fields the dock (and the analyst's messages) use; nothing large
RESULT_KEYS = ("threshold", "water_area_km2", "valid_area_km2", "water_fraction", "valid_pixels",
               "water_pixels", "probability_histogram", "outputs", "model", "model_path", "device",
               "tta", "bands", "units_detected", "units_source", "units_used")
REQUIRED = ("threshold", "water_area_km2", "valid_area_km2", "probability_histogram")


@dataclass
class ReviewRun:
    """One finished run under review."""
    layers: RunLayers
    result: dict[str, Any]
    params: PredictParams
    scene_layer_id: str
    finished: float = field(default_factory=time.time)   # the most recent saved run is reviewed
    # the corrections layer chosen in the dock, by id (a field format 1 may lack: none)
    corrections_layer: str | None = None
    # what the dock calls it; None: its group's name (a dialog run's group is its own)
    title: str | None = None


class SavedReviewProblem(ValueError):
    """A saved review that cannot be taken up again; the message says why."""


def document(run: ReviewRun, title: str) -> str:
    """The JSON that :func:`saved_review` rebuilds ``run`` from."""
    layers = run.layers
    return json.dumps({
        "version": VERSION,
        "title": title,
        "finished": run.finished,
        # the property travels with the layer's style (Paste Style, a default .qml): a copy
        # on another layer names a layer that is not its own, and is not a run
        "mask_layer": layers.mask.id(),
        "probability_layer": _id(layers.probability),
        "uncertainty_layer": _id(layers.uncertainty),
        "scene_layer": run.scene_layer_id,
        "corrections_layer": run.corrections_layer,
        "result": {key: run.result[key] for key in RESULT_KEYS if key in run.result},
        "params": asdict(run.params),
        # another run into the same files changes them (compressed: their size too) while
        # the project is closed; a copied or moved folder keeps sizes, not times
        "file_sizes": {kind: _size(getattr(run.params, kind)) for kind in REVIEWED_FILES},
    }, separators=(",", ":"))


REVIEWED_FILES = ("mask", "probability")


def _size(path: str | None) -> int | None:
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):   # gone, or no probability
        return None


def run_stem(params: PredictParams) -> str:
    """The name a run's layers and derived files (accepted mask, corrections) take: its
    mask's file stem; for a Toolbox run into temporary outputs, which Processing names
    after the parameter (OUTPUT_MASK) whatever the scene, the scene's, as a dialog run's."""
    mask = Path(params.mask)
    if mask.stem == "OUTPUT_MASK" and in_qgis_temporary_folder(mask):
        return f"{output_stem(params.scene.vv)}_water_mask"
    return mask.stem


def _id(layer: QgsRasterLayer | None) -> str | None:
    """A run layer's id; None where it has none or the analyst removed it (the uncertainty
    layer, say: the review goes on without it)."""
    return None if layer is None or sip.isdeleted(layer) else layer.id()


def save(run: ReviewRun, title: str) -> None:
    """Keep ``run`` in its mask layer, so that the project saves it."""
    _keep(run.layers.mask, KEY, document(run, title))


def forget_threshold(layer: QgsRasterLayer) -> None:
    """Drop the threshold (and hidden water layers) an earlier run reviewed on this layer
    left (a layer Processing reuses for the same file): a new run starts at its own, shown."""
    layer.removeCustomProperty(THRESHOLD_KEY)
    layer.removeCustomProperty(HIDDEN_KEY)


def save_threshold(run: ReviewRun, threshold: float) -> None:
    _keep(run.layers.mask, THRESHOLD_KEY, repr(float(threshold)))


def _keep(layer: QgsRasterLayer, key: str, text: str) -> None:
    """A custom property set, and the project marked changed where it is new (setting one
    does not mark it: QGIS would close without asking to save the review)."""
    if layer.customProperty(key) != text:
        layer.setCustomProperty(key, text)
        if layer.project() is not None:
            layer.project().setDirty(True)


def save_hidden(run: ReviewRun, ticks: dict[str, bool] | None) -> None:
    """Keep which run layers were ticked while the dock hides the water layers (``ticks``:
    layer id -> tick), or (None) that they are shown: a project saved with them hidden has
    them unticked, and reopened the dock must know what to give back."""
    mask = run.layers.mask
    if ticks is not None:
        _keep(mask, HIDDEN_KEY, json.dumps(ticks, sort_keys=True))
    elif mask.customProperty(HIDDEN_KEY) is not None:
        mask.removeCustomProperty(HIDDEN_KEY)
        if mask.project() is not None:
            mask.project().setDirty(True)


def saved_hidden(run: ReviewRun) -> dict[str, bool] | None:
    """The run layers' ticks kept while the water layers were hidden; None when they were
    shown (or the property is not one we wrote)."""
    try:
        ticks = json.loads(run.layers.mask.customProperty(HIDDEN_KEY) or "null")
    except (TypeError, ValueError):
        return None
    if not isinstance(ticks, dict) or not all(isinstance(k, str) and isinstance(v, bool)
                                              for k, v in ticks.items()):
        return None
    return ticks


def saved_threshold(run: ReviewRun) -> float | None:
    """The threshold the dock had when the project was saved, if it is one."""
    try:
        value = float(run.layers.mask.customProperty(THRESHOLD_KEY))
    except (TypeError, ValueError):
        return None
    return value if 0 < value < 1 else None


def layer_file(layer) -> str:
    """The file a GDAL raster layer reads (as the project resolved it: a project moved with
    its data reads its files where they are now)."""
    return QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source()).get("path") \
        or layer.source().split("|")[0]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SavedReviewProblem(f"its {what} is not a number")
    return float(value)


def _check_result(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise SavedReviewProblem("it holds no run result")
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise SavedReviewProblem(f"its run result lacks {', '.join(missing)}")
    if not 0 < _number(result["threshold"], "threshold") < 1:
        raise SavedReviewProblem("its threshold is not between 0 and 1")
    for key in ("water_area_km2", "valid_area_km2"):
        _number(result[key], key)
    histogram = result["probability_histogram"]
    if not isinstance(histogram, dict) or not isinstance(histogram.get("edges"), list) \
            or not isinstance(histogram.get("area_km2"), list) \
            or len(histogram["edges"]) != len(histogram["area_km2"]) + 1:
        raise SavedReviewProblem("its probability histogram is malformed")
    for value in histogram["edges"] + histogram["area_km2"]:
        _number(value, "probability histogram")
    return result


def _params(value: Any) -> PredictParams:
    try:
        # fields a later version of format 1 may add are left out
        given = dict(value)
        values = {f.name: given[f.name] for f in fields(PredictParams) if f.name in given}
        scene = values.pop("scene")
        scene = SceneInput(**{f.name: scene[f.name] for f in fields(SceneInput) if f.name in scene})
        if scene.bands is not None:
            scene.bands = tuple(int(b) for b in scene.bands)
        params = PredictParams(scene=scene, **values)
        if params.extent is not None:
            params.extent = tuple(float(v) for v in params.extent)
    except (TypeError, ValueError, KeyError) as exc:
        raise SavedReviewProblem(f"its run parameters are malformed ({exc})") from None
    if not isinstance(params.mask, str) or not isinstance(scene.vv, str):
        raise SavedReviewProblem("its run parameters are malformed")
    return params


def parse(text: Any) -> dict[str, Any]:
    """The saved document, checked; :class:`SavedReviewProblem` says what is wrong."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SavedReviewProblem(f"its saved review is not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SavedReviewProblem("its saved review is not readable (not a JSON object)")
    version = doc.get("version")
    if version != VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
            raise SavedReviewProblem(f"it was saved by a newer SAR Flood Mapper (review format "
                                     f"{version}; this version reads format {VERSION})")
        raise SavedReviewProblem(f"its saved review has an unknown format ({version!r}; this "
                                 f"version reads format {VERSION})")
    _check_result(doc.get("result"))
    doc["params"] = _params(doc.get("params"))
    doc["finished"] = _number(doc.get("finished"), "save time")
    for key in ("probability_layer", "uncertainty_layer", "scene_layer", "corrections_layer", "title"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise SavedReviewProblem(f"its {key.replace('_', ' ')} is malformed")
    sizes = doc.setdefault("file_sizes", {})   # saved before sizes were kept: none to compare
    if not isinstance(sizes, dict) or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, int)) for v in sizes.values()):
        raise SavedReviewProblem("its file sizes are malformed")
    return doc


def _rebuild(mask: QgsRasterLayer, doc: dict[str, Any], project: QgsProject) -> ReviewRun:
    """The run of ``doc`` on the project's layers, or why it cannot be reviewed there."""
    found = {}
    for kind in ("probability", "uncertainty"):
        layer_id = doc.get(f"{kind}_layer")
        layer = project.mapLayer(layer_id) if layer_id else None
        if layer_id and kind == "probability" and layer is None:
            raise SavedReviewProblem("its probability layer was removed from the project")
        found[kind] = layer if isinstance(layer, QgsRasterLayer) else None
    params = doc["params"]
    # the files as the project read them, which may have moved with it
    params.mask = layer_file(mask)
    scene = project.mapLayer(doc.get("scene_layer") or "")   # the VV/VH file, or the VV one
    if isinstance(scene, QgsRasterLayer):   # (Accept must not write over it where it is now)
        params.scene.vv = layer_file(scene)
    for kind in ("probability", "uncertainty"):
        if found[kind] is not None:
            setattr(params, kind, layer_file(found[kind]))
    for kind, layer in (("mask", mask), ("probability", found["probability"])):
        if layer is None:
            continue
        path = getattr(params, kind)
        if not Path(path).is_file():
            raise SavedReviewProblem(f"its {kind} file is missing: {path}")
        if not layer.isValid():
            raise SavedReviewProblem(f"its {kind} file cannot be read: {path}")
        saved = doc["file_sizes"].get(kind)
        if saved is not None and _size(path) != saved:
            raise SavedReviewProblem(f"its {kind} file changed since the review was saved "
                                     f"(written again by another run?): {path}; run the "
                                     f"scene again to review it")
    root = project.layerTreeRoot()
    node = root.findLayer(mask.id())
    parent = node.parent() if node is not None else None
    group = parent if parent is not None and parent is not root and parent.name() else None
    if group is None:
        group = root.findGroup(doc.get("title") or "") or root
    layers = RunLayers(group, mask, found["probability"], found["uncertainty"])
    return ReviewRun(layers, dict(doc["result"]), params, doc.get("scene_layer") or "", doc["finished"],
                     doc.get("corrections_layer") or None, doc.get("title") or None)


@dataclass
class SavedReview:
    """What a project holds of saved reviews: the run to take up (the most recent that can
    be), and why those more recent than it (or all, if none can) cannot, as (title, why)."""
    run: ReviewRun | None
    title: str
    problems: list[tuple[str, str]]

    def why_not(self) -> str:
        """The problems in words."""
        if len(self.problems) == 1 and self.run is None:
            return self.problems[0][1]
        return "; ".join(f"'{title}': {why}" for title, why in self.problems)


def saved_review(project: QgsProject | None = None) -> SavedReview | None:
    """The review the project keeps, or None if it keeps none."""
    project = project or QgsProject.instance()
    candidates: list[tuple[float, str, QgsRasterLayer, dict | None, str | None]] = []
    for layer in project.mapLayers().values():
        text = layer.customProperty(KEY)
        if text is None or not isinstance(layer, QgsRasterLayer):
            continue
        try:
            doc = parse(text)
            if doc.get("mask_layer") != layer.id():
                continue   # a copy that came with a pasted style: another layer's run
            candidates.append((doc["finished"], doc.get("title") or layer.name(), layer, doc, None))
        except SavedReviewProblem as problem:   # no trusted time: reported whatever is reviewed
            candidates.append((math.inf, layer.name(), layer, None, str(problem)))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0], reverse=True)
    problems: list[tuple[str, str]] = []
    for _finished, title, layer, doc, problem in candidates:
        if doc is not None:
            try:
                return SavedReview(_rebuild(layer, doc, project), title, problems)
            except SavedReviewProblem as why:
                problem = str(why)
        problems.append((title, problem))
    return SavedReview(None, candidates[0][1], problems)
