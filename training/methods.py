"""The rows of Garg et al.'s Table 1, our compact student, and the methods of the two
other seed papers (two-stage chip-classification pretraining; FLoRA-style feature
distillation with SAR-to-optical reconstruction), as data.

Each method says which model it trains, on which inputs, from which training
splits and labels, and with which loss. ``pools`` lists the data sources of a
batch: every pool gets an equal share of each batch (the distillation student
samples the hand-labelled chips and the external set equally, Section 3.2); the
datasets inside one pool are simply concatenated.

Published numbers are IoU (%) of the water class on the Sen1Floods11 hand-labelled
test split, mean +/- std over 5 runs (Garg et al., Table 1, which gives no Otsu std;
the teacher's from Section 4).
"""
from __future__ import annotations

from dataclasses import dataclass

# channels of each model input: Sentinel-1 VV, VH; Sentinel-2 B2, B3, B4, B8; the
# optical input of FLoRA-style distillation, RGB (B4, B3, B2) and NDVI
INPUT_CHANNELS = {"s1": 2, "s2": 4, "rgb": 3, "ndvi": 1}
OPTICAL = ("rgb", "ndvi")

# Split names of the data reader (training/data): hand-labelled chips, the
# Sen1Floods11-style weakly labelled chips (no S2, as in the real dataset) and the
# external set (ED: S1 + S2 + an NDWI weak label).
HAND_TRAIN, HAND_VALID, TEST, BOLIVIA = "train", "valid", "test", "bolivia"
S1F11_WEAK, EXTERNAL = "weak", "external"
EVAL_SPLITS = (TEST, BOLIVIA)


@dataclass(frozen=True)
class Source:
    split: str
    label: str | None  # "label" (hand), "weak_label", or None: unlabelled (distillation)


@dataclass(frozen=True)
class Method:
    name: str                                 # command-line id
    title: str                                # Table 1 row
    kind: str                                 # "otsu", "supervised", "distill",
    #                                           "classify" (chip-level) or "flora"
    inputs: tuple[str, ...] = ("s1",)         # bands stacked as model input
    pools: tuple[tuple[Source, ...], ...] = ()
    compact: bool = False                     # trains the compact student network
    teacher: str | None = None                # method whose checkpoint teaches
    init_from: str | None = None              # method whose encoder starts this one
    paper: str = "001"                        # the seed paper the row comes from
    paper_iou: float | None = None
    paper_std: float | None = None

    @property
    def in_channels(self) -> int:
        return sum(INPUT_CHANNELS[b] for b in self.inputs)

    @property
    def reads_s2(self) -> bool:
        """Whether its chips must be read with Sentinel-2 (as input, teacher input or
        reconstruction target)."""
        return self.kind in ("distill", "flora") or self.inputs_need_s2

    @property
    def inputs_need_s2(self) -> bool:
        """Whether its own network reads Sentinel-2 (its validation chips need it too)."""
        return any(b != "s1" for b in self.inputs)

    @property
    def needs(self) -> tuple[str, ...]:
        """The methods whose checkpoints it needs: its teacher, its pretraining."""
        return tuple(m for m in (self.teacher, self.init_from) if m)

    @property
    def splits(self) -> set[str]:
        """The splits it trains on."""
        return {src.split for pool in self.pools for src in pool}


_HAND = Source(HAND_TRAIN, "label")
METHODS: tuple[Method, ...] = (
    Method("otsu", "Otsu thresholding", "otsu", paper_iou=54.58),
    Method("hand", "Hand labeled supervised", "supervised", pools=((_HAND,),),
           paper_iou=67.63, paper_std=0.45),
    Method("weak", "Weak labeled supervised: Sen1Floods11 weak", "supervised",
           pools=((Source(S1F11_WEAK, "weak_label"),),), paper_iou=67.76, paper_std=2.41),
    Method("weak_ed", "Weak labeled supervised: Sen1Floods11 + ED weak", "supervised",
           pools=((Source(S1F11_WEAK, "weak_label"), Source(EXTERNAL, "weak_label")),),
           paper_iou=68.94, paper_std=1.11),
    Method("student", "Cross modal distillation", "distill",
           pools=((Source(HAND_TRAIN, None),), (Source(EXTERNAL, None),)),
           teacher="teacher", paper_iou=71.91, paper_std=0.41),
    Method("student_compact", "Cross modal distillation, compact student (ours)", "distill",
           pools=((Source(HAND_TRAIN, None),), (Source(EXTERNAL, None),)),
           compact=True, teacher="teacher"),
    Method("teacher", "Teacher: S1 + S2, hand labeled", "supervised", inputs=("s1", "s2"),
           pools=((_HAND,),), paper_iou=79.25, paper_std=1.07),
    # the other seed papers, on the compact network, against its hand-labelled baseline
    Method("hand_compact", "Hand labeled supervised, compact network (baseline of 002, 003)",
           "supervised", pools=((_HAND,),), compact=True, paper="002, 003"),
    Method("chip_classifier", "Stage 1: does a crop hold water? (weak labels, chip level)",
           "classify", pools=((Source(S1F11_WEAK, "weak_label"),),), compact=True,
           paper="002"),
    Method("pretrained", "Two-stage: chip-classification pretraining, then hand labels",
           "supervised", pools=((_HAND,),), compact=True, init_from="chip_classifier",
           paper="002"),
    Method("optical_teacher", "Optical teacher: RGB + NDVI, hand labeled", "supervised",
           inputs=OPTICAL, pools=((_HAND,),), compact=True, paper="003"),
    Method("flora", "FLoRA-style: feature distillation + SAR-to-optical reconstruction",
           "flora", pools=((_HAND,), (Source(EXTERNAL, None),)), compact=True,
           teacher="optical_teacher", paper="003"),
)
BY_NAME = {m.name: m for m in METHODS}


def get_method(name: str) -> Method:
    if name not in BY_NAME:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def with_needs(names: list[str]) -> set[str]:
    """The methods named and, transitively, those whose checkpoints they need."""
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += BY_NAME[name].needs
    return wanted


def training_order() -> list[Method]:
    """Methods in an order where every teacher is trained before its students."""
    done: list[Method] = []
    pending = [m for m in METHODS if m.kind != "otsu"]
    while pending:
        for m in pending:
            if all(any(d.name == n for d in done) for n in m.needs):
                done.append(m)
                pending.remove(m)
                break
    return done
