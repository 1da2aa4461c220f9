"""Small in-memory chips with the data reader's dict interface, for loop tests.

Water is a thresholded smooth random field; S1 is dark over water, S2 (the
richer modality) is darker still, both with noise; a corner of every chip is
no-data. ``weak_label`` is the label with a few flipped blocks.
"""
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class TinyChips(Dataset):
    def __init__(self, n: int, size: int = 48, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        field = F.avg_pool2d(torch.randn(n, 1, size, size, generator=g), 9, 1, 4)[:, 0]
        water = field > 0.05
        noise = lambda c: 0.08 * torch.randn(n, c, size, size, generator=g)  # noqa: E731
        self.s1 = torch.where(water[:, None], 0.25, 0.6) + noise(2)
        self.s2 = torch.where(water[:, None], 0.1, 0.5) + 0.5 * noise(4)
        self.ndvi = torch.where(water[:, None], 0.3, 0.7) + noise(1)
        self.valid = torch.ones(n, size, size, dtype=torch.bool)
        self.valid[:, :4, :4] = False
        self.s1[:, :, :4, :4] = 0.0
        self.label = water.long().where(self.valid, torch.tensor(-1))
        self.weak_label = self.label.clone()
        self.weak_label[:, 8:16, 8:16] = 1 - self.weak_label[:, 8:16, 8:16].clamp(min=0)

    def __len__(self) -> int:
        return self.s1.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"id": f"tiny_{i}", "s1": self.s1[i], "s2": self.s2[i], "ndvi": self.ndvi[i],
                "label": self.label[i],
                "weak_label": self.weak_label[i], "valid": self.valid[i],
                "s2_valid": torch.ones_like(self.valid[i])}
