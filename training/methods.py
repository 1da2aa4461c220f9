"""The rows of Garg et al.'s Table 1, and our compact student, as data.

Each method says which model it trains, on which inputs, from which training
splits and labels, and with which loss. ``pools`` lists the data sources of a
batch: every pool gets an equal share of each batch (the distillation student
samples the hand-labelled chips and the external set equally, Section 3.2); the
datasets inside one pool are simply concatenated.

Published numbers are IoU (%) of the water class on the Sen1Floods11 hand-labelled
test split, mean +/- std over 5 runs (Garg et al., Table 1; the teacher's from
Section 4, which gives no Otsu std).
"""
from __future__ import annotations

from dataclasses import dataclass

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
    kind: str                                 # "otsu", "supervised" or "distill"
    inputs: tuple[str, ...] = ("s1",)         # bands stacked as model input
    pools: tuple[tuple[Source, ...], ...] = ()
    compact: bool = False                     # trains the compact student network
    teacher: str | None = None                # method whose checkpoint teaches
    paper_iou: float | None = None
    paper_std: float | None = None

    @property
    def in_channels(self) -> int:
        return sum({"s1": 2, "s2": 4}[b] for b in self.inputs)

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
)
BY_NAME = {m.name: m for m in METHODS}


def get_method(name: str) -> Method:
    if name not in BY_NAME:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def training_order() -> list[Method]:
    """Methods in an order where every teacher is trained before its students."""
    done: list[Method] = []
    pending = [m for m in METHODS if m.kind != "otsu"]
    while pending:
        for m in pending:
            if m.teacher is None or any(d.name == m.teacher for d in done):
                done.append(m)
                pending.remove(m)
                break
    return done
