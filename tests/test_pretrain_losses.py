"""`nnunet-dino pretrain`'s building blocks against straightforward recomputations: the DINO, iBOT,
KoLeo and Gram losses, centring, the teacher's EMA, the iBOT masks, schedules and lr groups."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dino_weights_helpers import tiny_spec
from nnunet_dino.backbones.frozen import build_timm_vit
from nnunet_dino.pretrain.augment import random_masks
from nnunet_dino.pretrain.losses import (Centre, dino_loss, gram_loss, ibot_loss, koleo_loss, sinkhorn_knopp,
                                         teacher_probabilities)
from nnunet_dino.pretrain.model import PretrainNetwork, ema_update_, make_teacher
from nnunet_dino.pretrain.recipe import Recipe, parameter_groups, schedule

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_HEADS = Recipe(prototypes=32, head_hidden=48, head_bottleneck=16)


def _softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def _cross_entropy(p_teacher, s_scores, temp):
    log_q = [math.log(q) for q in _softmax([v / temp for v in s_scores])]
    return -sum(p * lq for p, lq in zip(p_teacher, log_q))


def _network(base="dinov2_vits14", recipe=TINY_HEADS, seed=0):
    spec = tiny_spec(base)
    torch.manual_seed(seed)
    return PretrainNetwork(spec, build_timm_vit(spec), "meta", recipe)


def test_dino_loss_is_the_mean_cross_entropy_over_every_pair_but_a_global_crop_with_itself():
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local
    centre = torch.randn(1, 5, generator=gen, dtype=torch.float64)
    teacher_scores = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    probs = [teacher_probabilities(t, centre, 0.04).double() for t in teacher_scores]
    expected, pairs = 0.0, 0
    for s in range(4):
        for t in range(2):
            if s == t:
                continue
            for b in range(3):
                p = _softmax([(teacher_scores[t][b, k] - centre[0, k]).item() / 0.04 for k in range(5)])
                expected += _cross_entropy(p, student[s][b].tolist(), 0.1) / 3
            pairs += 1
    assert pairs == 6
    assert dino_loss(student, probs, 0.1).item() == pytest.approx(expected / pairs, rel=1e-5)


def test_ibot_loss_weighs_each_image_equally_over_its_masked_patches():
    gen = torch.Generator().manual_seed(1)
    masks = torch.zeros(3, 2, 2, dtype=torch.bool)
    masks[0, 0, 1] = True
    masks[2] = torch.tensor([[True, False], [True, True]])  # image 1 unmasked: counts in the denominator
    m = int(masks.sum())
    student = torch.randn(m, 6, generator=gen, dtype=torch.float64)
    teacher = F.softmax(torch.randn(m, 6, generator=gen, dtype=torch.float64), dim=-1)
    ce = [_cross_entropy(teacher[i].tolist(), student[i].tolist(), 0.1) for i in range(m)]
    expected = (ce[0] / 1 + (ce[1] + ce[2] + ce[3]) / 3) / 3
    assert ibot_loss(student, teacher, masks, 0.1).item() == pytest.approx(expected, rel=1e-6)
    nothing = torch.zeros(2, 2, 2, dtype=torch.bool)
    assert ibot_loss(torch.zeros(0, 6), torch.zeros(0, 6), nothing, 0.1).item() == 0.0


def test_koleo_is_minus_mean_log_distance_to_the_nearest_other_normalised_vector():
    x = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -3.0], [0.1, 1.0, 0.2]])
    unit = [np.array(v) / np.linalg.norm(v) for v in x.tolist()]
    nearest = [min(np.linalg.norm(u - w) for j, w in enumerate(unit) if j != i) for i, u in enumerate(unit)]
    expected = -np.mean(np.log(nearest))
    assert koleo_loss(x).item() == pytest.approx(expected, rel=1e-5)


def test_gram_loss_is_the_mse_of_patch_cosine_similarity_matrices():
    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 4, 3, generator=gen), torch.randn(2, 4, 3, generator=gen)
    total = 0.0
    for b in range(2):
        for i in range(4):
            for j in range(4):
                total += (F.cosine_similarity(s[b, i], s[b, j], dim=0) - F.cosine_similarity(t[b, i], t[b, j], dim=0)) ** 2
    assert gram_loss(s, t).item() == pytest.approx(float(total) / 32, rel=1e-5)


def test_centre_is_an_ema_of_the_batch_mean_and_centres_the_teacher_softmax():
    centre = Centre(3, momentum=0.9)
    a, b = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 6.0]])
    centre.update(a)
    assert torch.allclose(centre.value, 0.1 * torch.tensor([[2.0, 2.0, 2.0]]))
    centre.update(b)
    assert torch.allclose(centre.value, 0.9 * 0.1 * torch.tensor([[2.0, 2.0, 2.0]]) + 0.1 * torch.tensor([[0.0, 0.0, 6.0]]))
    scores = torch.tensor([[0.5, 0.1, 0.3]])
    expected = torch.tensor([_softmax([(scores[0, k] - centre.value[0, k]).item() / 0.07 for k in range(3)])])
    assert torch.allclose(teacher_probabilities(scores, centre.value, 0.07), expected, atol=1e-6)


def test_sinkhorn_knopp_balances_prototypes_and_normalises_rows():
    gen = torch.Generator().manual_seed(4)
    scores = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 2 - 1  # cosines
    q = np.exp(scores.numpy() / 0.05).T  # (K, N), recomputed by hand: rows = prototypes
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(axis=1, keepdims=True) * 4
        q /= q.sum(axis=0, keepdims=True) * 6
    expected = (q * 6).T
    probs = sinkhorn_knopp(scores, 0.05).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)  # each image a distribution
    converged = sinkhorn_knopp(scores, 0.05, iterations=50).numpy()
    np.testing.assert_allclose(converged.sum(axis=0), 6 / 4, rtol=1e-2)  # each prototype a K-th of the batch
    plain = teacher_probabilities(scores, torch.zeros(1, 4, dtype=torch.float64), 0.05).numpy()
    assert np.abs(probs.sum(axis=0) - 6 / 4).sum() < 0.6 * np.abs(plain.sum(axis=0) - 6 / 4).sum()


def test_an_unknown_centring_is_refused():
    from nnunet_dino.errors import OptionError
    Recipe(centring="sinkhorn").check()
    with pytest.raises(OptionError, match="--centring 'softmax': choose one of centre, sinkhorn"):
        Recipe(centring="softmax").check()


def test_teacher_is_the_ema_of_the_student_parameter_by_parameter():
    student = _network()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.99)
    names = [n for n, _ in student.named_parameters()]
    assert [n for n, _ in teacher.named_parameters()] == names and "mask_token" in names
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(new, 0.99 * old + 0.01 * s, atol=1e-7)
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("base", ["dinov2_vits14_reg4", "dinov3_vits16"])
def test_masked_patches_and_only_they_become_the_mask_token(base):
    net = _network(base)
    p = net.spec.patch_size
    x = torch.randn(2, 3, 3 * p, 2 * p)
    masks = torch.zeros(2, 3, 2, dtype=torch.bool)
    masks[0, 1, 0] = masks[1, 2, 1] = masks[1, 0, 0] = True
    with torch.no_grad():
        net.mask_token.normal_()
        seen = []
        hook = net.vit.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        net.encode(x, masks)
        net.encode(x)
        hook.remove()
        patches = net.vit.patch_embed(x)  # (B, h, w, D), before positions
    prefix = net.spec.num_prefix_tokens
    difference = (seen[0] - seen[1])[:, prefix:].reshape(2, 3, 2, -1)
    assert torch.equal(seen[0][:, :prefix], seen[1][:, :prefix])
    assert torch.all(difference[~masks] == 0)
    assert torch.allclose(difference[masks], net.mask_token - patches[masks], atol=1e-5)
    out = net(x, masks=masks)
    assert out["ibot"].shape == (3, TINY_HEADS.prototypes)
    assert torch.allclose(out["ibot"], net.ibot_head(out["patches"][masks.flatten(1)]))


def test_random_masks_mask_the_drawn_share_of_patches():
    masks = random_masks(400, (4, 5), 0.5, (0.1, 0.5), torch.Generator().manual_seed(0))
    counts = masks.flatten(1).sum(1)
    masked = counts > 0
    assert 150 < int(masked.sum()) < 250
    assert int(counts[masked].min()) >= 2 and int(counts[masked].max()) <= 10  # round(r * 20), r in [0.1, 0.5]


def test_schedules_warm_up_then_follow_cosines():
    recipe = Recipe(steps=100, lr=1e-3, min_lr=0.0, warmup_fraction=0.1)
    first, warm, last = schedule(recipe, 0), schedule(recipe, 9), schedule(recipe, 99)
    assert first.lr == pytest.approx(1e-4) and warm.lr == pytest.approx(1e-3)
    assert schedule(recipe, 55).lr == pytest.approx(0.5e-3, rel=1e-6)  # half-way down the cosine
    assert (first.momentum, last.momentum) == (pytest.approx(0.992), pytest.approx(1.0))
    assert (first.weight_decay, last.weight_decay) == (pytest.approx(0.04), pytest.approx(0.2))
    assert first.teacher_temp == pytest.approx(0.04) and schedule(recipe, 15).teacher_temp == pytest.approx(0.055)
    assert schedule(recipe, 30).teacher_temp == pytest.approx(0.07)


def test_layerwise_lr_decay_and_no_weight_decay_on_norms_biases_and_tokens():
    net = _network()
    recipe = Recipe(layer_decay=0.5, patch_embed_lr=0.2)
    scale = {}
    for group in parameter_groups(net, recipe):
        for param in group["params"]:
            scale[id(param)] = (group["lr_scale"], group["wd_scale"])
    named = dict(net.named_parameters())
    depth = len(net.vit.blocks)  # 4
    assert scale[id(named["vit.blocks.3.mlp.fc1.weight"])] == (0.5, 1.0)
    assert scale[id(named["vit.blocks.0.mlp.fc1.weight"])] == (0.5 ** depth, 1.0)
    assert scale[id(named["vit.blocks.0.mlp.fc1.bias"])] == (0.5 ** depth, 0.0)
    assert scale[id(named["vit.patch_embed.proj.weight"])] == (pytest.approx(0.2 * 0.5 ** (depth + 1)), 1.0)
    assert scale[id(named["vit.cls_token"])] == (0.5 ** (depth + 1), 0.0)
    assert scale[id(named["vit.norm.weight"])] == (1.0, 0.0)
    assert scale[id(named["dino_head.prototypes"])] == (1.0, 1.0)
