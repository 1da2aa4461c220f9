"""Render SAR with the plugin-styled water mask over it, offscreen, and check pixels on the PNG.

The PNG stays in tests/artifacts/ for a person to look at.
"""
import numpy as np
from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

from .conftest import ARTIFACTS, read_raster
from .screenshot import show_vv_in_grey


def _interior(mask: np.ndarray, value: int, margin: int = 4) -> tuple[int, int]:
    """A pixel whose whole (2 margin + 1)^2 neighbourhood holds ``value``: safe from edge blending."""
    hits = mask == value
    inner = np.ones_like(hits)
    for dr in range(-margin, margin + 1):
        for dc in range(-margin, margin + 1):
            inner &= np.roll(np.roll(hits, dr, 0), dc, 1)
    inner[:margin], inner[-margin:], inner[:, :margin], inner[:, -margin:] = False, False, False, False
    rows, cols = np.nonzero(inner)
    assert rows.size, f"no interior pixel of value {value}"
    k = rows.size // 2
    return int(rows[k]), int(cols[k])


def test_render_sar_with_mask(provider, models, real_chips, tmp_path):
    import processing
    from sarflood.plugin.styles import mask_renderer

    chip = real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif"
    out = processing.run("sarflood:mapwater", {"INPUT": str(chip), "MODEL": str(models["threshold"]),
                                               "OUTPUT_MASK": str(tmp_path / "mask.tif")})
    sar = QgsRasterLayer(str(chip), "SAR VV")
    show_vv_in_grey(sar)
    mask = QgsRasterLayer(out["OUTPUT_MASK"], "water")
    mask.setRenderer(mask_renderer(mask.dataProvider()))

    settings = QgsMapSettings()
    settings.setLayers([mask, sar])  # first is on top
    settings.setDestinationCrs(sar.crs())
    settings.setExtent(sar.extent())
    settings.setOutputSize(QSize(sar.width(), sar.height()))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / "render_spain_sar_mask.png"
    assert image.save(str(png), "PNG")

    values = read_raster(out["OUTPUT_MASK"])
    assert (image.width(), image.height()) == (values.shape[1], values.shape[0])
    row, col = _interior(values, 1)
    water = image.pixelColor(col, row)
    assert (water.red(), water.green(), water.blue()) == (0, 92, 230), water.name()
    row, col = _interior(values, 0)
    dry = image.pixelColor(col, row)
    vv = read_raster(chip)[0][row, col]
    grey = round(255 * (vv + 25.0) / 25.0)
    assert dry.red() == dry.green() == dry.blue(), dry.name()
    assert abs(dry.red() - min(255, max(0, grey))) <= 2, (dry.name(), vv)


def test_the_readme_picture_is_made_by_its_script(real_chips, tmp_path):
    """tests/plugin/screenshot.py draws the README's picture from a real run: it must still run."""
    import os
    import subprocess
    import sys

    from qgis.PyQt.QtGui import QImage

    from .conftest import REPO

    out = tmp_path / "picture.png"
    before = sorted(p.name for p in (real_chips / "S1Hand").iterdir())
    done = subprocess.run([sys.executable, "-m", "tests.plugin.screenshot", "--out", str(out),
                           "--chip", str(real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    picture = QImage(str(out))
    assert picture.width() > 1200 and picture.height() >= 800
    assert not list(tmp_path.glob(".*partial*"))
    # QGIS wrote its statistics beside the chip it drew: into ../shared, where it read it
    assert sorted(p.name for p in (real_chips / "S1Hand").iterdir()) == before


def test_the_layers_panel_shows_what_the_ramps_values_mean(two_band_scene):
    """QGIS drew the probability and uncertainty ramps' legends as gradients labelled with
    their end values only ("0.25", "0"): the words saying what they mean never showed."""
    from qgis.core import QgsLayerTreeLayer
    from qgis.PyQt.QtCore import Qt
    from sarflood.plugin.styles import probability_renderer, uncertainty_renderer

    layer = QgsRasterLayer(str(two_band_scene), "any float band")
    for renderer, words in ((uncertainty_renderer, ["0: the 8 flips and rotations agree", "0.12",
                                                    ">= 0.25: water probability differs widely"]),
                            (probability_renderer, ["0 (dry)", "0.5", "1 (water)"])):
        layer.setRenderer(renderer(layer.dataProvider()))
        nodes = layer.legend().createLayerTreeModelLegendNodes(QgsLayerTreeLayer(layer))
        shown = [n.data(Qt.ItemDataRole.DisplayRole) for n in nodes]
        assert shown[1:] == words, shown   # under the band's name
