"""Exact WGS 84 areas and lengths, written from the ellipsoid's closed forms.

Independent of the backend's series for the length of a degree, so tests can
check its per-row pixel areas and pixel sizes against them.
"""
from __future__ import annotations

import numpy as np

A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
E = np.sqrt(E2)
B2 = A * A * (1 - E2)


def _q(phi: np.ndarray) -> np.ndarray:
    s = np.sin(phi)
    return s / (1 - E2 * s * s) + np.log((1 + E * s) / (1 - E * s)) / (2 * E)


def band_area_m2(lat1_deg, lat2_deg, dlon_deg: float) -> np.ndarray:
    """Area between two parallels over ``dlon_deg`` of longitude (the authalic-latitude
    closed form: A = b^2 dlambda / 2 [q(phi2) - q(phi1)])."""
    lo, hi = np.minimum(lat1_deg, lat2_deg), np.maximum(lat1_deg, lat2_deg)
    return B2 * np.radians(dlon_deg) / 2 * (_q(np.radians(hi)) - _q(np.radians(lo)))


def row_areas_m2(top_deg: float, pixel_deg: float, rows: int) -> np.ndarray:
    """True area of one pixel in each row of a north-up EPSG:4326 grid starting at ``top_deg``."""
    edges = top_deg - pixel_deg * np.arange(rows + 1)
    return band_area_m2(edges[1:], edges[:-1], pixel_deg)


def metres_per_degree_exact(lat_deg: float) -> tuple[float, float]:
    """(east-west, north-south) metres per degree: N cos(phi) and the meridian radius M."""
    phi = np.radians(lat_deg)
    w = 1 - E2 * np.sin(phi) ** 2
    n = A / np.sqrt(w)
    m = A * (1 - E2) / w ** 1.5
    return float(np.radians(1) * n * np.cos(phi)), float(np.radians(1) * m)


def pixel_areas_m2(crs: str, transform, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True area of the pixels (rows[i], cols[j]) of a projected grid, (len(rows), len(cols)):
    each pixel's corners are taken to longitude and latitude and the quadrilateral measured
    in (longitude, b^2 q(latitude) / 2), a map that keeps the ellipsoid's areas (the
    closed form of :func:`band_area_m2`). Pixels are small enough for straight sides."""
    from rasterio.warp import transform as warp

    r = np.repeat(rows, len(cols))[:, None] + np.array([0, 0, 1, 1])
    c = np.tile(cols, len(rows))[:, None] + np.array([0, 1, 1, 0])
    x, y = transform @ (c.ravel().astype(float), r.ravel().astype(float))
    lon, lat = (np.reshape(v, c.shape) for v in warp(crs, "EPSG:4326", x, y))
    u, v = np.radians(np.asarray(lon)), B2 / 2 * _q(np.radians(np.asarray(lat)))
    shoelace = (u * np.roll(v, -1, axis=1) - np.roll(u, -1, axis=1) * v).sum(axis=1)
    return (np.abs(shoelace) / 2).reshape(len(rows), len(cols))
