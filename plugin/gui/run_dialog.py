"""The run dialog: choose the Sentinel-1 input, the model and the settings, then start a run.

The dialog only collects choices and shows what the backend says (model card,
devices, progress). It emits ``runRequested`` with a :class:`RunRequest`; the
controller starts the background task and reports back through
``set_running``, ``set_progress`` and ``show_status``. Backend questions (card,
devices, and ``inspect`` of the input whenever it or its band mapping changes)
run as background tasks, so the dialog never blocks QGIS; an answer about a
model or input the user has since replaced is dropped.
"""
from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (QgsCoordinateTransform, QgsCsException, QgsMapLayerProxyModel, QgsProcessingUtils,
                       QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer, QgsWkbTypes)
from qgis.gui import (QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox, QgsRasterBandComboBox,
                      QgsScrollArea)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (QApplication, QCheckBox, QComboBox, QDialog, QDoubleSpinBox,
                                 QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                                 QPushButton, QRadioButton, QSpinBox, QTextBrowser, QVBoxLayout,
                                 QWidget)

from ..backend_env import PLUGIN_ROOT
from ..backend_process import in_qgis_words
from ..bands import guess_bands, polarisation
from ..inputs import (InputProblem, band_names, crs_for_backend, is_sarflood_output,
                      scene_from_pair, scene_from_stack)
from ..outputs import file_state
from ..params import (DEVICES, UNITS, PredictParams, SceneInput, backend_path, free_output_paths,
                      output_stem)
from ..settings import PYTHON_KEY, RunSettings, python_setting
from ..task import QueryTask, add_task
from .message_text import MessageText

DEFAULT_MODEL_FILE = PLUGIN_ROOT / "resources" / "models" / "DEFAULT"
INSPECT_DELAY_MS = 150  # one inspect for a burst of changes (a new layer moves both band boxes)
CARD_DELAY_MS = 400     # one card query for a model path typed in, not one a keystroke
BACKEND_DELAY_MS = 400  # one backend check for a Python path typed in, likewise
TILE_MULTIPLE = 16      # the backend's tiles are output blocks: backend.tiling.BLOCK_MULTIPLE
EXTENT_MODES = (("layer", "Whole input layer"), ("canvas", "Current map canvas extent"),
                ("polygon", "Extent of a polygon layer"))


@dataclass
class RunRequest:
    """A run as the dialog asks for it; the controller turns it into a task."""
    params: PredictParams
    title: str
    scene_layer_id: str


def bundled_model() -> Path | None:
    """The model named in resources/models/DEFAULT, if the plugin ships one."""
    if not DEFAULT_MODEL_FILE.is_file():
        return None
    path = DEFAULT_MODEL_FILE.parent / DEFAULT_MODEL_FILE.read_text().strip()
    return path if path.is_file() else None


def _model_state(path: Path | None) -> tuple | None:
    """The model file as far as a change to it shows: its path, time and size."""
    return None if path is None else (str(path), file_state(path))


def card_html(card: dict[str, Any]) -> str:
    """The model card (backend/MODEL_CARD.md schema) as a reader wants it: identity, inputs,
    grid, quality, provenance."""
    e = html.escape
    bands = ", ".join(f"{e(b['name'])} ({e(b['units'])}, clip {b['clip'][0]:g}..{b['clip'][1]:g})"
                      for b in card["inputs"]["bands"])
    training = card.get("training", {})
    metrics = ", ".join(f"{e(k)} {v:.3f}" for k, v in training.get("metrics", {}).items())
    tiling = card["tiling"]
    tiles = f"{tiling['tile_size']} px, margin {tiling['margin']} px"
    if tiling.get("size_multiple", 1) > 1:
        tiles += f", edges a multiple of {tiling['size_multiple']} px"
    rows = [("Bands", bands), ("Pixel size", f"{card['pixel_size_m']:g} m"), ("Tiles", tiles),
            ("Output", output_text(card["output"])),
            ("Default threshold", f"{card['output']['default_threshold']:g}"),
            ("Metrics", metrics or "none reported"), ("Training data", e(training.get("data", ""))),
            ("Training notes", e(training.get("notes", ""))), ("Licence", e(card.get("license", "")))]
    table = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows if v)
    description = e(card.get("description", ""))
    return (f"<p><b>{e(card['name'])}</b> {e(card['version'])}</p>"
            + (f"<p>{description}</p>" if description else "") + f"<table>{table}</table>")


def output_text(output: dict[str, Any]) -> str:
    """How the backend reads water probability from the model's output: for a third-party
    class model, which channel it takes as water is the first thing to check."""
    channel = output.get("water_channel")
    return {"water_probability": "water probability",
            "water_logit": "water logit (probability = sigmoid)",
            "class_probabilities": f"class probabilities; water = channel {channel}",
            "class_logits": f"class logits; water = softmax of channel {channel}",
            }.get(output.get("kind", "water_probability"), html.escape(str(output.get("kind"))))


def units_source_text(source: Any) -> str:
    """Where the backend found the units (``units_source``), in words: the units line before
    a run and the line after it said it two ways ('from the values', 'from values')."""
    if not source:
        return ""
    return {"metadata": "from metadata", "values": "from the values"}.get(str(source), str(source))


def detected_units_text(answer: dict[str, Any]) -> str:
    """From ``python -m backend inspect``: the units a run would assume, and from what."""
    units = answer.get("units_detected")
    if not units:
        return "detected: unknown (no metadata, no valid pixel in the sample)"
    source = units_source_text(answer.get("units_source"))
    text = f"detected: {units} ({source})" if source else f"detected: {units}"
    # shown, not only in the tooltip: a warning here (VV and VH swapped?) is about this input;
    # in the dialog's words, as a run's are ('--bands' means nothing in QGIS)
    return "; ".join([text] + [f"warning: {in_qgis_words(w)}" for w in answer.get("warnings", [])])


def detected_units_tooltip(answer: dict[str, Any]) -> str:
    """Per band: where it is read from and why the units are what they are; notes, warnings."""
    lines = []
    for name, band in answer.get("bands", {}).items():
        found = answer.get("units", {}).get(name, {})
        named_by = "your band choice" if band["named_by"] == "--bands" else band["named_by"]
        lines.append(f"{name}: {Path(band['path']).name} band {band['band']} "
                     f"(named by {named_by}); {found.get('units') or 'unknown'}: "
                     f"{found.get('evidence', '')}")
    lines += ([in_qgis_words(n) for n in answer.get("notes", [])]
              + [f"Warning: {in_qgis_words(w)}" for w in answer.get("warnings", [])])
    return "\n".join(lines)


def remembered_layer(layer_id: str, source: str) -> QgsVectorLayer | None:
    """The polygon layer a run used: by its id, or else (a project loaded again gives new ids
    to layers added anew) by its source where exactly one polygon layer has it; None if gone."""
    def polygons(layer) -> bool:
        return (isinstance(layer, QgsVectorLayer)
                and layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry)

    project = QgsProject.instance()
    if polygons(project.mapLayer(layer_id)):
        return project.mapLayer(layer_id)
    same = [layer for layer in project.mapLayers().values()
            if polygons(layer) and layer.source() == source]
    return same[0] if len(same) == 1 else None


class RunDialog(QDialog):
    runRequested = pyqtSignal(object)  # RunRequest
    cancelRequested = pyqtSignal()
    installRequested = pyqtSignal()

    def __init__(self, iface, parent: QWidget | None = None):
        super().__init__(parent)
        self.iface = iface
        self.setWindowTitle("SAR Flood Mapper: map flood water")
        self.setObjectName("SarFloodRunDialog")
        self._queries: list[QueryTask] = []
        self.card: dict[str, Any] | None = None
        self.backend_problem: str | None = None   # why the backend's Python could not read the card
        self._backend_failing = False   # the last devices query failed: the backend could not run
        self.inspected: dict[str, Any] | None = None   # the backend's inspect answer
        self._inspect_args: list[str] | None = None     # the question it must answer
        self._inspect_timer = QTimer(self)
        self._inspect_timer.setSingleShot(True)
        self._inspect_timer.setInterval(INSPECT_DELAY_MS)
        self._inspect_timer.timeout.connect(self.refresh_inspect)
        self._card_of: tuple | None = None   # the model file as the card was asked of it
        self._card_reading = False           # a card query is under way
        self._run_asked_recheck = False      # Run asked the backend again: its answer is said
        self._vh_shown_needed = True         # the VH boxes' labels say the model reads VH
        self._card_timer = QTimer(self)
        self._card_timer.setSingleShot(True)
        self._card_timer.setInterval(CARD_DELAY_MS)
        self._card_timer.timeout.connect(self.refresh_card)
        self._backend_timer = QTimer(self)
        self._backend_timer.setSingleShot(True)
        self._backend_timer.setInterval(BACKEND_DELAY_MS)
        self._backend_timer.timeout.connect(self.refresh_backend)
        # the settings scroll on a small screen (a 768 px laptop: they take 900-1100 px);
        # the progress, the status and the buttons below them stay in view
        settings = QWidget()
        boxes = QVBoxLayout(settings)
        boxes.setContentsMargins(0, 0, 0, 0)
        for box in (self._input_box(), self._model_box(), self._run_box(), self._advanced_box(),
                    self._output_box()):
            boxes.addWidget(box)
        boxes.addStretch()
        self.settings_area = QgsScrollArea()
        self.settings_area.setWidget(settings)
        self.settings_area.setWidgetResizable(True)
        self.settings_area.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.addWidget(self.settings_area, 1)
        footer = self._footer()
        layout.addWidget(footer)
        self._fit_screen(settings, footer)
        # an error said of the choices before no longer holds once one changes (it stayed,
        # red, under Run after the analyst had fixed what it named)
        self._status_error = False
        for changed in (self.one_layer.toggled, self.stack_layer.layerChanged, self.vv_band.bandChanged,
                        self.vh_band.bandChanged, self.vv_layer.layerChanged, self.vh_layer.layerChanged,
                        self.model.fileChanged, self.python.fileChanged,
                        self.extent_mode.currentIndexChanged, self.extent_layer.layerChanged,
                        self.temporary.toggled, self.output_dir.fileChanged):
            changed.connect(self._forget_stale_error)
        self.apply_settings(RunSettings.load())
        self.refresh_backend()

    # --- building -------------------------------------------------------------------------

    def _fit_screen(self, settings: QWidget, footer: QWidget) -> None:
        """Open as tall as the settings need (a scroll area's own size hint stops at about
        24 lines), but no taller than the screen leaves room for; as wide as they need."""
        screen = QApplication.primaryScreen()
        room = screen.availableGeometry().height() - 80 if screen is not None else 10 ** 4
        margins = self.layout().contentsMargins()
        natural = (settings.sizeHint().height() + footer.sizeHint().height()
                   + self.layout().spacing() + margins.top() + margins.bottom())
        frame = (margins.left() + margins.right()
                 + self.settings_area.verticalScrollBar().sizeHint().width())
        # never narrower than the settings: they scroll up and down, not sideways
        self.setMinimumWidth(settings.minimumSizeHint().width() + frame)
        self.resize(settings.sizeHint().width() + frame, min(natural, max(room, 300)))

    def _input_box(self) -> QGroupBox:
        box = QGroupBox("Sentinel-1 input")
        form = QFormLayout(box)
        self.one_layer = QRadioButton("One layer with VV and VH bands")
        self.two_layers = QRadioButton("Separate VV and VH layers")
        self.one_layer.setChecked(True)
        modes = QHBoxLayout()
        modes.addWidget(self.one_layer)
        modes.addWidget(self.two_layers)
        form.addRow(modes)
        self.stack_layer = QgsMapLayerComboBox()
        self.stack_layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.vv_band = QgsRasterBandComboBox()
        self.vh_band = QgsRasterBandComboBox()
        for combo in (self.vv_band, self.vh_band):   # not set: the backend decides
            combo.setShowNotSetOption(True, "(the backend decides)")
        self.vv_layer = QgsMapLayerComboBox()
        self.vh_layer = QgsMapLayerComboBox()
        for combo in (self.vv_layer, self.vh_layer):
            combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.units = QComboBox()
        self.units.addItem("As detected", "")
        for units in UNITS:
            self.units.addItem(units, units)
        self.units_detected = QLabel("")
        self.units_detected.setWordWrap(True)
        self.units_detected.setTextFormat(Qt.TextFormat.PlainText)   # file names, backend words
        units_row = QHBoxLayout()
        units_row.addWidget(self.units)
        units_row.addWidget(self.units_detected, 1)
        self.stack_rows = [("Layer", self.stack_layer), ("VV band", self.vv_band), ("VH band", self.vh_band)]
        self.pair_rows = [("VV layer", self.vv_layer), ("VH layer", self.vh_layer)]
        # the form holds the chosen mode's rows only (_show_input_mode): the labels are kept here
        self.input_labels = {widget: QLabel(label) for label, widget in self.stack_rows + self.pair_rows}
        for label, widget in self.stack_rows + self.pair_rows:
            self.input_labels[widget].setBuddy(widget)   # as addRow(text, widget) does
            form.addRow(self.input_labels[widget], widget)
        form.addRow("Units", units_row)
        self.input_form = form
        self.one_layer.toggled.connect(self._show_input_mode)
        self.stack_layer.layerChanged.connect(self._stack_changed)
        self.two_layers.toggled.connect(lambda on: on and self._guess_pair())
        for changed in (self.one_layer.toggled, self.stack_layer.layerChanged, self.vv_band.bandChanged,
                        self.vh_band.bandChanged, self.vv_layer.layerChanged, self.vh_layer.layerChanged):
            changed.connect(lambda *_: self._inspect_timer.start())
        self._show_input_mode()
        self._avoid_own_output()
        self._stack_changed(self.stack_layer.currentLayer())
        self._guess_pair()
        return box

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        layout = QVBoxLayout(box)
        self.model = QgsFileWidget()
        self.model.setFilter("ONNX model (*.onnx)")
        self.model.lineEdit().setPlaceholderText("the bundled model")
        self.card_view = QTextBrowser()
        self.card_view.setMaximumHeight(150)
        layout.addWidget(self.model)
        layout.addWidget(self.card_view)
        self.model.fileChanged.connect(self._model_changed)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run")
        form = QFormLayout(box)
        self.device = QComboBox()
        for device in DEVICES:
            self.device.addItem(device, device)
        self.device_info = QLabel("checking devices...")
        self.device_info.setWordWrap(True)
        self.device_info.setTextFormat(Qt.TextFormat.PlainText)
        self.use_model_threshold = QCheckBox("the model's default")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.use_model_threshold.toggled.connect(lambda on: self.threshold.setEnabled(not on))
        threshold = QHBoxLayout()
        threshold.addWidget(self.threshold)
        threshold.addWidget(self.use_model_threshold)
        self.extent_mode = QComboBox()
        for key, label in EXTENT_MODES:
            self.extent_mode.addItem(label, key)
        self.extent_layer = QgsMapLayerComboBox()
        self.extent_layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.extent_layer.setAllowEmptyLayer(True)   # a remembered layer not in the project: none
        self.extent_mode.currentIndexChanged.connect(
            lambda _: self.extent_layer.setEnabled(self.extent_mode.currentData() == "polygon"))
        form.addRow("Device", self.device)
        form.addRow("", self.device_info)
        form.addRow("Threshold", threshold)
        form.addRow("Extent", self.extent_mode)
        form.addRow("Polygon layer", self.extent_layer)
        return box

    def _advanced_box(self) -> QGroupBox:
        box = QgsCollapsibleGroupBox("Advanced")
        box.setCollapsed(True)
        form = QFormLayout(box)
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 4096)   # the backend refuses bigger tiles (backend.tiling.MAX_TILE)
        self.tile_size.setSingleStep(TILE_MULTIPLE)
        self.tile_size.setSpecialValueText("the model's")
        self.overlap = QSpinBox()
        self.overlap.setRange(-1, 4096)
        self.overlap.setSpecialValueText("from the model's margin")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(0, 256)
        self.batch_size.setSpecialValueText("the backend's (1 on CPU, 4 on CUDA)")
        self.tta = QCheckBox("Test-time augmentation (slower; adds an uncertainty layer)")
        self.python = QgsFileWidget()
        self.python.lineEdit().setPlaceholderText(
            "found automatically: the installer's environment, the plugin's .venv, then QGIS's Python")
        self.python.setFilePath(python_setting() or "")
        self.python.fileChanged.connect(self._python_changed)
        form.addRow("Tile size (px)", self.tile_size)
        form.addRow("Overlap (px)", self.overlap)
        form.addRow("Tiles per batch", self.batch_size)
        form.addRow(self.tta)
        form.addRow("Backend Python", self.python)
        return box

    def _python_changed(self, path: str) -> None:
        """Remember the interpreter (QgsSettings ``sarflood/python``); it is checked once typing
        pauses, and the card read by the one before is no longer in force."""
        QgsSettings().setValue(PYTHON_KEY, path.strip())
        self.backend_info.setText("checking the backend...")
        self._card_pending()
        self._card_timer.stop()   # refresh_backend reads the card too
        self._backend_timer.start()

    def _output_box(self) -> QGroupBox:
        box = QGroupBox("Outputs")
        form = QFormLayout(box)
        self.temporary = QCheckBox("Temporary files (gone when QGIS closes)")
        self.output_dir = QgsFileWidget()
        self.output_dir.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.temporary.toggled.connect(lambda on: self.output_dir.setEnabled(not on))
        form.addRow(self.temporary)
        form.addRow("Folder", self.output_dir)
        return box

    def _footer(self) -> QWidget:
        footer = QWidget()
        layout = QVBoxLayout(footer)
        layout.setContentsMargins(0, 0, 0, 0)
        # what a model card, a file name or the backend says: plain text, wrapped anywhere,
        # a few lines at most (a backend that cannot run says why and gives the command)
        self.backend_info = MessageText("checking the backend...", max_lines=4)
        self.install_button = QPushButton("Install the backend's dependencies...")
        self.install_button.setVisible(False)
        self.install_button.clicked.connect(self.installRequested)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = MessageText(max_lines=5)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        close = QPushButton("Close")
        buttons.addStretch()
        for button in (self.run_button, self.cancel_button, close):
            buttons.addWidget(button)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self._cancel)
        close.clicked.connect(self.close)
        for widget in (self.backend_info, self.install_button, self.progress, self.status):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        return footer

    # --- input mapping ------------------------------------------------------------------------

    def _show_input_mode(self) -> None:
        """Put the chosen mode's rows in the form, below the mode buttons, and take the
        other mode's out: hidden rows of a QFormLayout still leave their spacing, a gap."""
        one = self.one_layer.isChecked()
        for _, widget in self.stack_rows + self.pair_rows:
            row, _role = self.input_form.getWidgetPosition(widget)
            if row >= 0:
                self.input_form.takeRow(row)
        for rows, shown in ((self.stack_rows, one), (self.pair_rows, not one)):
            for index, (_, widget) in enumerate(rows, start=1):
                if shown:
                    self.input_form.insertRow(index, self.input_labels[widget], widget)
                widget.setVisible(shown)
                self.input_labels[widget].setVisible(shown)

    def _stack_changed(self, layer) -> None:
        """Point the band combos at the layer and preselect VV and VH from band names."""
        for combo in (self.vv_band, self.vh_band):
            combo.setLayer(layer)
        if isinstance(layer, QgsRasterLayer):
            guess = guess_bands(band_names(layer)) or (-1, -1)
            self.vv_band.setBand(guess[0])
            self.vh_band.setBand(guess[1])

    def _guess_pair(self) -> None:
        """Preselect single-band layers named VV and VH (HyP3 files: ..._VV.tif, ..._VH.tif);
        never a run's outputs, whose files carry the scene's name (..._VV_water_mask.tif)."""
        named: dict[str, QgsRasterLayer] = {}
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.bandCount() == 1:
                pol = polarisation(layer.name()) or polarisation(Path(layer.source()).name)
                if pol and pol not in named and not is_sarflood_output(layer):
                    named[pol] = layer
        for combo, pol in ((self.vv_layer, "VV"), (self.vh_layer, "VH")):
            current = combo.currentLayer()
            if pol in named and (current is None or polarisation(current.name()) != pol
                                 or is_sarflood_output(current)):
                combo.setLayer(named[pol])

    def _avoid_own_output(self) -> None:
        """The input is by default no map this plugin made: where the layer chosen is gone
        (QGIS takes the next one, often a run's water mask), the first raster that is none."""
        current = self.stack_layer.currentLayer()
        if current is None or not is_sarflood_output(current):
            return
        layers = (self.stack_layer.layer(row) for row in range(self.stack_layer.count()))
        scene = next((layer for layer in layers if not is_sarflood_output(layer)), None)
        if scene is not None:
            self.stack_layer.setLayer(scene)

    def current_scene(self) -> SceneInput:
        """The Sentinel-1 input as chosen now; raises InputProblem naming what is wrong."""
        needs_vh = self.needs_vh()
        if self.two_layers.isChecked():
            vh = self.vh_layer.currentLayer() if needs_vh else None
            return scene_from_pair(self.vv_layer.currentLayer(), vh, needs_vh)
        layer = self.stack_layer.currentLayer()
        vv, vh = self.vv_band.currentBand(), self.vh_band.currentBand()
        if (vv > 0) != (vh > 0) and layer is not None and layer.bandCount() >= 2:
            if layer.bandCount() > 2:
                raise InputProblem(f"Sentinel-1 input '{layer.name()}': choose both the VV and the VH "
                                   f"band, or neither (then they are found from the band names)")
            vv, vh = (vv, 3 - vv) if vv > 0 else (3 - vh, vh)   # of two bands, the other one
        return scene_from_stack(layer, (vv, vh) if min(vv, vh) > 0 else None, needs_vh)

    def needs_vh(self) -> bool:
        """Whether the model reads VH: a VV-only card takes a single-band VV layer, and no VH
        layer. Until its card is read the model is taken to read both."""
        return self.card is None or any(b["name"] == "VH" for b in self.card["inputs"]["bands"])

    def _show_vh_use(self) -> None:
        """Where a new card changes whether VH is read, say so by the VH boxes and ask again
        what the backend makes of the input (a single-band layer is refused, or not)."""
        if self.needs_vh() == self._vh_shown_needed:
            return
        self._vh_shown_needed = self.needs_vh()
        # short: a long label widens the whole form's label column
        unused = "" if self.needs_vh() else " (unused)"
        why = "" if self.needs_vh() else "This model reads VV only (its card lists no VH band)"
        for widget, label in ((self.vh_band, "VH band"), (self.vh_layer, "VH layer")):
            self.input_labels[widget].setText(label + unused)
            for shown in (self.input_labels[widget], widget):
                shown.setToolTip(why)
        self.vh_layer.setEnabled(self.needs_vh())   # a stack's VH band still goes to --bands
        self._inspect_timer.start()

    # --- backend questions --------------------------------------------------------------------

    def _ask(self, description: str, args: list[str], on_done) -> None:
        task = QueryTask(description, args, python_setting())
        self._queries.append(task)

        def finish(answer, error, task=task):
            if sip.isdeleted(self):  # the dialog was closed and deleted meanwhile
                return
            self._queries.remove(task)
            on_done(answer, error, task)

        task.done.connect(finish)
        add_task(task)

    def refresh_backend(self) -> None:
        """Ask which interpreter runs the backend and which devices it has; show the model card
        and what it makes of the input (each said the backend could not run, if it could not)."""
        self._backend_timer.stop()
        self._ask("SAR Flood Mapper: devices", ["devices"], self._devices_answered)
        self.refresh_card()
        self._inspect_timer.start()

    def _devices_answered(self, answer, error, task: QueryTask) -> None:
        if task.python_setting != python_setting():
            return  # an answer about an interpreter the user has since replaced
        interpreter = task.interpreter
        self.install_button.setVisible(interpreter is not None and interpreter.installer_can_fix)
        self._backend_failing = bool(error)
        if error:
            self.backend_info.setText(error)
            self.device_info.setText("unknown: the backend did not answer")
            self.device_info.setToolTip("")
            return
        self.backend_info.setText(f"Backend: {interpreter.path} ({interpreter.source} Python)")
        self.device_info.setText(self._devices_text(answer))
        self.device_info.setToolTip("" if answer.get("cuda_usable")
                                    else answer.get("reason", "the backend gave no reason"))

    @staticmethod
    def _devices_text(answer: dict[str, Any]) -> str:
        """From ``python -m backend devices``: what 'auto' will use (why not CUDA: the
        label's tooltip; a line, where the reason took four in the form)."""
        if answer.get("cuda_usable"):
            return "auto uses CUDA (GPU); CPU is available too."
        return "auto uses the CPU (no CUDA: see the tooltip)."

    def refresh_inspect(self) -> None:
        """Ask the backend what it makes of the input (band mapping, units), off the GUI thread."""
        self.inspected = None
        try:
            args = ["inspect", *self.current_scene().args(), "--json"]
        except InputProblem as problem:
            self._inspect_args = None
            chosen = (self.vv_layer if self.two_layers.isChecked() else self.stack_layer).currentLayer()
            self._show_detected("not detected: see the tooltip" if chosen else "", str(problem), error=True)
            return
        self._inspect_args = args
        self._show_detected("detecting...", "")
        self._ask("SAR Flood Mapper: inspect input", args,
                  lambda answer, error, task, args=args: self._inspect_answered(args, answer, error, task))

    def _inspect_answered(self, args: list[str], answer, error, task: QueryTask | None = None) -> None:
        if args != self._inspect_args or (task is not None and task.python_setting != python_setting()):
            return  # about an input, band mapping or interpreter the user has since changed
        if error:
            self._show_detected("not detected: see the tooltip", error, error=True)
            return
        self.inspected = answer
        self._show_detected(detected_units_text(answer), detected_units_tooltip(answer),
                            error=bool(answer.get("warnings")))
        self._show_backend_bands(answer)

    def _show_backend_bands(self, answer: dict) -> None:
        """Band combos left to the backend show its choice (by brightness, for unnamed bands);
        a band the user chose is never replaced. Set without signals, so that showing it asks
        nothing again."""
        if self.two_layers.isChecked():
            self._show_backend_pair(answer)
            return
        for combo, name in ((self.vv_band, "VV"), (self.vh_band, "VH")):
            if combo.currentBand() <= 0 and name in answer["bands"]:
                combo.blockSignals(True)
                combo.setBand(int(answer["bands"][name]["band"]))
                combo.blockSignals(False)

    def _show_backend_pair(self, answer: dict) -> None:
        """Separate layers chosen the wrong way round are read the right way round by the
        backend (their band descriptions say VV and VH): the boxes show the pair it reads,
        not the one chosen (the run was then named after the VH file, and only a tooltip
        said why)."""
        taken = answer.get("bands", {}).get("VV", {}).get("path")
        vv, vh = self.vv_layer.currentLayer(), self.vh_layer.currentLayer()
        if taken is None or vv is None or vh is None:
            return
        try:
            files = self.current_scene().files()   # the VV layer's alone for a VV-only model
        except InputProblem:
            return
        if len(files) == 2 and os.path.realpath(taken) == files[1]:
            for combo, layer in ((self.vv_layer, vh), (self.vh_layer, vv)):
                combo.blockSignals(True)   # the backend has answered for this pair already
                combo.setLayer(layer)
                combo.blockSignals(False)

    def _show_detected(self, text: str, tooltip: str, error: bool = False) -> None:
        self.units_detected.setText(text)
        self.units_detected.setToolTip(tooltip)
        self.units_detected.setStyleSheet("color: #b00;" if error else "")

    def model_path(self) -> Path | None:
        text = self.model.filePath().strip()
        return Path(text) if text else bundled_model()

    def refresh_card(self) -> None:
        self._card_timer.stop()
        model = self.model_path()
        self.card = self.backend_problem = None
        self._card_of = _model_state(model)
        self._card_reading = model is not None
        if model is None:
            self.card_view.setHtml("<p style='color:#b00'>No model: the plugin ships none; choose a file.</p>")
            return
        self.card_view.setHtml(f"<p>reading the card of {html.escape(str(model))}...</p>")
        self._ask("SAR Flood Mapper: model card", ["card", backend_path(str(model)), "--json"],
                  lambda answer, error, task, model=model: self._card_answered(model, answer, error, task))

    def _card_pending(self) -> None:
        """The card shown is no longer in force: another will be asked for."""
        self.card = self.backend_problem = None
        self._card_reading = True
        self.card_view.setHtml("<p>reading the model card...</p>")

    def _model_changed(self, _path: str) -> None:
        """The card shown is no longer the model's; it is asked for once typing pauses."""
        self._card_pending()
        self._card_timer.start()

    def _card_is_stale(self) -> bool:
        """Whether the model path, or the file behind it, changed since its card was asked
        for: a model that failed to load, copied again to the same path, stayed refused."""
        return _model_state(self.model_path()) != self._card_of

    def showEvent(self, event) -> None:   # noqa: N802 - Qt's name
        """Reopened: a model file replaced while the dialog was closed is read again, a
        backend that could not run is checked again (the advised command may have been run),
        and an input replaced by a run's output (its layer removed) is replaced."""
        super().showEvent(event)
        self._avoid_own_output()
        if self._backend_failing:
            self.refresh_backend()
        elif self._card_is_stale():
            self.refresh_card()

    def _card_answered(self, model: Path, answer, error, task: QueryTask) -> None:
        if model != self.model_path() or task.python_setting != python_setting():
            return  # the user picked another model or Python meanwhile
        self._card_reading = False
        if task.interpreter is not None and not task.interpreter.ok:
            self.backend_problem = error   # the model may be fine: no Python read its card
        if self._run_asked_recheck:
            self._run_asked_recheck = False
            if error and error == self.backend_info.text():   # said just above, in full
                self.show_status("The backend still cannot run: see above", error=True)
            else:
                self.show_status(error or "The backend runs now: press Run", error=bool(error))
        if error:
            self.card_view.setHtml(f"<p style='color:#b00'>{html.escape(error)}</p>")
            self.use_model_threshold.setText("the model's default")
        else:
            self.card = answer
            self.card_view.setHtml(card_html(answer))
            # the value itself: the box beside it keeps the analyst's own, for when unticked
            self.use_model_threshold.setText(
                f"the model's default ({answer['output']['default_threshold']:g})")
        self._show_vh_use()

    # --- settings and the request -------------------------------------------------------------

    def apply_settings(self, s: RunSettings) -> None:
        self.model.setFilePath(s.model)
        self.device.setCurrentIndex(max(0, self.device.findData(s.device)))
        self.use_model_threshold.setChecked(s.use_model_threshold)
        self.threshold.setValue(s.threshold)
        self.threshold.setEnabled(not s.use_model_threshold)
        self.units.setCurrentIndex(max(0, self.units.findData(s.units)))
        self.tile_size.setValue(s.tile_size)
        self.overlap.setValue(s.overlap)
        self.batch_size.setValue(s.batch_size)
        self.tta.setChecked(s.tta)
        self.temporary.setChecked(s.temporary)
        self.output_dir.setFilePath(s.output_dir)
        self.output_dir.setEnabled(not s.temporary)
        self.extent_mode.setCurrentIndex(max(0, self.extent_mode.findData(s.extent_mode)))
        self.extent_layer.setEnabled(s.extent_mode == "polygon")
        if s.extent_layer:
            self.extent_layer.setLayer(remembered_layer(s.extent_layer, s.extent_layer_source))
        self.two_layers.setChecked(s.two_layers)

    def current_settings(self) -> RunSettings:
        extent_layer = self.extent_layer.currentLayer()
        return RunSettings(
            model=self.model.filePath().strip(), device=self.device.currentData(),
            use_model_threshold=self.use_model_threshold.isChecked(), threshold=self.threshold.value(),
            units=self.units.currentData(), tile_size=self.tile_size.value(), overlap=self.overlap.value(),
            batch_size=self.batch_size.value(), tta=self.tta.isChecked(), temporary=self.temporary.isChecked(),
            output_dir=self.output_dir.filePath().strip(), extent_mode=self.extent_mode.currentData(),
            extent_layer=extent_layer.id() if extent_layer else "",
            extent_layer_source=extent_layer.source() if extent_layer else "",
            two_layers=self.two_layers.isChecked())

    def _extent(self, scene_layer) -> tuple[tuple | None, str | None]:
        """The extent chosen, checked against the input layer here, where the polygon layer
        can be named (the backend's refusal named the VV file and the order of typed
        coordinates)."""
        mode = self.extent_mode.currentData()
        if mode == "layer":
            return None, None
        if mode == "canvas":
            canvas = self.iface.mapCanvas()
            rect, crs, what = canvas.extent(), canvas.mapSettings().destinationCrs(), "the map canvas"
        else:
            layer = self.extent_layer.currentLayer()
            if layer is None:
                raise InputProblem("Extent: choose a polygon layer, or another extent option")
            if layer.featureCount() == 0:
                raise InputProblem(f"Extent: polygon layer '{layer.name()}' has no polygons")
            rect, crs, what = layer.extent(), layer.crs(), f"polygon layer '{layer.name()}'"
        if rect.isEmpty():
            raise InputProblem(f"Extent: the extent of {what} is empty")
        if scene_layer is not None and scene_layer.crs().isValid() and crs.isValid():
            try:
                seen = QgsCoordinateTransform(crs, scene_layer.crs(),
                                              QgsProject.instance()).transformBoundingBox(rect)
            except QgsCsException:   # not expressible there: the backend has the last word
                seen = None
            if seen is not None and not seen.intersects(scene_layer.extent()):
                raise InputProblem(f"Extent: {what} does not overlap the input layer "
                                   f"'{scene_layer.name()}'")
        return ((rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                crs_for_backend(crs))

    def request(self) -> RunRequest:
        """Build the run from the widgets; raises InputProblem naming what is wrong."""
        s = self.current_settings()
        model = self.model_path()
        if model is not None and model.is_dir():
            raise InputProblem(f"Model: {model} is a folder, not a model file")
        if model is None or not model.is_file():
            raise InputProblem(f"Model: {model or 'no model chosen'} does not exist")
        if self.card is None and self._card_reading:
            # chosen a moment ago, the question waiting for typing to pause: asked now
            if self._backend_timer.isActive():
                self.refresh_backend()
            elif self._card_timer.isActive():
                self.refresh_card()
            raise InputProblem(f"Model: reading the card of {model} (see the card box): run "
                               "once it shows")
        if self._card_is_stale():
            self.refresh_card()
            raise InputProblem(f"Model: {model} changed since its card was read; reading it "
                               "again (see the card box): run once it shows")
        if self.card is None and self.backend_problem:
            # the advised command may have been run since: asked again, off the GUI thread
            self._run_asked_recheck = True
            self.refresh_backend()
            raise InputProblem("Checking the backend again, as it could not run: press Run once "
                               "it answers")
        if self.card is None:
            raise InputProblem(f"Model: {model} has no valid model card (see the card box)")
        if s.tile_size % TILE_MULTIPLE:   # else the run starts, and the backend refuses it
            raise InputProblem(f"Tile size (Advanced): {s.tile_size} px is not a multiple of "
                               f"{TILE_MULTIPLE}; give one, or 0 for the model's")
        scene = self.current_scene()
        scene_layer = self.vv_layer.currentLayer() if s.two_layers else self.stack_layer.currentLayer()
        extent, extent_crs = self._extent(scene_layer)
        if s.temporary:
            folder = tempfile.mkdtemp(prefix="sarflood-", dir=QgsProcessingUtils.tempFolder())
        else:
            folder = s.output_dir
            if not folder:
                raise InputProblem("Output folder: choose a folder, or tick temporary files")
            if Path(folder).is_file():
                raise InputProblem(f"Output folder: '{folder}' is a file, not a folder; choose a "
                                   f"folder or temporary files")
            if not Path(folder).is_dir():
                raise InputProblem(f"Output folder: '{folder}' does not exist; choose a folder or "
                                   f"temporary files")
        kinds = ["water_mask", "water_probability"] + (["uncertainty"] if s.tta else [])
        paths = free_output_paths(folder, output_stem(scene_layer.source()), kinds)
        params = PredictParams(
            scene=scene, mask=paths["water_mask"], probability=paths["water_probability"],
            uncertainty=paths.get("uncertainty"), model=str(model), device=s.device,
            threshold=None if s.use_model_threshold else s.threshold, units=s.units or None,
            tile_size=s.tile_size or None, overlap=None if s.overlap < 0 else s.overlap,
            batch_size=s.batch_size or None, tta=s.tta, extent=extent, extent_crs=extent_crs)
        return RunRequest(params, f"Flood map: {scene_layer.name()}", scene_layer.id())

    def start(self) -> None:
        try:
            request = self.request()
        except InputProblem as problem:
            self.show_status(str(problem), error=True)
            return
        self.current_settings().save()
        self.runRequested.emit(request)

    # --- feedback from the controller ---------------------------------------------------------

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress.setValue(0)

    def set_progress(self, percent: float) -> None:
        self.progress.setValue(int(percent))

    def show_status(self, text: str, error: bool = False) -> None:
        self._status_error = error
        self.status.setStyleSheet("color: #b00;" if error else "")
        self.status.setText(text)

    def _cancel(self) -> None:
        self.show_status("Cancelling: the backend is stopping...")   # it may take a second
        self.cancelRequested.emit()

    def _forget_stale_error(self, *_) -> None:
        if self._status_error and self.run_button.isEnabled():   # not while a run goes on
            self.show_status("")
