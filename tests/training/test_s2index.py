"""The Sentinel-2 index labellers on hand-built stacks whose labels are known."""
import numpy as np

from training.data import s2index
from training.data.conventions import S2_BANDS


def _stack(water: np.ndarray) -> np.ndarray:
    """Stored values (reflectance x 10000): clear water where ``water``, else grass."""
    s2 = np.full((len(S2_BANDS), *water.shape), 1500, np.uint16)
    for band, wet, dry in (("B2", 900, 600), ("B3", 800, 900), ("B4", 500, 700),
                           ("B8", 200, 3500), ("B11", 100, 2000)):
        s2[S2_BANDS.index(band)] = np.where(water, wet, dry)
    return s2


def test_a_zero_in_a_band_the_rule_does_not_read_leaves_the_label():
    """Real Sen1Floods11 stacks hold exact zeros in B10 (cirrus) over clear scenes: those
    pixels keep their label; a zero in a band a rule reads makes them -1 for that rule."""
    water = np.zeros((4, 4), bool)
    water[:, :2] = True
    s2 = _stack(water)
    s2[S2_BANDS.index("B10")] = 0
    s2[S2_BANDS.index("B11"), 0, 0] = 0    # read by the MNDWI rule, not by NDWI
    s2[S2_BANDS.index("B8"), 3, 3] = 0     # read by both
    s1f11 = s2index.s1f11_weak(s2)
    ndwi = s2index.ndwi_weak(s2)
    expected = water.astype(np.int16)
    for label, holes in ((s1f11, [(0, 0), (3, 3)]), (ndwi, [(3, 3)])):
        want = expected.copy()
        for r, c in holes:
            want[r, c] = -1
        np.testing.assert_array_equal(label, want)


def test_s1f11_water_needs_mndwi_above_0_and_ndvi_below_0_2_and_clear_sky():
    """Each pixel changes one band of a water pixel (MNDWI 0.06, NDVI 0.07): vegetated
    water (NDVI on either side of 0.2), MNDWI exactly 0, blue exactly at the cloud
    threshold (TOA 0.25) and just under it."""
    columns = [({}, 1),
               ({"B8": 3000}, 0),                  # NDVI 0.62: MNDWI > 0 alone is not water
               ({"B8": 1035}, 1), ({"B8": 1065}, 0),   # NDVI 0.193, 0.207
               ({"B11": 900}, 0),                  # MNDWI 0: not above 0
               ({"B2": 2500}, -1), ({"B2": 2499}, 1)]
    s2 = _stack(np.zeros((1, len(columns)), bool))
    for c, (bands, _) in enumerate(columns):
        for band, value in {"B2": 600, "B3": 900, "B4": 700, "B8": 800, "B11": 800,
                            **bands}.items():
            s2[S2_BANDS.index(band), 0, c] = value
    np.testing.assert_array_equal(s2index.s1f11_weak(s2)[0], [want for _, want in columns])
