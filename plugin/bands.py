"""Guess which band or file is VV and which is VH, from names alone.

Names seen in the wild: Earth Engine exports ``VV``, ``VH``, ``angle``; SNAP
``Sigma0_VV_db``, ``Sigma0_VH``; ASF HyP3 files ``..._VV.tif`` and ``..._VH.tif``;
Sen1Floods11 band descriptions ``VV``, ``VH``. A polarisation counts only as a
whole token (``_VV_``, ``VV``), so ``VVH`` or ``favvy`` never match.
"""
from __future__ import annotations

import re

_TOKEN = {pol: re.compile(rf"(?<![A-Za-z]){pol}(?![A-Za-z])", re.IGNORECASE) for pol in ("VV", "VH")}


def polarisation(name: str) -> str | None:
    """``VV`` or ``VH`` if exactly one of them appears as a token in ``name``."""
    found = [pol for pol, token in _TOKEN.items() if token.search(name or "")]
    return found[0] if len(found) == 1 else None


def guess_bands(descriptions: list[str]) -> tuple[int, int] | None:
    """1-based (VV, VH) band numbers from band descriptions, or None if not both are named once.

    Two unnamed bands are not guessed by position here: the backend tells them apart
    by brightness (co-polarised VV is the brighter), which a VH-first stack needs.
    """
    pols = [polarisation(d) for d in descriptions]
    if pols.count("VV") == 1 and pols.count("VH") == 1:
        return pols.index("VV") + 1, pols.index("VH") + 1
    return None
