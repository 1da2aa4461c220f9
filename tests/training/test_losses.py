"""Edge-weighted cross-entropy and the distillation loss against hand computations."""
import math

import torch
import torch.nn.functional as F

from training.losses import distillation_loss, edge_mask, edge_weighted_ce, edge_weights

torch.set_num_threads(1)


def test_edge_mask_marks_inner_and_outer_edges_of_a_known_label():
    label = torch.zeros(1, 7, 7, dtype=torch.long)
    label[0, 2:5, 2:5] = 1  # a 3x3 water square
    label[0, 0, 6] = -1
    edges = edge_mask(label, radius=1)[0]
    expect = torch.zeros(7, 7, dtype=torch.bool)
    expect[1:6, 1:6] = True     # the ring of dry pixels around + the square's border
    expect[3, 3] = False        # the square's centre touches no dry pixel
    assert torch.equal(edges, expect)


def test_edge_weights_and_ignore():
    label = torch.tensor([[[0, 0, 1, 1, -1]]])
    w = edge_weights(label, edge_weight=3.0, radius=1)
    # pixels 1 (outer edge) and 2 (inner edge) are weighted; -1 has weight 0;
    # pixel 3 is water next to an ignored pixel only: not an edge
    assert w.tolist() == [[[1.0, 3.0, 3.0, 1.0, 0.0]]]


def test_edge_weighted_ce_equals_hand_computation():
    label = torch.tensor([[[0, 0, 1, 1, -1]]])
    logits = torch.randn(1, 2, 1, 5)
    w = torch.tensor([1.0, 3.0, 3.0, 1.0, 0.0])
    logp = F.log_softmax(logits, dim=1)[0, :, 0]
    ce = torch.stack([-logp[c, i] for i, c in enumerate([0, 0, 1, 1, 0])])
    expect = (w * ce).sum() / w.sum()
    got = edge_weighted_ce(logits, label, edge_weight=3.0, radius=1)
    assert torch.allclose(got, expect, atol=1e-6)


def test_ignored_pixels_do_not_change_the_loss_or_get_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    label = torch.randint(0, 2, (1, 4, 4))
    label[0, :, 3] = -1
    loss = edge_weighted_ce(logits, label)
    loss.backward()
    assert torch.all(logits.grad[0, :, :, 3] == 0)
    # changing the logits of ignored pixels leaves the loss unchanged
    other = logits.detach().clone()
    other[0, :, :, 3] = 100.0
    assert torch.allclose(edge_weighted_ce(other, label), loss.detach())


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = edge_weighted_ce(logits, torch.full((1, 3, 3), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_distillation_loss_equals_hand_computation():
    # two pixels, K = 2; the third pixel is invalid and must not count
    s = torch.tensor([[[[0.0, 1.0, 9.0]], [[2.0, -1.0, -9.0]]]])  # (1, 2, 1, 3)
    pt = torch.tensor([[[[0.8, 0.3, 0.5]], [[0.2, 0.7, 0.5]]]])
    valid = torch.tensor([[[True, True, False]]])

    def log_softmax2(a, b):
        m = math.log(math.exp(a) + math.exp(b))
        return a - m, b - m

    total = 0.0
    for i in range(2):
        l0, l1 = log_softmax2(s[0, 0, 0, i].item(), s[0, 1, 0, i].item())
        total += -(pt[0, 0, 0, i].item() * l0 + pt[0, 1, 0, i].item() * l1)
    got = distillation_loss(s, pt, valid)
    assert abs(got.item() - total / 2) < 1e-6


def test_distillation_loss_is_minimal_when_student_matches_teacher():
    pt = torch.softmax(torch.randn(1, 2, 5, 5), dim=1)
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    matched = distillation_loss(torch.log(pt), pt, valid)
    entropy = -(pt * torch.log(pt)).sum(1).mean()
    assert torch.allclose(matched, entropy, atol=1e-6)   # = KL 0 + H(p_t)
    assert distillation_loss(torch.randn(1, 2, 5, 5), pt, valid) > matched
