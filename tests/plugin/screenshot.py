"""The README's picture: the run dialog, the map and the review dock after one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m tests.plugin.screenshot [--out resources/screenshot.png]

A real run of the plugin (headless QGIS, the bundled model, the backend as a child process)
on the real Sen1Floods11 chip Spain_7370579 from ../shared; the review dock's threshold is
moved to 0.40, as an analyst reviewing it might. Widgets are drawn by Qt's offscreen
platform, the map by QGIS's renderer; the three are set side by side. The chip is read from a
copy (QGIS writes statistics beside a raster it draws, and nothing is written into ../shared);
the run's files go to a temporary folder, removed at the end. Not collected by pytest (the
name does not start with test_).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
CHIP = REPO.parent / "shared" / "data" / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif"
GAP = 12   # px between the three pictures
MAP_PX = 512   # the chip's own pixels, one to one (its speckle takes most of the file's bytes)


def show_vv_in_grey(layer) -> None:
    """Draw a Sentinel-1 layer's band 1 (VV, dB) in grey from -25 (black) to 0 dB (white)."""
    from qgis.core import QgsContrastEnhancement, QgsSingleBandGrayRenderer

    grey = QgsSingleBandGrayRenderer(layer.dataProvider(), 1)
    stretch = QgsContrastEnhancement(layer.dataProvider().dataType(1))
    stretch.setContrastEnhancementAlgorithm(
        QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
    stretch.setMinimumValue(-25.0)
    stretch.setMaximumValue(0.0)
    grey.setContrastEnhancement(stretch)
    layer.setRenderer(grey)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "resources" / "screenshot.png"))
    parser.add_argument("--chip", default=str(CHIP))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sarflood-screenshot-"))
    try:
        return _draw(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _draw(args, work: Path) -> int:
    plugins = work / "plugins"
    plugins.mkdir()
    (plugins / "sarflood").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(plugins))

    from pytest_qgis.mock_qgis_classes import MockMessageBar
    from pytest_qgis.qgis_interface import QgisInterface
    from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings, QgsProject,
                           QgsRasterLayer)
    from qgis.gui import QgsMapCanvas
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter
    from qgis.PyQt.QtWidgets import QMainWindow

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    Processing.initialize()
    import sarflood

    def wait(condition) -> None:
        while not condition():
            app.processEvents()
            time.sleep(0.01)
        for _ in range(5):   # layouts settle
            app.processEvents()

    iface = QgisInterface(QgsMapCanvas(), MockMessageBar(), QMainWindow())
    plugin = sarflood.classFactory(iface)
    plugin.initGui()
    chip = work / Path(args.chip).name
    try:
        shutil.copyfile(args.chip, chip)
    except OSError as exc:
        raise SystemExit(f"{args.chip}: cannot be read ({exc.strerror or exc})") from None
    sar = QgsRasterLayer(str(chip), "Spain_7370579 (Sentinel-1)")
    if not sar.isValid():
        raise SystemExit(f"{args.chip}: not a raster QGIS can read")
    show_vv_in_grey(sar)
    QgsProject.instance().addMapLayer(sar)

    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(sar)
    wait(lambda: dialog.card is not None and "auto uses" in dialog.device_info.text())
    dialog.temporary.setChecked(False)
    (work / "run").mkdir()
    dialog.output_dir.setFilePath(str(work / "run"))
    finished = []
    plugin.controller.finished.connect(finished.append)
    dialog.start()   # what the Run button does
    wait(lambda: finished)
    if finished[0] is None:
        raise SystemExit(f"the run failed: {dialog.status.text()}")
    run = finished[0]
    dialog.resize(dialog.width(), 1000)
    dock = plugin.dock
    dock.threshold.setValue(0.40)
    dock.setFloating(True)
    dock.resize(380, 1000)
    wait(lambda: True)
    left, right = dialog.grab().toImage(), dock.grab().toImage()

    settings = QgsMapSettings()
    settings.setLayers([run.layers.probability, sar])   # at 0.40 the probability draws the water
    settings.setDestinationCrs(sar.crs())
    settings.setExtent(sar.extent())
    settings.setOutputSize(QSize(MAP_PX, MAP_PX))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    middle = job.renderedImage()

    picture = QImage(left.width() + middle.width() + right.width() + 2 * GAP,
                     max(left.height(), middle.height(), right.height()), QImage.Format.Format_RGB32)
    picture.fill(QColor(255, 255, 255))
    painter = QPainter(picture)
    x = 0
    for part in (left, middle, right):
        painter.drawImage(x, 0, part)
        x += part.width() + GAP
    painter.end()
    out = Path(args.out)
    partial = out.with_name(f".{out.name}.partial.png")
    if not picture.save(str(partial), "PNG", 0):   # 0: the smallest file Qt writes
        raise SystemExit(f"{out}: could not be written")
    partial.replace(out)
    print(out)
    plugin.unload()
    QgsProject.instance().removeAllMapLayers()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
