"""The model card: the one contract between `training/` (which writes it) and
`backend/` + `plugin/` (which read it).

The card is a JSON document stored in the ONNX file's ``metadata_props`` under
the key :data:`CARD_KEY`. Its schema is versioned by ``schema_version``; the
full field reference lives in ``backend/MODEL_CARD.md``. :func:`parse_card`
validates a decoded card and lists *every* problem at once, with the JSON path
of each, so a user sees exactly what is missing.

Normalisation, per input band, in the band's card ``units``::

    x_model = (clip(x, clip_lo, clip_hi) - offset) / scale

e.g. the paper's VV window (Garg et al., Appendix A) is clip [-20, 0] dB,
offset -20, scale 20, which maps it to [0, 1].
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CardError
from .tiling import BLOCK_MULTIPLE, MAX_TILE

CARD_KEY = "sarflood_card"
SCHEMA_VERSION = 1
UNITS = ("dB", "linear", "amplitude")
KNOWN_BANDS = ("VV", "VH")
# what the output tensor holds: the water probability itself, or what the backend turns
# into it (a sigmoid of one logit; the water channel of class scores, softmaxed if logits)
OUTPUT_KINDS = ("water_probability", "water_logit", "class_probabilities", "class_logits")
CLASS_KINDS = ("class_probabilities", "class_logits")
TASKS = ("water_segmentation",)
# sane bounds: Sentinel-1 products run from 5 m (SLC range) to 100 m+; 1e-300 m crashed
PIXEL_SIZE_RANGE = (0.1, 10000.0)
MIN_SCALE = 1e-30   # a band scale below this is 0 in float32 arithmetic
FLOAT32_MAX = 3.4e38  # a number beyond this is infinite in float32
# Bounds on a card's text, in characters: the plugin lays the card out whole when a model is
# chosen, and a 1 MB description froze its dialog for minutes.
MAX_CARD_CHARS = 1_000_000   # the whole card's JSON
SHORT_TEXT = 200   # names, version, tensor names, licence, metric names
LONG_TEXT = 10_000   # description, training data and notes
MAX_METRICS = 100
# control characters but new line and tab: a card's text reaches terminals (`card`, the log
# lines), GeoTIFF tags and the plugin, and escape sequences in it rewrote a terminal's lines
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class BandSpec:
    name: str
    units: str
    clip: tuple[float, float]
    offset: float
    scale: float


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    bands: tuple[BandSpec, ...]
    input_name: str
    output_name: str
    output_kind: str
    default_threshold: float
    pixel_size_m: float
    tile_size: int
    margin: int
    size_multiple: int
    training_data: str
    metrics: dict[str, float]
    license: str
    description: str = ""
    notes: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    water_channel: int | None = None   # the water class's output channel (class kinds)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def to_json(self) -> str:
        """The card as stored in ONNX metadata (inverse of :func:`parse_card`)."""
        doc = {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.description,
            "inputs": {
                "tensor": self.input_name,
                "bands": [
                    {"name": b.name, "units": b.units, "clip": list(b.clip),
                     "offset": b.offset, "scale": b.scale}
                    for b in self.bands
                ],
            },
            "pixel_size_m": self.pixel_size_m,
            "tiling": {"tile_size": self.tile_size, "margin": self.margin,
                       "size_multiple": self.size_multiple},
            "output": {"tensor": self.output_name, "kind": self.output_kind,
                       **({} if self.water_channel is None
                          else {"water_channel": self.water_channel}),
                       "default_threshold": self.default_threshold},
            "training": {"data": self.training_data, "metrics": dict(self.metrics),
                         "notes": self.notes},
            "license": self.license,
        }
        if self.extra:
            doc["extra"] = self.extra
        return json.dumps(doc, indent=1, sort_keys=False)

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-friendly view for `backend card` and the plugin."""
        out = asdict(self)
        out["bands"] = [asdict(b) for b in self.bands]
        return out


class _Problems:
    """Collects validation problems with their JSON path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, what: str) -> None:
        self.items.append(f"{path}: {what}")

    def only(self, doc: Any, path: str, known: tuple[str, ...]) -> None:
        """Unknown keys are mistakes (a misspelt optional key would silently take its
        default); ``extra`` is the place for anything else."""
        if isinstance(doc, dict):
            for key in doc:
                if key not in known:
                    self.add(f"{path}{_shown(key)}",
                             f"unknown field; expected one of {', '.join(known)}")

    def get(self, doc: Any, key: str, path: str, kind: type | tuple[type, ...],
            required: bool = True, default: Any = None) -> Any:
        if not isinstance(doc, dict):
            return default
        if key not in doc:
            if required:
                self.add(f"{path}{key}", "missing")
            return default
        value = doc[key]
        # bool is an int in Python; never accept it where a number is meant
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            self.add(f"{path}{key}", f"expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.add(f"{path}{key}", f"expected {_kind_name(kind)}, got {type(value).__name__}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.add(f"{path}{key}", "must be finite")
            return default
        if isinstance(value, _NUMBER) and not _finite(value):   # a huge integer, say
            self.add(f"{path}{key}", "beyond float32's range, in which the backend computes")
            return default
        return value

    def text(self, doc: Any, key: str, path: str, limit: int, required: bool = True,
             default: Any = None) -> Any:
        """A string of at most ``limit`` characters."""
        value = self.get(doc, key, path, str, required, default)
        if value is not None and len(value) > limit:
            self.add(f"{path}{key}", _too_long(value, limit))
            return default
        if value is not None and _CONTROL.search(value):
            self.add(f"{path}{key}", _control(value))
            return default
        return value


def _control(text: str) -> str:
    found = _CONTROL.search(text)
    return (f"holds the control character {found.group()!r} at {found.start()}; text only "
            f"(new lines and tabs may stay)")


def _too_long(text: str, limit: int) -> str:
    return f"{len(text):,} characters long; at most {limit:,}"


def _shown(key: str) -> str:
    """A key of the card as an error names it: the start of one too long to show, and one
    with control characters quoted."""
    if _CONTROL.search(key):
        key = repr(key)
    return key if len(key) <= SHORT_TEXT else f"{key[:40]}... ({len(key):,} characters)"


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object",
             list: "a list", bool: "a boolean"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _as_tuple(kind)))


_NUMBER = (int, float)


def _finite(value: Any) -> bool:
    """A number that float32, in which the backend computes, holds: no boolean, NaN,
    infinity or integer beyond its range (float() of a huge integer overflows)."""
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and abs(value) <= FLOAT32_MAX


def _parse_band(p: _Problems, doc: Any, path: str) -> BandSpec | None:
    if not isinstance(doc, dict):
        p.add(path.rstrip("."), "expected an object")
        return None
    p.only(doc, path, ("name", "units", "clip", "offset", "scale"))
    name = p.text(doc, "name", path, SHORT_TEXT)
    units = p.text(doc, "units", path, SHORT_TEXT)
    clip = p.get(doc, "clip", path, list)
    offset = p.get(doc, "offset", path, _NUMBER)
    scale = p.get(doc, "scale", path, _NUMBER)
    if name is not None and name not in KNOWN_BANDS:
        p.add(f"{path}name", f"unknown band {name!r}; a Sentinel-1 model reads {', '.join(KNOWN_BANDS)}")
    if units is not None and units not in UNITS:
        p.add(f"{path}units", f"unknown units {units!r}; expected one of {', '.join(UNITS)}")
    if clip is not None:
        if len(clip) != 2 or not all(_finite(v) for v in clip):
            p.add(f"{path}clip", "expected [low, high] finite numbers")
            clip = None
        elif not clip[0] < clip[1]:
            p.add(f"{path}clip", f"low {clip[0]} must be below high {clip[1]}")
            clip = None
        elif units in ("linear", "amplitude") and clip[1] <= 0:
            # power and amplitude are positive: every pixel would be clipped to the high end
            p.add(f"{path}clip", f"[{clip[0]:g}, {clip[1]:g}] lies at or below 0, a dB window, "
                                 f"but the band's units are {units}, whose values are above 0: "
                                 f"the model would get {clip[1]:g} everywhere; give the window "
                                 f"in {units}, or units dB")
            clip = None
    # float32 is what the backend scales in: a scale it rounds to 0 divides by zero, and
    # beyond float32's range offset and scale are infinite there
    if scale is not None and abs(scale) < MIN_SCALE:
        p.add(f"{path}scale", f"must be at least {MIN_SCALE:g} in size")
    if None in (name, units, clip, offset, scale) or abs(scale) < MIN_SCALE:
        return None
    return BandSpec(name=name, units=units, clip=(float(clip[0]), float(clip[1])),
                    offset=float(offset), scale=float(scale))


def parse_card(doc: Any) -> ModelCard:
    """Validate a decoded card and build a :class:`ModelCard`.

    Raises :class:`CardError` listing every problem found.
    """
    p = _Problems()
    if not isinstance(doc, dict):
        raise CardError("model card: expected a JSON object")
    version = p.get(doc, "schema_version", "", int)
    if version is not None and version != SCHEMA_VERSION:
        # a future schema may change meanings: refuse rather than guess
        raise CardError(f"model card: schema_version {version} is not supported "
                        f"(this backend reads version {SCHEMA_VERSION})")
    p.only(doc, "", ("schema_version", "name", "version", "task", "description", "inputs",
                     "pixel_size_m", "tiling", "output", "training", "license", "extra"))
    name = p.text(doc, "name", "", SHORT_TEXT)
    model_version = p.text(doc, "version", "", SHORT_TEXT)
    for key, value in (("name", name), ("version", model_version)):
        if value is not None and not value.strip():
            p.add(key, "must not be empty")
    task = p.text(doc, "task", "", SHORT_TEXT)
    if task is not None and task not in TASKS:
        p.add("task", f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    description = p.text(doc, "description", "", LONG_TEXT, required=False, default="")

    inputs = p.get(doc, "inputs", "", dict, default={})
    p.only(inputs, "inputs.", ("tensor", "bands"))
    input_name = p.text(inputs, "tensor", "inputs.", SHORT_TEXT)
    band_docs = p.get(inputs, "bands", "inputs.", list, default=[])
    if "bands" in inputs and not band_docs:
        p.add("inputs.bands", "must list at least one band")
    bands = [_parse_band(p, b, f"inputs.bands[{i}].") for i, b in enumerate(band_docs)]
    names = [b.name for b in bands if b is not None]
    if len(set(names)) != len(names):
        p.add("inputs.bands", f"duplicate band names {names}")

    pixel_size = p.get(doc, "pixel_size_m", "", _NUMBER)
    if pixel_size is not None and not PIXEL_SIZE_RANGE[0] <= pixel_size <= PIXEL_SIZE_RANGE[1]:
        p.add("pixel_size_m", f"must be from {PIXEL_SIZE_RANGE[0]:g} to "
                              f"{PIXEL_SIZE_RANGE[1]:g} m")

    tiling = p.get(doc, "tiling", "", dict, default={})
    p.only(tiling, "tiling.", ("tile_size", "margin", "size_multiple"))
    tile_size = p.get(tiling, "tile_size", "tiling.", int)
    margin = p.get(tiling, "margin", "tiling.", int)
    multiple = p.get(tiling, "size_multiple", "tiling.", int, required=False, default=1)
    if tile_size is not None and not (BLOCK_MULTIPLE <= tile_size <= MAX_TILE
                                      and tile_size % BLOCK_MULTIPLE == 0):
        # it is also the output GeoTIFF's block edge
        p.add("tiling.tile_size", f"must be a multiple of {BLOCK_MULTIPLE} from "
                                  f"{BLOCK_MULTIPLE} to {MAX_TILE}")
    if margin is not None and margin < 0:
        p.add("tiling.margin", "must not be negative")
    if tile_size is not None and margin is not None and 2 * margin >= tile_size:
        p.add("tiling.margin", f"2 x margin ({2 * margin}) must be below tile_size ({tile_size})")
    if multiple is not None and multiple < 1:
        p.add("tiling.size_multiple", "must be at least 1")
    if tile_size is not None and multiple and tile_size % multiple:
        p.add("tiling.tile_size", f"must be a multiple of size_multiple ({multiple})")

    output = p.get(doc, "output", "", dict, default={})
    p.only(output, "output.", ("tensor", "kind", "water_channel", "default_threshold"))
    output_name = p.text(output, "tensor", "output.", SHORT_TEXT)
    kind = p.text(output, "kind", "output.", SHORT_TEXT)
    if kind is not None and kind not in OUTPUT_KINDS:
        p.add("output.kind", f"unknown kind {kind!r}; expected one of {', '.join(OUTPUT_KINDS)}")
    water_channel = p.get(output, "water_channel", "output.", int, required=False)
    if kind in CLASS_KINDS and water_channel is None and "water_channel" not in output:
        p.add("output.water_channel", f"missing: kind {kind} needs the water class's "
                                      "channel index in the output")
    elif kind in OUTPUT_KINDS and kind not in CLASS_KINDS and water_channel is not None:
        p.add("output.water_channel", f"only with kind {' or '.join(CLASS_KINDS)}: a "
                                      f"{kind} output has one channel")
    if water_channel is not None and water_channel < 0:
        p.add("output.water_channel", "must not be negative")
    threshold = p.get(output, "default_threshold", "output.", _NUMBER)
    if threshold is not None and not 0 < threshold < 1:
        p.add("output.default_threshold", "must lie strictly between 0 and 1")

    training = p.get(doc, "training", "", dict, default={})
    p.only(training, "training.", ("data", "metrics", "notes"))
    data = p.text(training, "data", "training.", LONG_TEXT)
    metrics = p.get(training, "metrics", "training.", dict, default={})
    if len(metrics) > MAX_METRICS:
        p.add("training.metrics", f"{len(metrics):,} metrics; at most {MAX_METRICS}")
        metrics = {}
    for key, value in metrics.items():
        if len(key) > SHORT_TEXT:
            p.add(f"training.metrics.{_shown(key)}", f"name {_too_long(key, SHORT_TEXT)}")
        elif _CONTROL.search(key):
            p.add(f"training.metrics.{_shown(key)}", f"name {_control(key)}")
        elif not _finite(value):
            p.add(f"training.metrics.{key}", "expected a finite number")
    notes = p.text(training, "notes", "training.", LONG_TEXT, required=False, default="")
    licence = p.text(doc, "license", "", SHORT_TEXT)
    extra = p.get(doc, "extra", "", dict, required=False, default={})

    if p.items:
        raise CardError("model card is invalid: " + "; ".join(p.items))
    return ModelCard(
        name=name, version=model_version, task=task, description=description,
        bands=tuple(bands), input_name=input_name, output_name=output_name,
        output_kind=kind, water_channel=water_channel, default_threshold=float(threshold),
        pixel_size_m=float(pixel_size), tile_size=tile_size, margin=margin,
        size_multiple=multiple, training_data=data,
        metrics={k: float(v) for k, v in metrics.items()}, notes=notes,
        license=licence, extra=extra,
    )


class _Constant(str):
    """NaN, Infinity or -Infinity, which Python's json reads and JSON has not: kept as
    text to be named with its path (:func:`_not_json`)."""


class _Object(dict):
    """A JSON object, with the keys it gave twice (JSON keeps the last, silently)."""
    twice: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    doc = _Object(pairs)
    if len(doc) < len(pairs):
        seen: set[str] = set()
        doc.twice = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return doc


def _not_json(doc: Any) -> list[str]:
    """Where the decoded card holds what JSON does not allow, by JSON path (a walk
    without recursion: json reads nesting deeper than Python recurses)."""
    found, stack = [], [("", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _Constant):
            found.append(f"{path or 'the card'}: {value} is not a JSON number")
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))
        elif isinstance(value, dict):
            dot = f"{path}." if path else ""
            found += [f"{dot}{_shown(key)}: given twice" for key in getattr(value, "twice", ())]
            stack.extend(reversed([(f"{dot}{_shown(key)}", v) for key, v in value.items()]))
    return found


def card_from_metadata(metadata: dict[str, str], source: str) -> ModelCard:
    """Read and validate the card from ONNX ``metadata_props`` (a str -> str map)."""
    if CARD_KEY not in metadata:
        keys = ", ".join(sorted(map(_shown, metadata))) or "none"
        raise CardError(f"{source}: no model card (metadata key {CARD_KEY!r} missing; "
                        f"metadata keys present: {keys})")
    text = metadata[CARD_KEY]
    if len(text) > MAX_CARD_CHARS:
        raise CardError(f"{source}: model card is {_too_long(text, MAX_CARD_CHARS)} "
                        f"(metadata key {CARD_KEY!r})")
    try:
        doc = json.loads(text, object_pairs_hook=_object, parse_constant=_Constant)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError; digits past Python's limit
        raise CardError(f"{source}: model card is not valid JSON "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    problems = _not_json(doc)
    if problems:
        raise CardError(f"{source}: model card is invalid: " + "; ".join(problems))
    try:
        return parse_card(doc)
    except CardError as exc:
        raise CardError(f"{source}: {exc}") from None
