"""The generated scene: deterministic, water/land/no-data where the truth says."""
import numpy as np
import rasterio

from backend.scene import Scene, write_scene


def test_scene_is_deterministic_and_its_water_does_not_depend_on_blocks():
    scene = Scene(300, 400, seed=3)
    whole, water = scene.block(0, 0, 300, 400)
    assert np.array_equal(scene.block(100, 150, 50, 60)[1], water[100:150, 150:210])
    again = Scene(300, 400, seed=3).block(0, 0, 300, 400)[0]
    assert np.array_equal(whole, again, equal_nan=True)


def test_scene_has_water_land_and_no_data(tmp_path):
    write_scene(str(tmp_path / "s.tif"), (600, 700), seed=1, units="linear",
                truth=str(tmp_path / "t.tif"))
    with rasterio.open(tmp_path / "s.tif") as s, rasterio.open(tmp_path / "t.tif") as t:
        assert s.count == 2 and s.descriptions == ("VV", "VH") and s.units == ("linear", "linear")
        x, truth = s.read(), t.read(1)
    assert np.array_equal(np.isnan(x[0]), truth == 255)
    water, land = x[0][truth == 1], x[0][truth == 0]
    assert 0.05 < water.size / (water.size + land.size) < 0.6
    assert np.median(10 * np.log10(water)) < -17 < -12 < np.median(10 * np.log10(land))
