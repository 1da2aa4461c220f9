"""Sentinel-2 Level-1C top-of-atmosphere reflectance, 13 bands, from the scene.

Each effect, with its source or reasoning:

- Surface spectra of clear and sediment-laden water, green vegetation, bare
  soil, forest and built-up land: approximate band means of the typical shapes
  in the USGS Spectral Library v7 (Kokaly et al. 2017) - water dark beyond red,
  vegetation's red edge and NIR plateau, soil rising to SWIR - chosen so the
  indices behave as documented (dense vegetation NDVI 0.6-0.9, water MNDWI
  well above 0). Turbid flood water is bright in green and red and reflects
  some NIR (Doxaran et al. 2002, "Spectral signature of highly turbid waters",
  RSE 81).
- Mixed pixels: fields mix vegetation and soil by crop vigour; flooded
  vegetation mixes its canopy with the water between the stems.
- Shallow water shows its bottom through Beer-Lambert absorption by pure water,
  strongest in NIR and total in SWIR (absorption coefficients after Pope and
  Fry 1997, Applied Optics 36(33), and Kou et al. 1993, Applied Optics 32(19)).
  So shallow floods keep MNDWI high but can fail NDWI.
- Atmosphere: TOA = path reflectance + two-way transmittance x surface. The
  path reflectance is the Rayleigh part (optical depth about 0.24 at 443 nm,
  0.15 at 490 nm, 0.09 at 560 nm, falling as lambda^-4; Bodhaine et al. 1999,
  J. Atmos. Oceanic Technol. 16) plus a typical aerosol part, scaled per chip
  for haze; B9 and B10 lie in water-vapour bands and see little of the surface.
- Terrain illumination: direct sunlight scales with the cosine of the local
  solar incidence (Lambertian), diffuse skylight does not.
- Clouds: smooth opacity fields with soft, thin edges, blended over the scene;
  thick cloud is bright and white in VNIR and lifts cirrus band B10.
- Cloud shadows: the cloud field shifted away from the sun by cloud height /
  tan(sun elevation); in shadow only the diffuse skylight remains, a larger
  share in the blue, so shadows are dark in NIR and SWIR (the property Fmask
  uses, Zhu and Woodcock 2012, RSE 118).
- Sensor noise is left out: Sentinel-2 radiometric noise (SNR > 100) is below
  the quantisation of 1e-4 reflectance that matters for these indices.
"""
from __future__ import annotations

import numpy as np

from ..data.conventions import S2_SCALE
from . import noise
from .events import ChipParams
from .landcover import BARE, CROP, FLOODED_VEG, FOREST, OPEN_WATER, ROAD, URBAN, LandCover
from .terrain import PIXEL_M, Terrain

#                B1     B2     B3     B4     B5     B6     B7     B8    B8A     B9    B10    B11    B12
CLEAR_WATER = (0.040, 0.040, 0.045, 0.025, 0.018, 0.012, 0.010, 0.008, 0.007, 0.005, 0.000, 0.003, 0.002)
TURBID_WATER = (0.050, 0.060, 0.100, 0.105, 0.100, 0.080, 0.075, 0.070, 0.065, 0.040, 0.000, 0.012, 0.008)
VEGETATION = (0.030, 0.035, 0.070, 0.040, 0.100, 0.280, 0.340, 0.360, 0.380, 0.360, 0.000, 0.200, 0.100)
SOIL = (0.090, 0.100, 0.140, 0.180, 0.200, 0.220, 0.240, 0.260, 0.270, 0.270, 0.000, 0.330, 0.280)
FOREST_SR = (0.020, 0.025, 0.045, 0.025, 0.070, 0.220, 0.270, 0.290, 0.300, 0.300, 0.000, 0.140, 0.060)
BUILT = (0.100, 0.110, 0.120, 0.130, 0.140, 0.160, 0.170, 0.180, 0.190, 0.190, 0.000, 0.200, 0.180)
CLOUD_TOA = (0.420, 0.420, 0.420, 0.420, 0.430, 0.440, 0.450, 0.450, 0.450, 0.300, 0.080, 0.320, 0.220)
PATH = (0.100, 0.075, 0.050, 0.030, 0.025, 0.020, 0.017, 0.014, 0.013, 0.010, 0.0008, 0.004, 0.002)
TRANSMIT = (0.70, 0.75, 0.82, 0.87, 0.88, 0.90, 0.90, 0.91, 0.91, 0.15, 0.01, 0.92, 0.90)
DIFFUSE = (0.35, 0.30, 0.22, 0.17, 0.15, 0.13, 0.12, 0.11, 0.11, 0.10, 0.10, 0.07, 0.06)
# pure-water absorption, 1/m, at the band centres (approximate; see module notes)
WATER_ABSORPTION = (0.007, 0.015, 0.062, 0.43, 0.65, 2.7, 2.4, 4.5, 4.6, 35.0, 1000.0, 700.0, 2000.0)

ENDMEMBERS = np.array([CLEAR_WATER, TURBID_WATER, VEGETATION, SOIL, FOREST_SR, BUILT], np.float32)
_CLEAR, _TURBID, _VEG, _SOIL, _FOREST, _BUILT = range(6)
# Band indices by native resolution, 10 m, 20 m and 60 m (ESA Sentinel-2 User
# Handbook). Sen1Floods11 resampled every band to 10 m, so coarse bands show
# as blocks of 2x2 and 6x6 pixels; simulating them coarse is also cheaper.
BAND_GROUPS = ((1, (1, 2, 3, 7)), (2, (4, 5, 6, 8, 11, 12)), (6, (0, 9, 10)))
_SHALLOW_M = 1.0
SHADOW_DEPTH = 0.75   # share of direct sunlight a cloud of full opacity blocks


def _vec(values: tuple[float, ...], idx: tuple[int, ...]) -> np.ndarray:
    return np.array(values, np.float32)[list(idx), None]


def mixture(t: Terrain, lc: LandCover, turbidity: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel endmember weights (6, H, W) and the weight of visible shallow bottom (H, W)."""
    size = lc.cls.shape[0]
    cls, under, v = lc.cls, lc.under, lc.vigour
    turb = np.clip(turbidity + 0.2 * noise.blobs(rng, size, scale=60), 0.0, 1.0)
    fv = cls == FLOODED_VEG
    water_share = (cls == OPEN_WATER) + fv * (1.0 - lc.canopy)
    w = np.zeros((6, size, size), np.float32)
    w[_CLEAR] = water_share * (1.0 - turb)
    w[_TURBID] = water_share * turb
    farm = (cls == CROP) | (cls == BARE)
    urban = cls == URBAN
    fv_forest = fv & (under == FOREST)
    w[_FOREST] = (cls == FOREST) + fv_forest * lc.canopy
    w[_VEG] = farm * v + (fv & ~fv_forest) * lc.canopy + 0.15 * urban
    w[_SOIL] = farm * (1.0 - v) + 0.10 * urban
    road = cls == ROAD        # tarmac with its verges, within a 10 m pixel
    w[_BUILT] = 0.75 * urban + 0.6 * road
    w[_SOIL] += 0.4 * road
    # shallow open water shows its (wet, darker) bottom unless sediment hides it
    bottom = ((cls == OPEN_WATER) & (t.depth < _SHALLOW_M)) * (1.0 - turb)
    return w, bottom.astype(np.float32)


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the last two axes (edge-padded to a multiple of f)."""
    if f == 1:
        return x
    h = x.shape[-1]
    pad = (-h) % f
    if pad:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, pad)], mode="edge")
    # strided sums, rows then columns: much faster than a reshaped mean over two axes
    rows = sum(x[..., i::f, :] for i in range(f))
    return sum(rows[..., j::f] for j in range(f)) * (1.0 / (f * f))


def clouds(p: ChipParams, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity and cloud-shadow opacity, both 0..1, (H, W)."""
    if p.cloud_frac <= 0:
        zero = np.zeros((size, size), np.float32)
        return zero, zero
    field = noise.blobs(rng, size, scale=rng.uniform(50, 150)) + 0.4 * noise.fractal(rng, size, 2.5, 4.0)
    t = noise.threshold_for_fraction(field, p.cloud_frac)
    alpha = np.clip((field - t) / 0.6, 0.0, 1.0).astype(np.float32)
    # shadow lies away from the sun, offset by cloud height / tan(sun elevation)
    offset_px = rng.uniform(800, 3000) / np.tan(np.radians(p.sun_elevation_deg)) / PIXEL_M
    az = np.radians(p.sun_azimuth_deg)
    dx, dy = -offset_px * np.sin(az), offset_px * np.cos(az)   # rows run south
    shadow = np.roll(alpha, (int(round(dy)), int(round(dx))), axis=(0, 1))
    return alpha, shadow


def direct_light(t: Terrain, p: ChipParams) -> np.ndarray:
    """Direct-sun illumination relative to flat ground: cos(local) / cos(zenith), >= 0."""
    gx, gy = t.gx, t.gy
    zen = np.radians(90.0 - p.sun_elevation_deg)
    az = np.radians(p.sun_azimuth_deg)
    # surface normal (east, north, up) with rows running south: d/dnorth = -d/drow
    cos_i = (-gx * np.sin(zen) * np.sin(az) + gy * np.sin(zen) * np.cos(az) + np.cos(zen))
    cos_i /= np.sqrt(1.0 + gx * gx + gy * gy)
    return np.maximum(cos_i / np.cos(zen), 0.0).astype(np.float32)


def _toa_group(idx: tuple[int, ...], w: np.ndarray, px: np.ndarray, haze: float) -> np.ndarray:
    """Stored TOA values (reflectance x 10000) of some bands, (len(idx), n) int16.

    ``w``: (6, n) endmember weights; ``px``: rows bottom, depth, gain, direct, alpha.
    Constant factors are folded into the endmember matrix to save passes over the data.
    """
    bottom, depth, gain, direct, alpha = px
    scale = _vec(TRANSMIT, idx) * S2_SCALE
    # einsum, not a matrix product: BLAS would spread over threads
    toa = np.einsum("kb,kn->bn", ENDMEMBERS[:, list(idx)] * scale.T, w)
    wet = np.flatnonzero(bottom > 0)
    if wet.size:
        attenuation = np.exp(-2.0 * _vec(WATER_ABSORPTION, idx) * depth[wet][None])
        toa[:, wet] += (0.6 * _vec(SOIL, idx) * scale) * attenuation * bottom[wet][None]
    diffuse = _vec(DIFFUSE, idx)
    toa *= gain[None]
    toa *= diffuse + (1.0 - diffuse) * direct[None]
    toa += _vec(PATH, idx) * (haze * S2_SCALE) + 0.5   # + 0.5: round on the cast (all positive)
    if alpha.any():
        toa *= 1.0 - alpha[None]
        toa += (_vec(CLOUD_TOA, idx) * S2_SCALE) * alpha[None]
    return np.minimum(toa, 32767.0, out=toa).astype(np.int16)


def _expand(out: np.ndarray, idx: tuple[int, ...], coarse: np.ndarray, f: int) -> None:
    """Write coarse (len(idx), n, n) values into ``out[idx]`` as f x f blocks."""
    size = out.shape[-1]
    for i in range(f):
        rows = len(range(i, size, f))
        for j in range(f):
            cols = len(range(j, size, f))
            for k, band in enumerate(idx):   # plain slices: no fancy-index copies
                out[band, i::f, j::f] = coarse[k, :rows, :cols]


def simulate(p: ChipParams, t: Terrain, lc: LandCover, tex: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(13, H, W) int16 TOA reflectance x 10000 (never 0), cloud opacity, chip statistics."""
    size = lc.cls.shape[0]
    w, bottom = mixture(t, lc, p.turbidity, rng)
    # brightness texture: buildings vary pixel by pixel (the same grain the radar
    # sees), fields and canopies smoothly at 20-50 m
    smooth_tex = noise.fractal(rng, size, beta=2.5, min_wavelength=4.0)
    gain = np.where(lc.cls == URBAN, 1.0 + 0.1 * tex + 0.2 * np.clip(lc.grain, -2, 2), 1.0 + 0.06 * smooth_tex)
    alpha, shadow = clouds(p, size, rng)
    direct = direct_light(t, p) * (1.0 - SHADOW_DEPTH * shadow)
    px = np.stack([bottom, t.depth, gain, direct, alpha])
    out = np.empty((13, size, size), np.int16)
    coarse_w, coarse_px, done = w, px, 1
    for factor, idx in BAND_GROUPS:
        # block means of the previous level: 10 m -> 20 m -> 60 m
        coarse_w = _block_mean(coarse_w, factor // done)
        coarse_px = _block_mean(coarse_px, factor // done)
        done = factor
        n = coarse_w.shape[-1]
        toa = _toa_group(idx, coarse_w.reshape(6, -1), coarse_px.reshape(5, -1), p.haze)
        _expand(out, idx, toa.reshape(len(idx), n, n), factor)
    stats = {"cloud_frac": float((alpha > 0.5).mean()),
             "cloud_shadow_frac": float(((shadow > 0.5) & (alpha <= 0.5)).mean())}
    return out, alpha, stats
