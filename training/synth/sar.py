"""Sentinel-1 IW GRD backscatter, VV and VH in dB, from the scene.

Each effect, with its source or reasoning (values are sigma0 at the scene's
incidence angle, roughly 30-45 deg):

- Calm open water is a specular reflector, dark: VV about -23, VH about -28 dB
  (Twele et al. 2016, "Sentinel-1-based flood mapping: a fully automated
  processing chain", IJRS 37(13): water below about -18 dB VV; Martinis et al.
  2015, Remote Sensing 7(6), in the paper's refs).
- Wind roughens open water (Bragg waves) and brightens VV: a power law of wind
  speed near CMOD5 at 35-40 deg averaged over wind direction (Hersbach et al.
  2007, "An improved C-band scatterometer ocean geophysical model function:
  CMOD5", JGR 112), about -21 dB at 3 m/s and -14 dB at 7 m/s; below about
  2 m/s no Bragg waves form. Sheltered water near shores stays calm (short
  fetch). Cross-pol rises far less: VH about 14 dB below VV.
- Crops and grass: VV about -9.5, VH about -15.5 dB at full cover; bare soil
  about -11.5 / -19.5 dB; each field is offset by its roughness and moisture
  (std 1.5 dB) (ranges of Veloso et al. 2017, "Understanding the temporal
  behavior of crops using Sentinel-1 and Sentinel-2-like data", RSE 199).
  Bare fields range from smooth (dark, a water look-alike) to ploughed
  (bright): std 2.5 dB (soil roughness dominates C-band soil backscatter;
  Ulaby and Dobson 1989).
- Roads: tarmac is smooth at the 5.5 cm wavelength (Rayleigh criterion) and
  reflects specularly: VV about -18, VH about -26 dB, a thin water look-alike.
- Forest, volume scattering: VV about -7.5, VH about -13 dB (gamma0 of
  tropical forest about -6.5 dB VV, the classic C-band calibration target,
  times cos(37 deg)).
- Urban: dihedral walls-and-ground reflection makes towns bright, VV about
  +0.5 dB, with point targets far brighter and streets dark (a per-pixel
  texture of std 5 dB) (Ulaby and Dobson 1989, "Handbook of Radar Scattering
  Statistics for Terrain"). A dihedral returns the polarisation it was sent
  (cross-pol comes from volume scattering; Lee and Pottier 2009, "Polarimetric
  Radar Imaging"), so towns keep VH about 11 dB below VV.
- Flooded vegetation: water under stems forms a double-bounce dihedral, VV
  up to several dB above the same vegetation when dry, VH little changed; the
  increase varies with plant density, water depth and incidence, from none to
  several dB (Tsyganskaya et al. 2018, "SAR-based detection of flooded
  vegetation - a review of characteristics and approaches", IJRS 39(8)):
  per chip +0..6 dB for crops and grass, -1..+3 dB under forest (C-band is
  attenuated by the canopy), varying by patch with std 1.5 dB.
- Terrain: Sentinel-1 GRD as Sen1Floods11 took it from Earth Engine is
  orthorectified but not terrain-flattened, so slopes facing the radar are
  bright and slopes facing away dark: sigma0 scales with (cos local incidence
  / cos incidence)^n and with the ground-area ratio sin(incidence) / sin(local
  incidence) (Ulander 1996, "Radiometric slope correction of synthetic-aperture
  radar images", IEEE TGRS 34(5); Small 2011, "Flattening gamma", IEEE TGRS 49(8)).
- Radar shadow: ground hidden behind a ridge along the look direction returns
  only noise, as dark as calm water: found by a running maximum of
  ``h + x / tan(incidence)`` along range. Layover: where slant range folds back
  (a running minimum of ``x sin(inc) - h cos(inc)``) returns of several slopes
  add up: about 3x brighter.
- Noise floor: the residual noise after Sentinel-1 thermal-noise removal,
  about -30 dB VV and -32 dB VH (the instrument's NESZ is below -22 dB,
  Torres et al. 2012, "GMES Sentinel-1 mission", RSE 120).
- Speckle: multi-look intensity is gamma distributed with shape ENL (Goodman
  1976; Lee and Pottier 2009); IW GRDH has ENL 4.4 (ESA Sentinel-1 User Guide,
  Level-1 GRD products). Speckle is spatially correlated because the 20x22 m
  resolution cell spans about 2 of the 10 m pixels: single-look (exponential)
  intensity blurred by a separable 3-tap kernel chosen to give ENL 4.4.
- Radiometric calibration: a per-chip offset of std 0.3 dB (Sentinel-1
  absolute calibration is within 1 dB, 3 sigma; Torres et al. 2012).
"""
from __future__ import annotations

import numpy as np

from . import noise
from .events import ChipParams
from .landcover import BARE, CROP, FLOODED_VEG, FOREST, OPEN_WATER, ROAD, URBAN, LandCover
from .terrain import PIXEL_M, Terrain

ENL = 4.4
# dB at the scene's incidence angle: (VV, VH)
WATER_CALM_DB = (-23.0, -28.0)
CROP_DB = (-9.5, -15.5)
BARE_DB = (-11.5, -19.5)
FOREST_DB = (-7.5, -13.0)
URBAN_DB = (0.5, -10.5)
ROAD_DB = (-18.0, -26.0)
NOISE_FLOOR_DB = (-30.0, -32.0)
WIND_VH_BELOW_VV_DB = 14.0
LAYOVER_GAIN = 3.0
# flooded vegetation, VV change over the same plants dry: per chip (crops and grass, forest), then
# varying by patch; VH changes less
FV_LOW_DB, FV_FOREST_DB, FV_VH_DB, FV_PATCH_DB = (0.0, 6.0), (-1.0, 3.0), (-1.0, 2.0), 1.5
URBAN_GRAIN_DB = 5.0
# angular exponent n of (cos local / cos incidence)^n: steeper for surface than volume scattering
ANGULAR_N = {CROP: 1.5, BARE: 2.0, FOREST: 1.0, URBAN: 1.0, ROAD: 2.0}
_ANGULAR_TABLE = np.array([ANGULAR_N.get(c, ANGULAR_N[CROP]) for c in range(7)], np.float32)


def _db(x: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(x)


def _lin(db: np.ndarray | float) -> np.ndarray:
    return np.exp(np.asarray(db, np.float32) * np.float32(np.log(10.0) / 10.0))


def geometry(t: Terrain, incidence_deg: float, look_from_east: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local-incidence cosine, shadow mask and layover mask.

    Range runs along image rows (Sentinel-1 flies near-polar and looks sideways,
    so range is close to east-west; the ~10 deg heading tilt is ignored).
    """
    theta = np.radians(incidence_deg)
    # a slope rising away from the radar faces it
    away = -t.gx if look_from_east else t.gx
    cos_loc = (away * np.sin(theta) + np.cos(theta)) / np.sqrt(1.0 + t.gx * t.gx + t.gy * t.gy)
    h = t.height[:, ::-1] if look_from_east else t.height   # radar on the left
    x = np.arange(h.shape[1], dtype=np.float32) * PIXEL_M
    ray = h + x / np.tan(theta)
    shadow = np.zeros(h.shape, bool)
    shadow[:, 1:] = np.maximum.accumulate(ray, axis=1)[:, :-1] > ray[:, 1:] + 1e-3
    slant = x * np.sin(theta) - h * np.cos(theta)
    later_min = np.minimum.accumulate(slant[:, ::-1], axis=1)[:, ::-1]
    layover = np.zeros(h.shape, bool)
    layover[:, :-1] = later_min[:, 1:] < slant[:, :-1]
    if look_from_east:
        shadow, layover = shadow[:, ::-1], layover[:, ::-1]
    return cos_loc.astype(np.float32), shadow, layover


def wind_sigma0_vv(wind_ms: np.ndarray) -> np.ndarray:
    """Linear VV sigma0 added by wind waves (see module notes)."""
    u = np.maximum(wind_ms, 1e-3)
    bragg = _lin(-21.0 + 20.0 * np.log10(u / 3.0))
    onset = np.clip((u - 1.5) / 2.0, 0.0, 1.0)  # capillary waves need about 2 m/s
    return bragg * onset * onset * (3 - 2 * onset)


def _look_kernel(enl: float) -> tuple[float, float, float]:
    """Symmetric 3-tap weights (a, 1 - 2a, a) whose separable 3x3 blur turns
    single-look intensity (ENL 1) into ENL ``enl``: (2a^2 + b^2)^2 = 1 / enl."""
    s = 1.0 / np.sqrt(enl)
    a = (4.0 - np.sqrt(16.0 - 24.0 * (1.0 - s))) / 12.0
    return a, 1.0 - 2.0 * a, a


def speckle(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-mean, spatially correlated multiplicative speckle with ENL 4.4.

    Single-look intensity is exponential; GRD processing averages neighbouring
    looks, here a separable 3-tap blur (edge rows and columns repeated).
    """
    a, b, _ = _look_kernel(ENL)
    g = rng.standard_exponential(size=shape, dtype=np.float32)
    for axis in (-2, -1):
        out = g * b
        side = g * a
        lo = [slice(None)] * g.ndim
        hi = [slice(None)] * g.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(hi)] += side[tuple(lo)]      # neighbour before
        out[tuple(lo)] += side[tuple(hi)]      # neighbour after
        first, last = [slice(None)] * g.ndim, [slice(None)] * g.ndim
        first[axis], last[axis] = slice(0, 1), slice(-1, None)
        out[tuple(first)] += side[tuple(first)]  # edges: the missing neighbour repeats the edge
        out[tuple(last)] += side[tuple(last)]
        g = out
    return g


def _land(pol: int, lc: LandCover, tex: np.ndarray) -> np.ndarray:
    """Linear sigma0 of the dry land cover under every pixel, one polarisation."""
    crop, bare = _lin(CROP_DB[pol]), _lin(BARE_DB[pol])
    sigma = (bare + lc.vigour * (crop - bare)) * lc.parcel_gain
    m = lc.under == FOREST
    sigma[m] = _lin(FOREST_DB[pol] + 0.8 * tex[m])
    m = lc.under == URBAN
    # point targets: wall-ground corners facing the radar are far brighter than streets
    sigma[m] = _lin(URBAN_DB[pol] + 2.0 * tex[m] + URBAN_GRAIN_DB * lc.grain[m])
    sigma[lc.under == ROAD] = _lin(ROAD_DB[pol])
    return sigma


def simulate(p: ChipParams, t: Terrain, lc: LandCover, tex: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, dict[str, float]]:
    """(2, H, W) float32 VV, VH in dB (finite everywhere), and chip statistics.

    ``tex`` is a unit-std texture shared with the optical simulation (forest
    canopy and buildings look rough to both sensors).
    """
    size = t.height.shape[0]
    cls, under = lc.cls, lc.under
    sigma = np.stack([_land(0, lc, tex), _land(1, lc, tex)])
    # flooded vegetation: double bounce lifts VV strongly, VH a little
    # (C-band is attenuated more by a forest canopy than by crops and grass)
    fv = cls == FLOODED_VEG
    if fv.any():
        patches = FV_PATCH_DB * noise.blobs(rng, size, scale=40)[fv]
        gain_vv_db = np.where(under[fv] == FOREST, rng.uniform(*FV_FOREST_DB), rng.uniform(*FV_LOW_DB))
        sigma[0][fv] *= _lin(gain_vv_db + patches)
        sigma[1][fv] *= _lin(rng.uniform(*FV_VH_DB) + 0.5 * patches)

    cos_loc, shadow, layover = geometry(t, p.incidence_deg, p.look_from_east)
    theta = np.radians(p.incidence_deg)
    cos_c = np.clip(cos_loc, np.cos(np.radians(89.0)), 1.0)
    sin_c = np.sqrt(1.0 - cos_c * cos_c).clip(np.sin(np.radians(5.0)), 1.0)
    n = _ANGULAR_TABLE[under]
    log_gain = n * np.log(cos_c / np.cos(theta)) + np.log(np.sin(theta) / sin_c)
    sigma *= np.exp(np.clip(log_gain, -20.0 / 4.343, 8.0 / 4.343))[None]   # 4.343 = 10 / ln 10

    water = cls == OPEN_WATER
    fetch = np.clip(1.6 * noise.smooth(water.astype(np.float32), 12.0)[water], 0.0, 1.0)
    gusts = np.clip(1.0 + 0.3 * noise.blobs(rng, size, scale=80)[water], 0.3, 2.0)
    wind = wind_sigma0_vv(p.wind_ms * gusts * fetch)
    sigma[0][water] = _lin(WATER_CALM_DB[0]) + wind
    sigma[1][water] = _lin(WATER_CALM_DB[1]) + wind * _lin(-WIND_VH_BELOW_VV_DB)

    if shadow.any():
        sigma[:, shadow] = 0.0
    if layover.any():
        sigma[:, layover] *= LAYOVER_GAIN
    sigma *= _lin(rng.normal(0.0, 0.3))
    sigma += np.array([_lin(NOISE_FLOOR_DB[0]), _lin(NOISE_FLOOR_DB[1])], np.float32)[:, None, None]
    sigma *= speckle(rng, sigma.shape)
    stats = {"shadow_frac": float(shadow.mean()), "layover_frac": float(layover.mean()),
             "wind_ms": p.wind_ms}
    return _db(sigma), stats
