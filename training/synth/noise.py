"""Random fields by spectral synthesis: white noise shaped in the Fourier domain.

Natural terrain has a power spectrum that falls as a power of wavenumber,
``P(k) ~ k^-beta``, with beta near 3-4 for surfaces (Turcotte 1997, "Fractals
and Chaos in Geology and Geophysics", ch. 7). Shaping white noise by
``k^(-beta/2)`` and one inverse real FFT gives such a field in O(n log n); a
Gaussian filter instead gives the smooth blobs used for land cover, clouds and
wind. Fields are periodic, so a field shifted with ``np.roll`` stays seamless.

Speed: a smooth field holds no detail finer than a few pixels, so it is drawn
on a coarser grid and linearly interpolated up (a coarse grid still samples
the filter's passband with at least 4 points per feature, so nothing aliases).
Nothing here calls BLAS, so the generator runs on exactly one thread.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def _wavenumber(size: int) -> np.ndarray:
    """|k| in cycles per pixel on the rfft2 grid of a ``size`` x ``size`` field."""
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    return np.sqrt(kx * kx + ky * ky)


@lru_cache(maxsize=64)
def _power_filter(size: int, beta: float, min_wavelength: float) -> np.ndarray:
    k = _wavenumber(size)
    amp = np.zeros_like(k)
    nz = k > 0
    amp[nz] = k[nz] ** (-beta / 2.0)
    amp *= np.exp(-(k * min_wavelength) ** 2)  # no detail finer than min_wavelength pixels
    return amp.astype(np.float32)


@lru_cache(maxsize=64)
def _gauss_filter(size: int, sigma: float) -> np.ndarray:
    # Fourier transform of a Gaussian of std sigma pixels
    return np.exp(-2.0 * (np.pi * sigma * _wavenumber(size)) ** 2).astype(np.float32)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates, float32 (cached; do not modify)."""
    return _grid(size)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _upsample_axis(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Periodic linear interpolation from pixel centres to ``factor`` times finer centres.

    Output phase k sits at offset d = (k + 0.5) / factor - 0.5 from its coarse
    pixel, between it and the next (d >= 0) or previous (d < 0) one.
    """
    shape = list(a.shape)
    shape[axis] *= factor
    out = np.empty(shape, np.float32)
    after, before = np.roll(a, -1, axis), np.roll(a, 1, axis)
    for k in range(factor):
        d = (k + 0.5) / factor - 0.5
        phase = [slice(None)] * a.ndim
        phase[axis] = slice(k, None, factor)
        out[tuple(phase)] = (1.0 - abs(d)) * a + abs(d) * (after if d >= 0 else before)
    return out


def _upsample(field: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return field
    return _upsample_axis(_upsample_axis(field, factor, 0), factor, 1)


def _coarsening(size: int, feature_px: float) -> int:
    """Largest power-of-two factor leaving at least 4 samples across a feature."""
    factor = 1
    while factor < 8 and feature_px / (2 * factor) >= 4 and size % (2 * factor) == 0:
        factor *= 2
    return factor


def _shaped(rng: np.random.Generator, n: int, amp: np.ndarray) -> np.ndarray:
    spec = np.empty((n, n // 2 + 1), np.complex64)
    spec.real = rng.standard_normal(spec.shape, dtype=np.float32)
    spec.imag = rng.standard_normal(spec.shape, dtype=np.float32)
    spec *= amp
    return np.fft.irfft2(spec, s=(n, n)).astype(np.float32)


def _unit(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    std = field.std()
    return field / std if std > 0 else field


def fractal(rng: np.random.Generator, size: int, beta: float,
            min_wavelength: float = 2.0) -> np.ndarray:
    """Zero-mean field of about unit std with power spectrum ``k^-beta``."""
    factor = _coarsening(size, min_wavelength * 2)
    n = size // factor
    field = _shaped(rng, n, _power_filter(n, beta, min_wavelength / factor))
    # normalised before upsampling: cheaper, and interpolation keeps the mean
    return _upsample(_unit(field), factor)


def blobs(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean smooth field of about unit std, features about ``scale`` pixels across."""
    factor = _coarsening(size, scale)
    n = size // factor
    field = _shaped(rng, n, _gauss_filter(n, scale / 2.0 / factor))
    return _upsample(_unit(field), factor)


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with std ``sigma`` pixels (periodic boundary), float32."""
    size = image.shape[0]
    factor = _coarsening(size, 2 * sigma)
    n = size // factor
    coarse = image.reshape(n, factor, n, factor).mean(axis=(1, 3))
    spec = np.fft.rfft2(coarse) * _gauss_filter(n, sigma / factor)
    return _upsample(np.fft.irfft2(spec, s=(n, n)).astype(np.float32), factor)


def threshold_for_fraction(field: np.ndarray, fraction: float,
                           where: np.ndarray | None = None) -> float:
    """The value above which ``fraction`` of the field (or of its ``where`` part) lies."""
    sub = field[::4, ::4]  # a 1-in-16 subsample estimates a smooth field's quantile well
    if where is not None:
        sub = sub[where[::4, ::4]]
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction <= 0.0 or sub.size == 0:
        return float("inf")
    return float(np.quantile(sub, 1.0 - fraction))
