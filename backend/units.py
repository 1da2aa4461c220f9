"""Backscatter units: detect dB, linear power or amplitude, and convert between them.

Sentinel-1 backscatter comes as sigma0 in linear power, as amplitude (the square
root of power), or in decibels, 10 log10(power). The model card says which units
each band must be in; this module finds what the input holds and converts.

Detection, per band, in this order:
1. an override (``--units``);
2. metadata: the band description, unit and tags and the file name, read as words
   (``dB``/``decibel``; ``amplitude``/``amp``; ``intensity``/``power``/``linear``/
   ``sigma0``/``gamma0``/``beta0`` without ``dB``);
3. the values: dB is the only one of the three with negative values, so a share of
   negative values means dB. Power and amplitude are told apart, with VV and VH, by
   their ratio: co-polarised backscatter exceeds cross-polarised by about 5-8 dB in
   power over land and water alike (median per pixel: 5.4 dB on the Sen1Floods11
   Ghana chip, 7.4 on the Spain chip), and amplitude read as if it were power shows
   half of that; so a median ratio of 4.5 dB or more, taken as power, means power.
   With VV alone, by level: typical scene medians are about -20 to -5 dB in VV (-25
   to -14 in VH), and amplitude read as power sits at half those dB values, so a
   median below -8 dB in VV means power. A flood scene's median is its water's and a
   forest's is high, so the level can mislead where the ratio does not: when the two
   disagree the ratio decides and the run warns. This is a heuristic: the run reports
   it, and ``--units`` overrides it.
An override that the metadata, the sign of the values or the VV/VH ratio contradict is
obeyed with a warning (the VV level alone is left out: it misleads on the very scenes,
floods and forests, that an override is given for).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from rasterio.enums import ColorInterp

from .card import UNITS
from .errors import InputError
from .inputs import BandSource, observed_in_both
from .progress import Reporter
from .raster_io import band_scaling, gdal_masked

_WORDS = [
    ("dB", re.compile(r"(?<![a-z])(db|decibels?)(?![a-z])", re.I)),
    ("amplitude", re.compile(r"(?<![a-z])(amplitude|amp)(?![a-z])", re.I)),
    ("linear", re.compile(r"(?<![a-z])(intensity|power|linear|sigma0|gamma0|beta0)(?![a-z])",
                          re.I)),
]
NEGATIVE_SHARE_DB = 0.02           # more negatives than this: dB
# below this no value is backscatter in any units (Sentinel-1's noise floor is near -30 dB,
# and power or amplitude is never negative): a fill value such as -9999 with no nodata tag
FILL_BELOW = -100.0
POWER_BELOW_DB = {"VH": -13.5, "VV": -8.0}
POWER_RATIO_DB = 4.5          # median VV/VH per pixel, read as power: power at or above
UNCALIBRATED_DB = 20.0        # a VV median above this is no calibrated backscatter


@dataclass(frozen=True)
class UnitsFound:
    units: str | None      # None when nothing could tell (no metadata, no valid pixel)
    source: str            # override | metadata | values | none
    evidence: str          # one line for the user
    doubt: str | None = None   # why the values leave the choice uncertain (a warning)


def units_from_text(text: str) -> tuple[str, str] | None:
    """(units, the word naming them) in metadata text, or None. dB wins: 'Sigma0_VV_db' is dB."""
    for units, pattern in _WORDS:
        found = pattern.search(text or "")
        if found:
            return units, found.group(0)
    return None


def units_from_values(samples: dict[str, np.ndarray]) -> UnitsFound:
    """Guess units from sampled values of the VV (and VH) band. Exact 0 is left out: a fill
    (Earth Engine's, or an integer band's) or a rounded value in any units, it tells none
    of them, and zeros in plenty hid the negatives of dB x 100 stored as int16."""
    finite = {k: v[np.isfinite(v) & (v >= FILL_BELOW) & (v != 0)] for k, v in samples.items()}
    values = np.concatenate([v for v in finite.values()]) if finite else np.array([])
    if values.size == 0:
        return UnitsFound(None, "none", "no valid pixel to read the units from")
    negative = float(np.mean(values < 0))
    if negative > NEGATIVE_SHARE_DB:
        pooled = " and ".join(k for k, v in finite.items() if v.size)
        return UnitsFound("dB", "values",
                          f"{100 * negative:.0f}% of the {pooled} values are negative")
    band = "VH" if finite.get("VH") is not None and finite["VH"].size else "VV"
    positive = finite[band][finite[band] > 0]
    if positive.size == 0:
        return UnitsFound(None, "none", f"no positive {band} value to read the units from")
    level = 10 * np.log10(float(np.median(positive)))
    by_level = "linear" if level < POWER_BELOW_DB[band] else "amplitude"
    level_text = (f"median {band} {np.median(positive):.4g} is {level:.1f} dB if power "
                  f"(threshold {POWER_BELOW_DB[band]} dB)")
    ratio = _median_ratio_db(samples)
    if ratio is None:
        return UnitsFound(by_level, "values", f"no negative values; {level_text}: {by_level}")
    units = "linear" if ratio >= POWER_RATIO_DB else "amplitude"
    evidence = (f"no negative values; median VV/VH {ratio:.1f} dB if power (threshold "
                f"{POWER_RATIO_DB} dB): {units}")
    doubt = None if by_level == units else (
        f"the VV/VH ratio says {units} but the level says {by_level} ({level_text})")
    return UnitsFound(units, "values", evidence, doubt)


def _median_ratio_db(samples: dict[str, np.ndarray]) -> float | None:
    """Median of VV/VH in dB over the pixels where both are positive, None without both."""
    if "VV" not in samples or "VH" not in samples:
        return None
    vv, vh = samples["VV"], samples["VH"]
    both = (vv > 0) & (vh > 0) & np.isfinite(vv) & np.isfinite(vh)
    if both.sum() < 100:
        return None
    return float(np.median(10 * np.log10(vv[both] / vh[both])))


def detect_units(text: str, override: str | None) -> UnitsFound | None:
    """Units from an override or metadata; None means: look at the values."""
    if override:
        return UnitsFound(override, "override", "given by --units")
    named = units_from_text(text)
    if named:
        # the word, so that a user whose file name misleads us sees why
        return UnitsFound(named[0], "metadata",
                          f"{named[1]!r} in the band's description, units, tags or file name")
    return None


def contradiction(units: str, samples: np.ndarray, tagged: bool = False) -> str | None:
    """A warning when values cannot be in these units: fill values (read as no data),
    or negative power or amplitude. ``tagged``: the band has a nodata value."""
    return fill_problem(samples, tagged) or _units_problem(units, samples)


def fill_problem(samples: np.ndarray, tagged: bool) -> str | None:
    """A warning when sampled values lie below ``FILL_BELOW`` (read as no data), with the
    likely why: most of them, a band stored scaled; a few, a fill value."""
    v = samples[np.isfinite(samples)]
    fill = v < FILL_BELOW
    if not fill.any():
        return None
    why = ("a band stored scaled, dB x 100 say, without its GDAL scale?" if fill.mean() > 0.5
           else "a fill value besides the nodata value?" if tagged
           else "a fill value without a nodata tag?")
    return (f"{100 * np.mean(fill):.1f}% of the sampled values are below {FILL_BELOW:g} "
            f"(lowest {v.min():g}), which no backscatter is: read as no data ({why})")


def _units_problem(units: str, samples: np.ndarray) -> str | None:
    v = samples[np.isfinite(samples)]
    if units != "dB" and v.size and np.mean(v < 0) > NEGATIVE_SHARE_DB:
        return (f"{100 * np.mean(v < 0):.0f}% of its values are negative, which {units} "
                "values cannot be; check --units")
    if units == "dB" and v.size and np.mean(v < 0) < 0.5:
        return (f"only {100 * np.mean(v < 0):.0f}% of its values are negative, where nearly "
                "all of a scene's backscatter in dB is; are they linear power or amplitude? "
                "check --units")
    return None


PLAUSIBLE_VV_DB = (-35.0, 5.0)   # median VV of calibrated Sentinel-1 scenes lies well inside


def implausible(units: str, vv: np.ndarray) -> str | None:
    """A warning when the VV median, in dB, is not that of calibrated backscatter."""
    median = _median_db(vv, units)   # zero power (a blank border) has no dB value: left out
    if median is None:
        return None
    if median > UNCALIBRATED_DB:
        scaled = _scaled_median_db(vv)
        if scaled is not None:
            raise InputError(
                f"the VV median is {median:.1f} dB when read as {units}: these are not "
                f"calibrated backscatter as stored; if they are linear sigma0 x "
                f"{STORED_SCALE} as integers (a common SNAP or Earth Engine export; the median "
                f"would be {scaled:.1f} dB), give the bands that scale: gdal_translate -a_scale "
                f"{1 / STORED_SCALE:g} IN.tif OUT.tif (or gdal_edit.py -scale "
                f"{1 / STORED_SCALE:g} IN.tif, in place); if they are uncalibrated digital "
                "numbers, calibrate to sigma0 first (SNAP: Radar > Radiometric > Calibrate)")
        raise InputError(f"the VV median is {median:.1f} dB when read as {units}: these are "
                         "not calibrated backscatter (uncalibrated digital numbers?); calibrate "
                         "to sigma0 first (SNAP: Radar > Radiometric > Calibrate), or give the "
                         "right --units")
    lo, hi = PLAUSIBLE_VV_DB
    if lo <= median <= hi:
        return None
    return (f"the VV median is {median:.1f} dB when read as {units}, outside {lo:g} to {hi:g} dB: "
            "are the values calibrated backscatter (sigma0), and are the units right (--units)?")


# linear sigma0 exported as integers without a scale tag (SNAP, Earth Engine) is x 10000
STORED_SCALE = 10000


def _scaled_median_db(vv: np.ndarray) -> float | None:
    """The VV median in dB if the values are whole numbers of linear backscatter x
    STORED_SCALE and that reading is plausible; else None. (Uncalibrated digital numbers
    can read so too: the message offers both.)"""
    v = vv[np.isfinite(vv) & (vv > 0)]
    if not v.size or not np.array_equal(v, np.round(v)):
        return None
    median = 10 * np.log10(float(np.median(v)) / STORED_SCALE)
    lo, hi = PLAUSIBLE_VV_DB
    return median if lo <= median <= hi else None


def convert(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert float32 backscatter between units, in place where possible.

    Values below ``FILL_BELOW`` (fill values) become NaN (no data) in any units; so do
    zero or negative power/amplitude converted to dB, which have no dB value.
    """
    for u in (src, dst):
        if u not in UNITS:
            raise ValueError(f"unknown units {u!r}")
    # one cheap pass, NaN ignored, tells whether there is any fill value at all
    if x.size and np.fmin.reduce(x, axis=None) < FILL_BELOW:
        np.copyto(x, np.nan, where=x < FILL_BELOW)
    if src == dst:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        if src != "dB":
            np.copyto(x, np.nan, where=x <= 0)
        if dst == "dB":
            np.log10(x, out=x)
            x *= np.float32(10.0 if src == "linear" else 20.0)
        elif src == "dB":
            x /= np.float32(10.0 if dst == "linear" else 20.0)
            np.power(np.float32(10.0), x, out=x)
        elif dst == "amplitude":  # linear -> amplitude
            np.sqrt(x, out=x)
        else:                     # amplitude -> linear
            np.square(x, out=x)
    return x


def floor_zero_power(x: np.ndarray, units: list[str]) -> np.ndarray:
    """In place: a power or amplitude of exactly 0 in a band (``x``: band first) where
    another band has a positive value gets the smallest positive float32, the darkest
    backscatter there is; returns ``x``.

    Sentinel-1 thermal-noise removal leaves 0 where the noise estimate exceeds the signal
    (SNAP writes it so), mostly in VH over calm water: below the noise floor, not
    unobserved. As no data (0 has no dB value) it cut holes in the water and its area.
    Where every band is 0 the pixel is a fill (beyond the swath) and stays no data.
    """
    if len(x) < 2:
        return x
    for k, band in enumerate(x):
        if units[k] == "dB":
            continue
        zero = band == 0
        if zero.any():
            zero &= (np.delete(x, k, axis=0) > 0).any(axis=0)
            band[zero] = np.finfo(np.float32).tiny
    return x


def floor_note(sources: list[BandSource], units: list[str], samples: np.ndarray) -> str | None:
    """The info line for :func:`floor_zero_power`, from the units sample; None where it
    changes nothing there."""
    floored = (samples == 0) & (floor_zero_power(samples.astype(np.float32), units) > 0)
    shares = [f"{s.name} {100 * float(np.mean(f)):.1f} %" for s, f in zip(sources, floored)
              if f.any()]
    if not shares:
        return None
    return (f"{sources[0].path}: exact 0 power where the other band has a value is read as "
            f"below the noise floor (the darkest backscatter: thermal-noise removal leaves it "
            f"over calm water), not as no data; of the units sample: {', '.join(shares)}")


def one_or_each(names: list[str], values: list[str | None]) -> str | None:
    """One value if all bands agree, else 'VV: dB, VH: linear' (the result field's form)."""
    if len(set(values)) == 1:
        return values[0]
    return ", ".join(f"{n}: {v}" for n, v in zip(names, values))


def override_doubt(sources: list[BandSource], samples: dict[str, np.ndarray],
                   override: str) -> str | None:
    """A warning when the metadata or the values say other units than ``--units``: the
    first band's metadata that does, and the values where their sign or the VV/VH ratio
    decides (the VV level alone misleads on floods and forests, when --units is given)."""
    said = []
    named = [(s, detect_units(s.text, None)) for s in sources]
    named = [(s, u) for s, u in named if u and u.units != override]
    if named:
        s, u = named[0]
        said.append(f"the metadata of {s.name} says {u.units} ({u.evidence})")
    values = units_from_values(samples)
    if values.units not in (None, override) and (values.units == "dB"
                                                 or _median_ratio_db(samples) is not None):
        said.append(f"the values say {values.units} ({values.evidence})")
    if not said:
        return None
    return (f"{sources[0].path}: --units {override} given, but {'; '.join(said)}; read as "
            f"{override} all the same")


NO_PIXEL = "the band holds no valid pixel"


def find_units(sources: list[BandSource], samples: np.ndarray, override: str | None,
               reporter: Reporter) -> list[UnitsFound]:
    """Units of each band, from override, metadata, or values; warnings on contradictions.

    A band with no valid pixel in the sample has none in the input (sample_grid reads on
    until it finds data): it is named, unless no band has one (the run says that)."""
    by_name = {s.name: samples[k] for k, s in enumerate(sources)}
    empty = [not np.isfinite(samples[k]).any() for k in range(len(sources))]
    for s, none in zip(sources, empty):
        if none and not all(empty):
            reporter.warning(f"{s.path}: band {s.index} ({s.name}) holds no valid pixel (all "
                             "NaN or no data)")
    overridden = override and override_doubt(sources, by_name, override)
    if overridden:
        reporter.warning(overridden)
    from_values = None
    found = []
    for k, s in enumerate(sources):
        u = detect_units(s.text, override)
        if u is None and empty[k]:
            u = UnitsFound(None, "none", NO_PIXEL)
        elif u is None:
            from_values = from_values or units_from_values(by_name)
            u = from_values
        found.append(u)
        if u.doubt and found.count(u) == 1:   # bands judged together: said once
            reporter.warning(f"{s.path}: {s.name} units read from the values are uncertain: "
                             f"{u.doubt}; taken as {u.units}; give --units if that is wrong")
        elif u.units is None and s.name == "VV" and not empty[k]:
            reporter.warning(f"{s.path}: the units sample cannot tell the units ({u.evidence}): "
                             "the values are taken to be in the units this run reads (the "
                             "model's; dB for Otsu); give --units if they are not")
        if u.units:
            tagged = s.nodata is not None
            # an override's contradiction is said once, above: only fills are left to say
            problem = (fill_problem(samples[k], tagged) if overridden
                       else contradiction(u.units, samples[k], tagged))
            if problem:
                reporter.warning(f"{s.path}: {s.name} read as {u.units} ({u.evidence}), but "
                                 f"{problem}")
            else:
                try:
                    problem = implausible(u.units, samples[k]) if s.name == "VV" else None
                except InputError as exc:
                    raise InputError(f"{s.path}: {exc}") from None
                if problem:
                    reporter.warning(f"{s.path}: {problem}")
    problem = looks_swapped(sources, found, samples)
    if problem:
        reporter.warning(problem)
    return found


SCALED_SHARE = 0.99   # of an integer band's sampled values lost in conversion: refused


def check_convertible(sources: list[BandSource], found: list[UnitsFound],
                      conversions: list[tuple[str, str]], samples: np.ndarray,
                      dtypes: list[str]) -> None:
    """Refuse a band whose sampled values all become no data in the units taken for it
    (the whole map would be no data): dB values read as power, say, or a scaled band
    whose scale GDAL does not know. An integer band is refused when almost all do
    (:data:`SCALED_SHARE`): dB x 100 stored as int16 without its scale keeps the odd
    pixel above -1 dB, and mapped only those. Raises InputError naming the file."""
    for k, (s, f, (src, dst)) in enumerate(zip(sources, found, conversions)):
        x = samples[k][np.isfinite(samples[k])].astype(np.float32)
        integer = np.dtype(dtypes[k]).kind in "iu"
        # an integer 0 survives any reading (a fill, or a rounded value): as a fill of a
        # dB x 100 band it kept the share lost under SCALED_SHARE, and that band was mapped
        zeros = integer and not x.all()
        if zeros:
            x = x[x != 0]
        if not x.size:
            continue
        lost = 1.0 - float(np.isfinite(convert(x.copy(), src, dst)).mean())
        why = f" ({f.evidence})" if f.units else ""
        other = " other than 0" if zeros else ""
        if lost == 1.0:
            raise InputError(f"{s.path}: no sampled {s.name} value{other} (from {x.min():g} to "
                             f"{x.max():g}) is backscatter in {src}{why}; give the right "
                             "--units, or scale the band (GDAL scale and offset) if it is "
                             "stored scaled")
        if lost >= SCALED_SHARE and integer:
            fill = " and its fill as nodata (-a_nodata 0)" if zeros else ""
            raise InputError(f"{s.path}: {100 * lost:.1f}% of the sampled {s.name} values{other} "
                             f"(from {x.min():g} to {x.max():g}) are not backscatter in "
                             f"{src}{why}; an integer band stored scaled (dB x 100, say) "
                             f"needs its GDAL scale (gdal_edit.py -scale 0.01){fill}, or "
                             "give the right --units")


def _median_db(samples: np.ndarray, units: str) -> float | None:
    db = convert(samples[np.isfinite(samples)].astype(np.float32), units, "dB")
    db = db[np.isfinite(db)]
    return float(np.median(db)) if db.size else None


def looks_swapped(sources: list[BandSource], found: list[UnitsFound], samples: np.ndarray
                  ) -> str | None:
    """A warning when the band named VH is brighter than the one named VV.

    Co-polarised backscatter exceeds cross-polarised over land and water alike (see
    inputs' ``_brighter_is_vv``, which orders bands that nothing names), so a VH
    above VV says the names, or the order given, are wrong.
    """
    k = {s.name: i for i, s in enumerate(sources)}
    if set(k) != {"VV", "VH"} or not all(f.units for f in found):
        return None
    both = observed_in_both(samples[k["VV"]], samples[k["VH"]])
    vv, vh = (_median_db(samples[k[n]][both], found[k[n]].units) for n in ("VV", "VH"))
    if vv is None or vh is None or vh <= vv:
        return None
    a, b = sources[k["VV"]], sources[k["VH"]]
    return (f"{b.path}: the band taken as VH (band {b.index}, by {b.named_by}) is brighter "
            f"than the one taken as VV ({a.path} band {a.index}): median {vh:.1f} against "
            f"{vv:.1f} dB, where co-polarised VV is the brighter over land and water; are "
            "VV and VH swapped? (--bands VV_INDEX,VH_INDEX chooses the bands of one file; "
            "two files go in the order VV, VH)")


def zero_is_nodata(source: BandSource, units: str, ds, sample: np.ndarray) -> bool:
    """Whether exact 0 in this band is no data: a float band in dB with no no-data marking
    of its own (no nodata value, no GDAL mask), unless its sample marks no data with NaN
    and holds no exact 0: NaN is then the file's marker. (GDAL's warper leaves one value
    per band out of its averages: read with 0 as that value, a resampled NaN-marked band
    spread its no data 1-2 pixels.)

    Earth Engine writes masked pixels (beyond the swath, say) as 0 and tags no nodata
    unless the exporter asks; read as 0 dB they would be bright land and count as observed
    area. Calibrated backscatter is exactly 0 dB (power exactly 1) next to never. Integer
    bands (0 can be a rounded dB value there) are left alone unless their whole sample is
    0 (a blank export, not a scene at 0 dB: it was mapped as dry land), or the file has
    an alpha band that GDAL does not read as their mask (``gdalwarp -dstalpha`` writes
    gray, undefined, alpha and 0 under alpha 0: int16 hundredths of a dB counted the area
    beyond the scene as dry land).
    """
    if units != "dB" or source.nodata is not None or gdal_masked(ds, source.index):
        return False
    if np.dtype(ds.dtypes[source.index - 1]).kind != "f":
        return ColorInterp.alpha in ds.colorinterp or (sample.size > 0 and not sample.any())
    return not (np.isnan(sample).any() and not (sample == 0).any())


ZERO_DATA_WARN = 0.01   # share of the units sample at exactly 0 dB in every band


def zero_data_warning(sources: list[BandSource], units: list[str], zero: list[bool],
                      samples: np.ndarray) -> str | None:
    """A warning where dB bands that keep 0 as data (a nodata tag of their own, or integer
    bands) are exactly 0 together in over ``ZERO_DATA_WARN`` of the units sample: a fill
    beyond the swath, not backscatter (an Earth Engine export warped with -dstnodata nan
    kept a quarter of its pixels at 0 dB, all counted as dry land)."""
    if any(zero) or not all(u == "dB" for u in units):
        return None
    share = float(np.mean((samples == 0).all(axis=0))) if samples.size else 0.0
    if share <= ZERO_DATA_WARN:
        return None
    return (f"{sources[0].path}: {100 * share:.0f} % of the units sample is exactly 0 dB in "
            f"every band, read as data (backscatter that bright is rare): if it is a fill "
            f"beyond the swath, run with --nodata 0")


def untagged_fill(source: BandSource, sample: np.ndarray, ds) -> float | None:
    """The fill value of a float band with no no-data marking: the one value below
    ``FILL_BELOW`` in its sample (such as -9999), else None.

    Tiles read every such value as no data (:func:`convert`), but a resampled read averages
    first, and a fill mixed into its neighbours can come out as plausible backscatter (dark:
    water). GDAL's warper leaves out one value per band: this one. Scaled bands are left
    alone (the warper sees stored values, the sample scaled ones).
    """
    if (source.nodata is not None or gdal_masked(ds, source.index)
            or np.dtype(ds.dtypes[source.index - 1]).kind != "f"
            or band_scaling(ds, source.index) != (1.0, 0.0)):
        return None
    low = np.unique(sample[sample < FILL_BELOW])
    return float(low[0]) if low.size == 1 else None


def zero_note(sources: list[BandSource], flags: list[bool], samples: np.ndarray) -> str | None:
    """The info line for bands whose exact zeros are read as no data; None where the units
    sample holds no zero (the note would only puzzle)."""
    shares = [(s.name, 100 * float(np.mean(samples[k] == 0)))
              for k, (s, flag) in enumerate(zip(sources, flags)) if flag]
    if not any(share for _, share in shares):
        return None
    parts = [f"{name} {share:.1f} %" for name, share in shares]
    return (f"{sources[0].path}: exact 0 in a dB band without a nodata value is read as no "
            f"data (Earth Engine writes masked pixels so, gdalwarp the pixels under its alpha "
            f"band; of the units sample: "
            f"{', '.join(parts)}); give the file a nodata value if 0 dB is data")


@dataclass
class PreparedBands:
    """How a run reads its bands: the reader's sources with the no-data value each is read
    with, and each band's units as found and as converted to."""
    raw: list[tuple[object, int, float | None]]   # (dataset, band, no-data) for WindowReader
    found: list[UnitsFound]
    conversions: list[tuple[str, str]]            # per band: (input units, wanted units)


def prepare_bands(sources: list[BandSource], datasets: dict, samples: np.ndarray,
                  override: str | None, wanted: list[str], nodata_given: bool,
                  reporter: Reporter) -> PreparedBands:
    """Units found and checked, and the no-data values to read with, for the bands
    ``sources`` sampled as ``samples``; what was decided is reported. ``predict`` and
    ``otsu`` both read their input so, and so see the same pixels as no data."""
    found = find_units(sources, samples, override, reporter)
    conversions = [(f.units or w, w) for f, w in zip(found, wanted)]
    check_convertible(sources, found, conversions, samples,
                      [datasets[s.path].dtypes[s.index - 1] for s in sources])
    for s, f, (src, dst) in zip(sources, found, conversions):
        if f.units:
            reporter.info(f"{s.name}: {f.units} ({f.source}: {f.evidence})"
                          + (f", converted to {dst}" if src != dst else ""))
    note = floor_note(sources, [src for src, _ in conversions], samples)
    if note:
        reporter.info(note)
    raw = [(datasets[s.path], s.index, s.nodata) for s in sources]
    zero = [zero_is_nodata(s, src, datasets[s.path], samples[k])
            for k, (s, (src, _)) in enumerate(zip(sources, conversions))]
    if any(zero):
        raw = [(ds, i, 0.0 if z else nodata) for (ds, i, nodata), z in zip(raw, zero)]
        note = zero_note(sources, zero, samples)
        if note:
            reporter.info(note)
    note = zero_data_warning(sources, [src for src, _ in conversions], zero, samples)
    if note and not nodata_given:
        reporter.warning(note)
    # find_units has warned of them; a resampled read must leave them out before averaging
    for k, s in enumerate(sources):
        fill = untagged_fill(s, samples[k], datasets[s.path])
        if fill is not None:
            raw[k] = (raw[k][0], raw[k][1], fill)
    return PreparedBands(raw, found, conversions)


def to_units(x: np.ndarray, conversions: list[tuple[str, str]]) -> np.ndarray:
    """Bands (band, rows, cols) converted in place from the input's units to the wanted
    ones (fill values and power or amplitude <= 0 become NaN: no data, except a 0 below
    the noise floor, :func:`floor_zero_power`); returns ``x``."""
    floor_zero_power(x, [src for src, _ in conversions])
    for band, (src, dst) in zip(x, conversions):
        convert(band, src, dst)
    return x
