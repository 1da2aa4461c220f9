"""``python -m backend inspect``: what a run would make of its inputs, before running it.

The inputs are opened and checked exactly as ``predict`` opens them
(:func:`~backend.inputs.open_inputs`: same band naming, same ``--bands``, same
errors; a single-band input is the VV band a VV-only model reads, where a VV and VH
model refuses it at run time), and the units are found by the same code on the same pixel sample
(:func:`~backend.units.find_units` over :func:`~backend.raster_io.sample_grid`: at most
25 windows of 128 x 128 pixels), so the answer is what a run will say. No model is
loaded and only the sample is read, so it is quick on a raster of any size. The
plugin's run dialog shows it before a run, so the analyst can override the units.
"""
from __future__ import annotations

import math

from .card import UNITS
from .errors import UsageError
from .grid import grid_of
from .inputs import BAND_NAMES, InputSet, open_inputs
from .progress import Reporter
from .raster_io import WindowReader, gdal_env, sample_grid
from .units import find_units, one_or_each, zero_is_nodata, zero_note


class _Warnings(Reporter):
    """Keeps the warnings of units detection for the answer instead of printing them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, message: str) -> None:
        self.messages.append(message)


def _number(value: float | None) -> float | str | None:
    """A nodata value as JSON can hold it: NaN as the string 'nan'."""
    return value if value is None or math.isfinite(value) else str(value)


def inspect_inputs(paths: list[str], bands: tuple[int, int] | None = None,
                   units: str | None = None, nodata: float | None = None) -> dict:
    """Bands, grid, VV/VH mapping and detected units of the inputs; ``units`` previews a
    run's ``--units`` (its warnings included). Raises BackendError."""
    if units is not None and units not in UNITS:
        raise UsageError(f"units {units!r}: expected one of {', '.join(UNITS)}")
    with gdal_env():
        inputs = open_inputs(paths, ("VV",), bands, user="inspect", nodata=nodata)
        try:
            return _describe(inputs, units)
        finally:
            inputs.close()


def _describe(inputs: InputSet, units: str | None) -> dict:
    sources = [inputs.bands[n] for n in BAND_NAMES if n in inputs.bands]
    grid = inputs.grid
    reader = WindowReader([(inputs.datasets[s.path], s.index, s.nodata) for s in sources], 0, 0)
    warnings = _Warnings()
    samples = sample_grid(reader, grid.height, grid.width)
    found = find_units(sources, samples, units, warnings)
    zero = [zero_is_nodata(s, f.units or "dB", inputs.datasets[s.path], samples[k])
            for k, (s, f) in enumerate(zip(sources, found))]
    zeros = zero_note(sources, zero, samples) if any(zero) else None
    notes = inputs.notes + ([zeros] if zeros else [])
    files = []
    for path in inputs.paths:
        ds = inputs.datasets[path]
        g = grid_of(ds)
        files.append({
            "path": path,
            "bands": [{"index": i, "description": ds.descriptions[i - 1] or "",
                       "dtype": ds.dtypes[i - 1], "nodata": _number(ds.nodatavals[i - 1])}
                      for i in range(1, ds.count + 1)],
            "crs": ds.crs.to_string(), "width": g.width, "height": g.height,
            "pixel_size_m": [round(v, 3) for v in g.pixel_size_m()]})
    return {
        "files": files,
        "bands": inputs.mapping(),
        "units_detected": one_or_each([s.name for s in sources], [f.units for f in found]),
        "units_source": one_or_each([s.name for s in sources], [f.source for f in found]),
        "units": {s.name: {"units": f.units, "source": f.source, "evidence": f.evidence}
                  for s, f in zip(sources, found)},
        "crs": grid.crs.to_string(), "width": grid.width, "height": grid.height,
        "pixel_size_m": [round(v, 3) for v in grid.pixel_size_m()],
        "notes": notes,
        "warnings": warnings.messages,
    }


def describe_text(answer: dict) -> str:
    """The answer for a terminal."""
    lines = []
    for f in answer["files"]:
        px, py = f["pixel_size_m"]
        lines.append(f"{f['path']}: {len(f['bands'])} band(s), {f['width']} x {f['height']} px, "
                     f"{f['crs']}, pixels {px:g} x {py:g} m")
        for b in f["bands"]:
            lines.append(f"  band {b['index']} {b['description'] or '(no description)'!r} "
                         f"{b['dtype']}")
    for name, m in answer["bands"].items():
        u = answer["units"][name]
        lines.append(f"{name}: {m['path']} band {m['band']} (by {m['named_by']}); "
                     f"units {u['units'] or 'unknown'} ({u['source']}: {u['evidence']})")
    lines += answer["notes"] + [f"warning: {w}" for w in answer["warnings"]]
    return "\n".join(lines)
