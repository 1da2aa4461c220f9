"""The review dock: check a run on the map, tune the threshold, and accept the final mask.

Everything here is display or a hand-off: the threshold slider restyles the
probability layer (no re-run) and reads the area off the backend's histogram;
statistics per polygon run the ``sarflood:zonalwater`` algorithm; Accept runs
``python -m backend finalize`` (which writes the provenance tags and burns in the
analyst's correction polygons) and, if asked, ``sarflood:vectorize``. Long steps are
QGIS tasks, so the map stays responsive.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from qgis.core import (Qgis, QgsApplication, QgsMapLayerProxyModel, QgsProcessingAlgRunnerTask,
                       QgsProcessingContext, QgsProcessingFeedback, QgsProcessingUtils, QgsProject,
                       QgsVectorLayer, QgsWkbTypes)
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox, QgsScrollArea
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox,
                                 QHBoxLayout, QLabel, QMessageBox, QPushButton, QSlider, QVBoxLayout,
                                 QWidget)

from .. import styles
from ..backend_process import Outcome
from ..corrections import (FIELD, CorrectionsProblem, new_corrections_file, new_corrections_layer,
                           sidecar_path, written_by_plugin)
from ..layers import (LayerError, ProjectWatch, ReleasedLayers, add_styled_raster,
                      in_qgis_temporary_folder, private_copy, remove_layers_of, run_layer_nodes)
from ..outputs import file_state, recover_aside, remove_stale, set_aside, settle
from ..params import FinalizeParams, dataset_file, free_output_paths
from ..review_run import (ReviewRun, run_stem, save, save_hidden, save_threshold, saved_hidden,
                          saved_review, saved_threshold)
from ..settings import python_setting
from ..summary import area_text, valid_area, water_area_at
from ..task import BackendTask, CorrectionsTask, add_task
from .message_text import MessageText, push_message

STEPS = 100  # slider steps: thresholds 0.01 .. 0.99, the histogram's bin edges
REMOVED = "The run's layers were removed from the project: map again to review"
# what the dock knows of a run (its result, histogram, parameters) is kept in the project
# (review_run.py): a project saved and opened again takes the review up where it was
ENDED = ("The review ended with its project (closed, or another one opened); opening that "
         "project again, once saved, takes it up again")
ELSEWHERE = ("To review, map again, or use the SAR Flood Mapper Processing algorithms on the "
             "layers (correct a mask, water statistics per polygon, mask to polygons)")
PROJECT_CHANGED = "the project was closed or another one opened meanwhile"
# message bar levels of an Accept's end: files written; written with a warning, or not all
# of them, or not added to the map; nothing written
WRITTEN, WARNED, FAILED = (Qgis.MessageLevel.Success, Qgis.MessageLevel.Warning,
                           Qgis.MessageLevel.Critical)
OVERLAP = "where corrections overlap, the one drawn last wins"


def decimals_of(threshold: float) -> int:
    """Decimals that show ``threshold`` exactly (2 to 6): a model's calibrated default
    (0.437) need not lie on the slider's 0.01 grid."""
    return next((d for d in range(2, 6) if abs(round(threshold, d) - threshold) < 1e-12), 6)


def lasting_folder(mask: Path) -> Path:
    """Where the final mask goes unless the analyst chooses: beside the run's mask, except
    when that lies in QGIS's temporary folder (a run with temporary files), which QGIS
    deletes on exit: then the project's folder, or the home folder for an unsaved project."""
    if not in_qgis_temporary_folder(mask):
        return mask.parent
    home = QgsProject.instance().homePath()
    return Path(home) if home else Path.home()


def _file_states(run: ReviewRun) -> dict[str, tuple[int, int] | None]:
    """The states of the run's mask and probability files (no probability: None): what
    Accept reads must be what the dock showed."""
    return {path: file_state(path) for path in (run.params.mask, run.params.probability)}


def _failed(outcome: Outcome) -> str:
    """'failed: why', or 'cancelled' (a child stopped before it could say why has no error)."""
    return "cancelled" if outcome.cancelled else f"failed: {outcome.error or 'no reason given'}"


def _stale_companions(path: str, polygons: str | None, fixes: str | None) -> list[str]:
    """The polygons (.gpkg) and corrections (.corrections.geojson) an earlier Accept wrote
    beside the mask at ``path`` that this one does not write again: once the mask is
    replaced they no longer match it."""
    if not Path(path).exists():
        return []
    gpkg, sidecar = (str(Path(path).with_suffix(s)) for s in (".gpkg", ".corrections.geojson"))
    stale = [gpkg] if polygons is None and Path(gpkg).exists() else []
    if fixes != sidecar and written_by_plugin(sidecar):
        stale.append(sidecar)
    return stale


def _undo_interrupted(path: str, sidecar: str) -> list[str]:
    """Undo what an Accept to the mask at ``path`` left when QGIS died while its backend
    ran (the dock's own failure path undoes it otherwise): the backend's hidden files, then
    the corrections at ``sidecar`` it set aside, put back unless the mask is the one made
    from the polygons there. What was done, in words."""
    return remove_stale(path) + recover_aside(sidecar, path)


def _remove_stale(stale: list[str]) -> tuple[str, bool]:
    """Remove the files of the mask replaced and their layers; what the status says of it,
    and whether that is a warning."""
    removed, failed = [], []
    for path in stale:
        remove_layers_of(path)
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{path} ({exc.strerror or exc})")
    text = f"; removed {', '.join(removed)}, of the mask replaced" if removed else ""
    if failed:
        text += f"; warning: could not remove {', '.join(failed)}, which no longer match the mask"
    return text, bool(failed)


class ReviewDock(QgsDockWidget):

    def __init__(self, iface, parent: QWidget | None = None):
        super().__init__("SAR Flood review", parent)
        self.setObjectName("SarFloodReviewDock")
        self.iface = iface
        self.run: ReviewRun | None = None
        self._files_seen: dict[str, tuple[int, int] | None] = {}   # the run's files as reviewed
        self._run_title = ""   # the run's title, as its saved review has it
        # the threshold in force: the run's own, exactly, until the analyst moves the slider
        self.threshold_value = 0.5
        self._busy: list[tuple] = []  # (task, and what it needs alive), until each finishes
        self._unloading = False  # set by cancel_tasks: finished work starts no next step
        # an Accept's layers taken out of the project while it replaces their files, with the
        # project count it started under: put back should the plugin be unloaded meanwhile
        self._released: list[tuple[ReleasedLayers, int]] = []
        # while "Show the water layers" is unticked: each run layer's own tick, put back after
        self._hidden: dict[str, bool] = {}
        self._dropped = ""   # why there is no run, when it went with its project (closed, reopened)
        # masks the dock made for statistics at thresholds other than the run's, in a temporary
        # folder of its own: reused while the run is reviewed (a full scene's mask is large),
        # removed when the review moves on, or, if statistics still read one, once they end
        self._mask_folder: str | None = None
        self._masks: dict[float, tuple[str, tuple[int, int] | None]] = {}  # threshold: file, state
        self._reading: list[str | None] = []   # the mask folder of each statistics running
        self.project_watch = ProjectWatch()
        self.project_watch.changed.connect(self._project_changed)
        QgsProject.instance().layersRemoved.connect(self._layers_removed)
        # after project_watch's: a project read ends the review of the one before it first
        QgsProject.instance().readProject.connect(self._project_read)
        body = QWidget()
        layout = QVBoxLayout(body)
        # what a model card, a project or the backend says: plain text, wrapped anywhere (a
        # Sentinel-1 product name has no space to break at)
        self.title = MessageText("No run yet: map flood water first.", max_lines=4)
        layout.addWidget(self.title)
        layout.addWidget(self._threshold_box())
        layout.addWidget(self._display_box())
        layout.addWidget(self._stats_box())
        layout.addWidget(self._accept_box())
        self.status = MessageText(max_lines=8)
        layout.addWidget(self.status)
        layout.addStretch()
        # a dock shares the main window's height with the other panels: scrolled, its
        # content does not set a minimum height of its own on the whole window
        area = QgsScrollArea()
        area.setWidget(body)
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidget(area)
        self._set_enabled(False)
        self.take_up_saved_review()   # the plugin loaded with a project open

    # --- building -------------------------------------------------------------------------

    def _threshold_box(self) -> QGroupBox:
        box = QGroupBox("Threshold")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(1, STEPS - 1)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setSingleStep(0.01)
        self.threshold.setDecimals(2)
        # a typed value is taken when Enter or leaving the box ends it: set_threshold writes
        # the value back, which per keystroke turned the '0.3' of 0.35 into '0.30' and
        # refused the '5'
        self.threshold.setKeyboardTracking(False)
        row.addWidget(self.slider)
        row.addWidget(self.threshold)
        layout.addLayout(row)
        self.area = QLabel("")
        self.area.setWordWrap(True)
        layout.addWidget(self.area)
        # before any run: the threshold most models default to, not the slider's bottom end
        self.slider.setValue(round(self.threshold_value * STEPS))
        self.threshold.setValue(self.threshold_value)
        self.slider.valueChanged.connect(lambda v: self.threshold.setValue(v / STEPS))
        self.threshold.valueChanged.connect(self.set_threshold)
        return box

    def _display_box(self) -> QGroupBox:
        box = QGroupBox("Display")
        form = QFormLayout(box)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(100)
        self.opacity.valueChanged.connect(self.set_opacity)
        self.show_water = QCheckBox("Show the water layers")
        self.show_water.setToolTip("Untick to see the radar image under them")
        self.show_water.setChecked(True)
        self.show_water.toggled.connect(self.set_water_visible)
        form.addRow("Water opacity", self.opacity)
        form.addRow(self.show_water)
        return box

    def _stats_box(self) -> QGroupBox:
        box = QGroupBox("Statistics per polygon")
        layout = QHBoxLayout(box)
        self.zones = QgsMapLayerComboBox()
        self.zones.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        # chosen, not the first polygon layer to appear: after *New* that was the corrections
        self.zones.setAllowEmptyLayer(True)
        self.zones.setLayer(None)
        self.zones.setToolTip("A polygon layer of the project (districts, fields...): water "
                              "area per polygon at the threshold above")
        self.stats_button = QPushButton("Compute")
        self.stats_button.clicked.connect(self.compute_statistics)
        layout.addWidget(self.zones, 1)
        layout.addWidget(self.stats_button)
        return box

    def _accept_box(self) -> QGroupBox:
        box = QGroupBox("Accept")
        form = QFormLayout(box)
        self.final_path = QgsFileWidget()
        self.final_path.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.final_path.setFilter("GeoTIFF (*.tif)")
        self.polygons = QCheckBox("Also write water polygons")
        self.polygons.setToolTip("A GeoPackage beside the final mask, of the same name")
        self.polygons.toggled.connect(lambda on: self.min_area.setEnabled(on and self.polygons.isEnabled()))
        self.min_area = QDoubleSpinBox()
        self.min_area.setRange(0, 1e9)
        self.min_area.setDecimals(0)
        self.min_area.setSuffix(" m²")
        self.min_area.setValue(1000)
        self.accept_button = QPushButton("Accept: write the final mask")
        self.accept_button.clicked.connect(self.accept_map)
        self.corrections = QgsMapLayerComboBox()
        self.corrections.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.corrections.setAllowEmptyLayer(True)
        self.corrections.setLayer(None)
        self.corrections.setToolTip(f"Polygons drawn where the mask is wrong; field '{FIELD}': "
                                    f"1 water, 0 dry. Burnt into the final mask; {OVERLAP}.")
        self.corrections.layerChanged.connect(self._corrections_changed)
        self.new_corrections = QPushButton("New")
        self.new_corrections.setToolTip("A new polygon layer to draw corrections in")
        self.new_corrections.clicked.connect(self.start_corrections)
        row = QHBoxLayout()
        row.addWidget(self.corrections, 1)
        row.addWidget(self.new_corrections)
        form.addRow("Final mask", self.final_path)
        form.addRow("Corrections", row)
        form.addRow(self.polygons)
        form.addRow("Smallest polygon", self.min_area)
        form.addRow(self.accept_button)
        return box

    def _set_enabled(self, on: bool) -> None:
        for widget in (self.slider, self.threshold, self.opacity, self.show_water, self.zones,
                       self.stats_button, self.final_path, self.corrections, self.new_corrections,
                       self.polygons, self.accept_button):
            widget.setEnabled(on)
        self.min_area.setEnabled(on and self.polygons.isChecked())

    def _reviewable(self) -> bool:
        """Whether the threshold, statistics and Accept can work on the run under review."""
        return self._alive() and self.run.layers.probability is not None

    def detach(self) -> None:
        """Stop following the project (the plugin is being unloaded): the masks the dock made
        go, the statistics that read them having been cancelled (:meth:`cancel_tasks`)."""
        for folder in {self._mask_folder, *self._reading} - {None}:
            shutil.rmtree(folder, ignore_errors=True)
        self._mask_folder, self._masks, self._reading = None, {}, []
        self.project_watch.close()
        project = QgsProject.instance()
        for signal, slot in ((project.layersRemoved, self._layers_removed),
                             (project.readProject, self._project_read)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass

    # --- the run under review -----------------------------------------------------------------

    def set_run(self, run: ReviewRun) -> None:
        if not self.show_water.isChecked():   # the run before gets its hidden layers' ticks back
            self.set_water_visible(True)
        previous, self.run = self.run, run
        self._retire_masks()
        self._files_seen = _file_states(run)
        self._hidden = {}
        self._dropped = ""
        self._set_enabled(run.layers.probability is not None)
        self.show_water.setEnabled(True)
        self.opacity.setEnabled(True)
        title = run.title or run.layers.group.name() or run.layers.mask.name()
        self.title.setText(title)
        self._run_title = title
        folder = lasting_folder(Path(run.params.mask))
        self.final_path.setFilePath(free_output_paths(str(folder), run_stem(run.params),
                                                      ["accepted"])["accepted"])
        self.threshold_value = float(run.result["threshold"])
        # as the new layers are: at the run's threshold, opaque, shown; set without the
        # signals that would restyle them
        widgets = (self.threshold, self.slider, self.opacity, self.show_water)
        for widget in widgets:
            widget.blockSignals(True)
        self.threshold.setDecimals(decimals_of(self.threshold_value))
        # a run's own threshold may lie past the slider's 0.01 .. 0.99 (Processing's
        # THRESHOLD, a card's default): shown as it is, not clamped to what it is not
        self.threshold.setRange(min(1 / STEPS, self.threshold_value),
                                max(1 - 1 / STEPS, self.threshold_value))
        self.threshold.setValue(self.threshold_value)
        self.slider.setValue(round(self.threshold_value * STEPS))
        self.opacity.setValue(100)
        self.show_water.setChecked(True)
        for widget in widgets:
            widget.blockSignals(False)
        self._show_area()
        self.show_status("")
        fixes = self.corrections.currentLayer()
        if (fixes is not None and previous is not None
                and previous.params.scene.files() != run.params.scene.files()):
            # drawn on another scene: burnt into this one only if the analyst chooses it again
            self.corrections.setLayer(None)   # (and the area label says so no more)
            self.show_status(f"Corrections: '{fixes.name()}' was drawn on the previous scene; "
                             f"choose it again if it applies to this one")
        fixes = self.corrections.currentLayer()
        run.corrections_layer = fixes.id() if fixes is not None else None
        save(run, title)   # in the project, for when it is saved and opened again

    def review_processing_run(self, run: ReviewRun) -> None:
        """A sarflood:mapwater run that Processing loaded into the project (the Toolbox, batch
        mode, a model): reviewed as a run of the dialog is."""
        if sip.isdeleted(self):
            return
        self.set_run(run)
        self.show()
        if not self.status.text():   # set_run's word on the corrections layer stays
            self.show_status(f"Processing run under review: {self._run_title}")

    def _corrections_changed(self, layer) -> None:
        """The corrections layer chosen: said by the area, and kept in the saved review."""
        self._show_area()
        if self._alive():
            self.run.corrections_layer = layer.id() if layer is not None else None
            save(self.run, self._run_title)

    def _alive(self) -> bool:
        """False once any of the run's layers was removed from the project."""
        if self.run is None:
            return False
        layers = [self.run.layers.mask, self.run.layers.probability]
        return all(not sip.isdeleted(layer) and QgsProject.instance().mapLayer(layer.id()) is not None
                   for layer in layers if layer is not None)

    def _gone(self) -> str:
        """Why there is no run to work on."""
        if self._dropped:
            return self._dropped
        if self.run is None:
            return "No run yet: map flood water first"
        return REMOVED

    def _layers_removed(self, _ids) -> None:
        """The analyst removed layers: if the run's were among them, nothing can be reviewed
        any more, and the controls say so."""
        if sip.isdeleted(self) or self.run is None or self._alive():
            return
        self._retire_masks()
        self._set_enabled(False)
        self.area.setText("")   # an area of layers no longer there read as current
        self.show_status(self._gone(), error=True)
        if self._at_run_threshold():
            return
        mask = self.run.layers.mask   # hidden while the probability drew a moved threshold
        if not sip.isdeleted(mask) and QgsProject.instance().mapLayer(mask.id()) is not None:
            self._tick(mask, True)   # the run's own mask is what the map can still show
        probability = self.run.layers.probability
        # drawn as two classes at a threshold no control can move any more: its own style back
        if (probability is not None and not sip.isdeleted(probability)
                and QgsProject.instance().mapLayer(probability.id()) is not None):
            renderer = styles.probability_renderer(probability.dataProvider())
            renderer.setOpacity(self.opacity.value() / 100)
            probability.setRenderer(renderer)
            probability.triggerRepaint()

    def _project_changed(self) -> None:
        """The project was cleared or another one read: the run under review went with it
        (a project read then takes up the review it holds: :meth:`_project_read`)."""
        if sip.isdeleted(self) or self.run is None:
            return
        self._drop(ENDED)

    def _drop(self, why: str) -> None:
        self.run = None
        self._retire_masks()
        self._hidden = {}
        self._dropped = why
        self._set_enabled(False)
        self.title.setText("No run under review")
        self.area.setText("")
        self.show_status(why, error=why != ENDED)

    def _project_read(self, *_args) -> None:
        if not sip.isdeleted(self):
            self.take_up_saved_review()

    def take_up_saved_review(self) -> None:
        """Review the run the project keeps (the most recent one whose layers and files are
        there), as it was when the project was saved; or say why none can be."""
        saved = saved_review()
        if saved is None:
            return
        if saved.run is None:
            said = (f"The review of '{saved.title}' cannot be taken up in this project"
                    if len(saved.problems) == 1 else
                    "None of the reviews saved in this project can be taken up")
            self._drop(f"{said}: {saved.why_not()}. {ELSEWHERE}")
            return
        run = saved.run
        # the corrections layer chosen when it was saved, if the project has it still (set_run
        # keeps it: there is no previous run, and the review saved again is the same)
        fixes = QgsProject.instance().mapLayer(run.corrections_layer or "")
        unreadable = isinstance(fixes, QgsVectorLayer) and not fixes.isValid()
        if unreadable or not isinstance(fixes, QgsVectorLayer) or \
                fixes.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
            fixes = None
        self.corrections.blockSignals(True)
        self.corrections.setLayer(fixes)
        self.corrections.blockSignals(False)
        self.set_run(run)
        # the dock as the project's layers were saved: the threshold in force, the opacity
        opacity = round(run.layers.mask.renderer().opacity() * 100) if run.layers.mask.renderer() else 100
        self.opacity.blockSignals(True)
        self.opacity.setValue(opacity)
        self.opacity.blockSignals(False)
        hidden = saved_hidden(run)
        if hidden is not None:   # saved with the water layers hidden: their ticks to give back
            self.show_water.blockSignals(True)
            self.show_water.setChecked(False)
            self.show_water.blockSignals(False)
            self._hidden = hidden
        threshold = saved_threshold(run)
        if threshold is not None and run.layers.probability is not None:
            self.threshold.setValue(threshold)
        text = f"Review taken up from the project: {saved.title}"
        if unreadable:   # Accept would have burnt no corrections, without a word
            text += (f"; its corrections layer cannot be read ({run.corrections_layer}: its "
                     "file moved or deleted?): repair its source and choose it again")
        if saved.problems:   # more recent ones that could not be
            text += f"; not taken up: {saved.why_not()}"
        self.show_status(text, error=bool(saved.problems) or unreadable)

    def set_threshold(self, shown: float) -> None:
        """Restyle the probability layer at the threshold shown and update the area; no re-run.

        The run's own threshold, shown rounded, stays exact; any other is put on the 0.01
        grid of the backend's histogram, from which its area is read."""
        if not self._reviewable():
            self.show_status(self._gone(), error=True)
            return
        run_value = float(self.run.result["threshold"])
        if abs(shown - round(run_value, self.threshold.decimals())) < 1e-9:
            value = run_value
        else:
            value = round(shown * STEPS) / STEPS
            if abs(value - shown) > 1e-9:   # typed into a box with the run's finer decimals
                self.show_status(f"Threshold: {shown:g} lies between the 0.01 steps the area "
                                 f"is read from; {value:g} is used")
        self.threshold_value = value
        save_threshold(self.run, value)
        for widget, position in ((self.slider, round(value * STEPS)), (self.threshold, value)):
            widget.blockSignals(True)
            widget.setValue(position)
            widget.blockSignals(False)
        layers = self.run.layers
        probability = layers.probability
        at_run = self._at_run_threshold()
        if at_run:   # the run's mask shows again; the probability layer gets its own style back
            renderer = styles.probability_renderer(probability.dataProvider())
        else:
            renderer = styles.threshold_renderer(probability.dataProvider(), value)
        renderer.setOpacity(self.opacity.value() / 100)
        probability.setRenderer(renderer)
        probability.triggerRepaint()
        self._tick(layers.mask, at_run)
        self._tick(probability, not at_run)
        self._show_area()

    def _tick(self, layer, on: bool) -> None:
        """Tick or untick a run layer in the legend, wherever the analyst moved it; while the
        water layers are hidden, what it gets when they are shown again."""
        if not self.show_water.isChecked():
            self._hidden[layer.id()] = on
            save_hidden(self.run, self._hidden)
            return
        node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
        if node is not None:
            node.setItemVisibilityChecked(on)

    def _at_run_threshold(self) -> bool:
        """Whether the threshold in force is the one the run's own mask was made at."""
        return abs(self.threshold_value - float(self.run.result["threshold"])) < 1e-9

    def _threshold_text(self) -> str:
        return f"{self.threshold_value:.{self.threshold.decimals()}f}"

    def _show_area(self) -> None:
        """The area at the dock's threshold: the run's own at its threshold, else read off
        its probability histogram. Corrections count only once Accept burns them in, and
        the label says so."""
        if self.run is None:
            return
        result, value = self.run.result, self.threshold_value
        if self._at_run_threshold():
            text = area_text(float(result["water_area_km2"]), float(result["valid_area_km2"]))
        else:
            histogram = result["probability_histogram"]
            text = area_text(water_area_at(histogram, value), valid_area(histogram))
        if self.corrections.currentLayer() is not None:
            text += " (before corrections: Accept applies them)"
        self.area.setText(text)

    def set_opacity(self, percent: int) -> None:
        if not self._alive():
            return
        for layer in (self.run.layers.mask, self.run.layers.probability):
            if layer is not None:
                layer.renderer().setOpacity(percent / 100)
                layer.triggerRepaint()

    def set_water_visible(self, visible: bool) -> None:
        """Hide the run's layers (the radar image shows), or show them again as they were.

        The layers themselves, found by id wherever they are in the legend: the analyst may
        have moved them out of the run's group, or deleted it."""
        if self.run is None:
            return
        for node in run_layer_nodes(self.run.layers):
            if visible:
                if self._hidden.pop(node.layerId(), False):
                    # as ticking it in the legend does: its groups too, or it stays unseen
                    node.setItemVisibilityCheckedParentRecursive(True)
            else:
                self._hidden.setdefault(node.layerId(), node.itemVisibilityChecked())
                node.setItemVisibilityChecked(False)
        if visible:
            self._hidden = {}
        if not sip.isdeleted(self.run.layers.mask):   # (removed from the project: nothing to keep)
            save_hidden(self.run, None if visible else self._hidden)

    # --- statistics per polygon ---------------------------------------------------------------

    def _rewritten(self, what: str) -> bool:
        """Whether another run (a Processing one, say) wrote the reviewed files again since
        the review began; if so the status says so, starting with ``what``."""
        rewritten = [f for f, now in _file_states(self.run).items()   # a file gone fails later
                     if now is not None and now != self._files_seen.get(f)]
        if rewritten:
            self.show_status(f"{what}: {', '.join(rewritten)} changed since this review began "
                             f"(written again by another run?): the map and the area no longer "
                             f"show it; run the scene again to review it", error=True)
        return bool(rewritten)

    def compute_statistics(self) -> None:
        zones = self.zones.currentLayer()
        if not self._reviewable():
            self.show_status(f"Statistics: {self._gone()}", error=True)
            return
        if self._rewritten("Statistics"):
            return
        if zones is None:
            self.show_status("Statistics: choose a polygon layer (for example admin areas)", error=True)
            return
        self.stats_button.setEnabled(False)
        threshold = self._threshold_text()   # the slider may move while the mask is made
        started = self.project_watch.count
        # the polygons as they are now, in a layer of the task's own (see _run_algorithm): the
        # analyst may edit or remove the zones layer while the mask is made and counted
        polygons = private_copy(zones)
        # its mask is kept until these statistics end, though the review may move on meanwhile
        folder = None if self._at_run_threshold() else self._masks_folder()
        self._reading.append(folder)
        self.with_mask_at_threshold(lambda mask: self._run_algorithm(
            "sarflood:zonalwater", {"POLYGONS": polygons, "MASK": mask, "OUTPUT": "memory:"},
            lambda *done: self._statistics_done(folder, threshold, started, *done)))

    def _statistics_done(self, folder: str | None, threshold: str, started: int, ok: bool,
                         results: dict, context: QgsProcessingContext, error: str) -> None:
        self._done_reading(folder)
        self.stats_button.setEnabled(self._reviewable())
        if started != self.project_watch.count:
            self.show_status(f"Statistics: not added, {PROJECT_CHANGED}", error=True)
            return
        if not ok:
            self.show_status(f"Statistics failed: {error}", error=True)
            return
        layer = context.takeResultLayer(results["OUTPUT"])
        layer.setName(f"water per polygon (threshold {threshold})")
        QgsProject.instance().addMapLayer(layer)
        before = " (before corrections)" if self.corrections.currentLayer() is not None else ""
        self.show_status(f"Statistics: {layer.featureCount()} polygons, fields valid_px, water_px, "
                         f"water_frac, water_km2{before}")

    def with_mask_at_threshold(self, then: Callable[[str], None]) -> None:
        """Call ``then(mask path)`` with a mask at the current threshold: the run's, the one
        the dock made before at this threshold if it is there as written, or a new one."""
        if self._at_run_threshold():
            then(self.run.params.mask)
            return
        value, text = self.threshold_value, self._threshold_text()
        made = self._masks.get(value)
        if made is not None and file_state(made[0]) == made[1]:
            then(made[0])
            return
        folder = self._masks_folder()
        mask = str(Path(folder) / f"mask_{text}.tif")
        # overwrite: a mask made before at this threshold and changed since is made again
        params = FinalizeParams(self.run.params.probability, value, mask, overwrite=True)

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                if folder == self._mask_folder:   # (else the review moved on: not for reuse)
                    self._masks[value] = (mask, file_state(mask))
                then(mask)
            else:
                self._done_reading(folder)
                self.stats_button.setEnabled(self._reviewable())
                self.show_status(f"Mask at {text} {_failed(outcome)}", error=True)

        self._start_backend("SAR Flood Mapper: mask at threshold", params.argv(), done)

    def _masks_folder(self) -> str:
        """The temporary folder of the masks the dock makes for the run under review."""
        if self._mask_folder is None:
            self._mask_folder = tempfile.mkdtemp(prefix="sarflood-review-",
                                                 dir=QgsProcessingUtils.tempFolder())
        return self._mask_folder

    def _retire_masks(self) -> None:
        """The review moved on: the masks the dock made for it are not used again, and go
        now unless statistics still read them."""
        folder, self._mask_folder, self._masks = self._mask_folder, None, {}
        if folder is not None and folder not in self._reading:
            shutil.rmtree(folder, ignore_errors=True)

    def _done_reading(self, folder: str | None) -> None:
        """Statistics that read a mask in ``folder`` ended: a folder of a review gone goes."""
        self._reading.remove(folder)
        if folder is not None and folder != self._mask_folder and folder not in self._reading:
            shutil.rmtree(folder, ignore_errors=True)

    # --- accept ---------------------------------------------------------------------------------

    def confirm_overwrite(self, paths: list[str]) -> bool:
        answer = QMessageBox.question(self, "Replace files?",
                                      "These files exist and will be replaced:\n" + "\n".join(paths))
        return answer == QMessageBox.StandardButton.Yes

    def start_corrections(self) -> None:
        """Add an empty corrections layer in the mask's CRS, in the run's group, and open it
        for drawing: a new GeoPackage beside the mask, which the project keeps; where that
        folder cannot be written, a temporary layer, as the status says."""
        if not self._alive():
            self.show_status(f"Corrections: {self._gone()}", error=True)
            return
        crs = self.run.layers.mask.crs()
        path = free_output_paths(str(lasting_folder(Path(self.run.params.mask))),
                                 run_stem(self.run.params), ["corrections"], ".gpkg")["corrections"]
        try:
            layer = new_corrections_file(path, crs)
            kept = f"Corrections: new layer in {path} (save its edits to keep them). "
            temporary = False
        except CorrectionsProblem as problem:
            layer = new_corrections_layer(crs)
            kept = (f"Corrections: a temporary layer, not saved with the project (Make Permanent "
                    f"keeps it): {problem}. ")
            temporary = True
        project = QgsProject.instance()
        project.addMapLayer(layer, False)
        # beside the mask, in the run's group (or where the analyst moved the mask)
        node = project.layerTreeRoot().findLayer(self.run.layers.mask.id())
        parent = node.parent() if node is not None and node.parent() is not None else project.layerTreeRoot()
        parent.insertLayer(0, layer)
        layer.startEditing()
        self.corrections.setLayer(layer)
        self.iface.setActiveLayer(layer)
        self.show_status(kept + f"Draw polygons where the mask is wrong and set '{FIELD}' to 1 "
                         f"(water) or 0 (dry) for each ({OVERLAP}); Accept burns them into the "
                         "final mask.",
                         error=temporary)

    def accept_map(self) -> None:
        """Write the mask at the chosen threshold with provenance tags and the analyst's
        corrections, then optional polygons."""
        if not self._reviewable():
            self.show_status(f"Accept: {self._gone()}", error=True)
            return
        path = self.final_path.filePath().strip()
        if not path:
            self.show_status("Accept: choose where to write the final mask", error=True)
            return
        if path.endswith(("/", os.sep)) or Path(path).is_dir():
            self.show_status(f"Accept: {path} is a folder; give the final mask a file name",
                             error=True)
            return
        if not Path(path).is_absolute():   # QGIS's working folder is nothing the analyst sees
            path = str(lasting_folder(Path(self.run.params.mask)) / path)
        if not path.lower().endswith((".tif", ".tiff")):
            path += ".tif"
        if not Path(path).parent.is_dir():   # said of the mask, not of the first file written
            self.show_status(f"Accept: {path}: the folder {Path(path).parent} does not exist; "
                             f"choose another", error=True)
            return
        run, threshold, threshold_text = self.run, self.threshold_value, self._threshold_text()
        p = run.params
        polygons = str(Path(path).with_suffix(".gpkg")) if self.polygons.isChecked() else None
        fixes_layer = self.corrections.currentLayer()
        # replacing one of these would lose the scene (a GeoPackage's tables too), a layer
        # under review or the analyst's corrections
        in_use = {os.path.realpath(dataset_file(f)) for f in (
            p.scene.vv, p.scene.vh, p.mask, p.probability, p.uncertainty,
            fixes_layer.source().split("|")[0] if fixes_layer is not None else None) if f}
        for written in (path, polygons):
            if written and os.path.realpath(written) in in_use:
                self.show_status(f"Accept: {written} is this run's input, one of its layers or "
                                 f"its corrections; choose another file", error=True)
                return
        if self._rewritten("Accept"):
            return
        if fixes_layer is not None and not fixes_layer.isValid():   # its file moved or deleted
            self.show_status(f"Accept: the corrections layer '{fixes_layer.name()}' cannot be read "
                             f"({fixes_layer.source()}); repair its source, or choose no "
                             f"corrections layer", error=True)
            return
        # kept beside the mask, which names it in its SARFLOOD_CORRECTIONS tag; never over
        # the chosen layer's own file or a user's file of that name
        fixes, kept = None, None
        if fixes_layer is not None:
            sidecar, _, kept = sidecar_path(path, fixes_layer.source().split("|")[0])
            fixes = str(sidecar)
            kept = kept and f"{kept}; the corrections went to {fixes}"
        default_sidecar = str(Path(path).with_suffix(".corrections.geojson"))
        undone = _undo_interrupted(path, fixes or default_sidecar)
        kept = "; ".join(filter(None, [kept, *undone])) or None
        existing = [p for p in (path, polygons, fixes) if p and Path(p).exists()]
        stale = [f for f in _stale_companions(path, polygons, fixes)
                 if os.path.realpath(f) not in in_use]
        if existing and not self.confirm_overwrite(
                existing + [f"{f} (removed: it belongs to the mask replaced)" for f in stale]):
            # what an interrupted Accept left was undone all the same: said
            self.show_status("; ".join(["Accept: nothing written", *undone]))
            return
        # the question waits in its own event loop, where a run can finish and be reviewed
        if self.run is not run or self.threshold_value != threshold:
            self.show_status("Accept: nothing written: the review changed while the question was "
                             "open; check it and accept again", error=True)
            return
        # the final mask and polygons of an Accept before, on the map, are let go of while
        # they are replaced (Windows refuses otherwise), and come back if they stay
        try:
            released = ReleasedLayers([p for p in (path, polygons) if p])
        except LayerError as exc:
            self.show_status(f"Accept: nothing written: {exc}", error=True)
            return
        started = self.project_watch.count
        self._released.append((released, started))
        aside = None
        if fixes:
            # the backend reads them at their final name: what is there is kept aside until
            # it has burnt them in (after a kill, for the next Accept: _undo_interrupted)
            try:
                aside = set_aside(fixes)
            except OSError as exc:
                if Path(fixes).exists():
                    self._end_accept(released, put_back=True)
                    self._accept_ended(f"Accept failed: {fixes}: cannot be kept while the run "
                                       f"replaces it ({exc.strerror or exc})", FAILED)
                    return
                # none there to keep, and no marker in that folder: writing them fails, saying why
        review = f"accepted in the QGIS review dock at threshold {threshold_text}"
        tags = {"SARFLOOD_REVIEW": review}
        params = FinalizeParams(p.probability, threshold, path, tags,
                                corrections=fixes, overwrite=bool(existing))
        self.accept_button.setEnabled(False)   # until the whole Accept ends (_end_accept)

        def finalize() -> None:
            task = self._start_backend("SAR Flood Mapper: accept", params.argv(),
                                       lambda outcome: self._accepted(outcome, path, polygons,
                                                                      started, kept, stale,
                                                                      released))
            if aside:   # apart from the dock: after an unload too
                task.done.connect(lambda outcome: settle(fixes, aside, outcome.ok))

        if fixes_layer is None:
            finalize()
            return

        def written(error: str | None) -> None:
            if error is not None:   # (written whole or not at all: the file there is kept)
                if aside:
                    settle(fixes, aside, False)
                self._end_accept(released, put_back=True)
                self._accept_ended(f"Accept failed: {error}", FAILED)
                return
            finalize()

        # the polygons as they are now, in a layer of the task's own (see _run_algorithm)
        # in the mask's CRS, by QGIS's transform only where the layer's differs, as the map
        # shows it: the GeoJSON names that CRS, so the backend transforms nothing back
        task = CorrectionsTask(private_copy(fixes_layer, crs=run.layers.mask.crs()),
                               f"Corrections layer '{fixes_layer.name()}'", fixes)

        def abandoned(_error: str | None) -> None:   # unloaded meanwhile: no Accept follows
            if aside and (sip.isdeleted(self) or self._unloading):
                settle(fixes, aside, False)

        task.done.connect(abandoned)
        self._start_task(task, written)

    def _end_accept(self, released: ReleasedLayers, put_back: bool = False) -> None:
        """An Accept ended: with ``put_back`` (its files stay as they were) the layers it
        took out of the project come back, unless the project is another one by now; and
        Accept can be clicked again."""
        held = next((h for h in self._released if h[0] is released), None)
        if held is None:
            return
        self._released.remove(held)
        if put_back and held[1] == self.project_watch.count:
            released.restore()
        if not sip.isdeleted(self.accept_button):
            self.accept_button.setEnabled(self._reviewable())

    def _accepted(self, outcome: Outcome, path: str, polygons: str | None, started: int,
                  note: str | None, stale: list[str], released: ReleasedLayers) -> None:
        if not outcome.ok:
            self._end_accept(released, put_back=True)
            self._accept_ended(f"Accept {_failed(outcome)}", FAILED)
            return
        # the mask is replaced: its old layers, and the polygons of the old mask, stay out
        area = area_text(float(outcome.result["water_area_km2"]), float(outcome.result["valid_area_km2"]))
        removal, removal_failed = _remove_stale(stale)
        text = f"Final mask written: {path} ({area}){removal}"
        no_polygons = "; no polygons written" if polygons else ""   # where the mask is not mapped
        if started != self.project_watch.count:   # not into another project
            self._end_accept(released)
            self._accept_ended(f"{text}; not added to the map: {PROJECT_CHANGED}{no_polygons}", WARNED)
            return
        remove_layers_of(path)   # they would draw the replaced file, under the same name
        try:
            layer = add_styled_raster(path, f"final water mask ({Path(path).stem})",
                                      styles.mask_renderer)
        except LayerError as exc:   # moved or deleted since it was written
            self._end_accept(released)
            self._accept_ended(f"{text}; not added to the map: {exc}{no_polygons}", WARNED)
            return
        released.take_place(path, layer)
        if "corrected_pixels" in outcome.result:
            text += f"; {outcome.result['corrected_pixels']} pixels corrected"
        # drawn over no data, corrections change nothing there: said, not a silent 0
        left = int(outcome.result.get("nodata_pixels_left", 0))
        if left:
            text += f"; {left} pixels under the corrections are no data and were left so"
        # corrections that change nothing (drawn elsewhere, in another CRS) say so here
        text += "".join(f"; warning: {w}" for w in [*outcome.warnings, *([note] if note else [])])
        warned = bool(outcome.warnings) or bool(note) or removal_failed
        if not polygons:
            self._end_accept(released)
            self._accept_ended(text, WARNED if warned else WRITTEN)
            return
        self.show_status(text, error=warned)
        released.keep_out()   # the mask is replaced: the polygons of the old one stay out
        min_area = self.min_area.value()
        params = {"INPUT": layer.source(), "MIN_AREA_M2": min_area, "OUTPUT": polygons}
        if not self._run_algorithm("sarflood:vectorize", params, lambda ok, results, context, error:
                                   self._polygons_done(ok, results, text, warned, error, started,
                                                       min_area, released, polygons)):
            self._end_accept(released)

    def _polygons_done(self, ok: bool, results: dict, text: str, warned: bool, error: str,
                       started: int, min_area: float, released: ReleasedLayers,
                       polygons: str) -> None:
        self._end_accept(released)
        if not ok:   # a file there is an earlier Accept's, of the mask just replaced: said
            before = f"; {polygons} holds the polygons of the mask replaced" if Path(polygons).exists() else ""
            self._accept_ended(f"{text}; writing polygons failed: {error}{before}", WARNED)
            return
        path = results["OUTPUT"]
        written = f"{text}; {results['POLYGON_COUNT']} polygons written to {path}"
        if results["DROPPED_COUNT"]:   # speckle left out by "Smallest polygon": said, counted
            written += (f"; {results['DROPPED_COUNT']} polygons smaller than {min_area:,.0f} m² "
                        f"({results['DROPPED_AREA_M2']:,.0f} m²) dropped")
        if started != self.project_watch.count:
            self._accept_ended(f"{written}, not added to the map: {PROJECT_CHANGED}", WARNED)
            return
        remove_layers_of(path)
        layer = QgsVectorLayer(path, f"water polygons ({Path(path).stem})", "ogr")
        QgsProject.instance().addMapLayer(layer)
        released.take_place(path, layer)
        self._accept_ended(written, WARNED if warned else WRITTEN)

    # --- background work ------------------------------------------------------------------------

    def _start_backend(self, description: str, args: list[str],
                       on_done: Callable[[Outcome], None]) -> BackendTask:
        task = BackendTask(description, args, python_setting())
        keep = (task,)
        self._busy.append(keep)

        def finish(outcome: Outcome) -> None:
            if sip.isdeleted(self) or self._unloading:  # the plugin was unloaded meanwhile
                return
            self._busy.remove(keep)
            self._next_step(on_done, outcome)

        task.done.connect(finish)
        add_task(task)
        return task

    def _start_task(self, task, on_done: Callable[[str | None], None]) -> None:
        """Run a task with a ``done(error)`` signal; ``on_done(error)`` on the main thread,
        unless the plugin was unloaded meanwhile."""
        keep = (task,)
        self._busy.append(keep)

        def finish(error: str | None) -> None:
            if sip.isdeleted(self) or self._unloading:
                return
            self._busy.remove(keep)
            self._next_step(on_done, error)

        task.done.connect(finish)
        add_task(task)

    def _next_step(self, step: Callable, *args) -> None:
        """``step(*args)`` from the event loop, not from inside the finished() of the task
        that just ended, where QGIS delivers a task's end: QGIS still holds that task's
        deleted runnable then, and a task added there could be lost (an Accept's backend
        task added after its corrections task at times never started). :func:`~..task.add_task`
        guards each add; this keeps the next step out of QGIS's handler as well."""
        QTimer.singleShot(0, lambda: None if sip.isdeleted(self) or self._unloading else step(*args))

    def _run_algorithm(self, alg_id: str, params: dict, on_done) -> bool:
        """Run a Processing algorithm as a QGIS task; ``on_done(ok, results, context, error)``
        on the main thread.

        The algorithm runs on a worker thread, so nothing in ``params`` may be a project
        layer, which the main thread draws, edits and deletes meanwhile: inputs are files,
        or layers of the task's own made in the main thread (:func:`private_copy`). The
        context has no project, only its ellipsoid and transform context: with the project,
        a path that a project layer shows resolves to that very layer (a segfault in a test
        run, when the mask just added to the map was vectorized)."""
        algorithm = QgsApplication.processingRegistry().algorithmById(alg_id)
        if algorithm is None:  # a task of None crashes QGIS; the provider is gone
            self.show_status(f"cannot run {alg_id}: the plugin's Processing provider is not "
                             "loaded", error=True)
            return False
        context = QgsProcessingContext()
        context.setEllipsoid(QgsProject.instance().ellipsoid())
        context.setTransformContext(QgsProject.instance().transformContext())
        feedback = QgsProcessingFeedback()
        task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
        keep = (task, context, feedback, params)   # params: the task's own layers, freed after it
        self._busy.append(keep)

        def finish(ok: bool, results: dict) -> None:
            if sip.isdeleted(self) or self._unloading:
                return
            self._busy.remove(keep)
            lines = [line for line in feedback.textLog().splitlines() if line.strip()]
            # cancelled in QGIS's task list before it ran, the algorithm logs nothing: said
            # so, not "no message" (cancelled while running, it says so itself)
            error = lines[-1] if lines else "cancelled" if task.isCanceled() else "no message"
            self._next_step(on_done, ok, results, context, error)

        task.executed.connect(finish)
        add_task(task)
        return True

    def cancel_tasks(self) -> None:
        """Stop the work still running (the plugin is being unloaded); the backend then
        leaves no file, and work that ended meanwhile starts no next step."""
        self._unloading = True
        for task, *_ in self._busy:
            if not sip.isdeleted(task):   # (QGIS deletes a task once it has ended)
                task.cancel()
        for released, _started in list(self._released):   # the Accepts cancelled: files kept
            self._end_accept(released, put_back=True)

    def _accept_ended(self, text: str, level: Qgis.MessageLevel) -> None:
        """How an Accept ended, in the dock and in QGIS's message bar: the dock may be closed,
        or behind another panel, by the time a long Accept ends."""
        self.show_status(text, error=level != WRITTEN)
        push_message(self.iface.messageBar(), text, level=level,
                     **({"duration": 15} if level == WRITTEN else {}))

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #b00;" if error else "")
        self.status.setText(text)
