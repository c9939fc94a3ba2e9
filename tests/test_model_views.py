"""IIVFormer on a subset of its views: `view_mask` in forward and forward_with_attention."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from published_recipe import load_manifest, recipe_state_dict  # noqa: E402

from iivformer.model import IIVFormer

GOLDEN_PATH = Path(__file__).parent / "fixtures" / "forward_golden.npz"
SMALL = dict(embed_dim_ratio=16, depth=2, num_heads=4)
V = 4
pytestmark = pytest.mark.usefixtures("one_thread")
ALL_SUBSETS = torch.tensor([[v in subset for v in range(V)]  # the 15 non-empty subsets of 4 views
                            for n in range(1, V + 1) for subset in itertools.combinations(range(V), n)])


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return IIVFormer(**{**SMALL, **overrides}).eval()


@pytest.fixture(scope="module")
def published():
    golden = np.load(GOLDEN_PATH)
    model = IIVFormer().eval()
    model.load_state_dict(recipe_state_dict(int(golden["weight_seed"])), strict=True)
    return model, torch.from_numpy(golden["input"])


def random_input(batch, seed=1):
    return torch.randn(batch, V, 17, 2, generator=torch.Generator().manual_seed(seed))


def capture_view_tokens_and_mean(model):
    """Hooks recording the (B, V, D) view tokens entering the weighted mean and its (B, 1, D) result."""
    seen = {}
    handles = [model.Inter_norm.register_forward_hook(lambda m, i, out: seen.__setitem__("tokens", out)),
               model.head.register_forward_pre_hook(lambda m, i: seen.__setitem__("mean", i[0]))]
    return seen, handles


def with_weights(model, weights, bias=0.25):
    with torch.no_grad():
        model.weighted_mean.weight.copy_(torch.tensor(weights).reshape(1, V, 1))
        model.weighted_mean.bias.fill_(bias)
    return model


# (1) no mask / all-True mask: exactly today's computation

@pytest.mark.parametrize("which", ["published", "small"])
def test_no_mask_and_all_true_mask_are_bit_identical_to_plain_forward(which, published):
    model, x = published if which == "published" else (small_model(), random_input(6))
    all_views = torch.ones(V, dtype=torch.bool)
    with torch.no_grad():
        plain = model(x)
        plain_attn_out, plain_maps = model.forward_with_attention(x)
        for mask in (None, all_views, all_views.expand(x.shape[0], V).clone()):
            assert torch.equal(model(x, mask), plain)
            assert torch.equal(model(x, view_mask=mask), plain)
            out, maps = model.forward_with_attention(x, mask)
            assert torch.equal(out, plain_attn_out)
            for key in ("intra", "inter"):
                assert all(torch.equal(a, b) for a, b in zip(maps[key], plain_maps[key], strict=True))


# (2) the state dict is untouched

def test_state_dict_keys_shapes_and_values_unchanged_by_masking():
    manifest = [(e["key"], e["shape"]) for e in load_manifest()["entries"]]
    model = IIVFormer().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert [(k, list(v.shape)) for k, v in before.items()] == manifest
    assert list(model.buffers()) == []
    with torch.no_grad():
        model(random_input(2), torch.tensor([True, False, True, False]))
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


# (3) an absent view's input cannot reach the output

@pytest.mark.parametrize("which", ["published", "small"])
@pytest.mark.parametrize("junk", [float("nan"), 1e30, -1e30, float("inf"), "random"])
def test_changing_an_absent_views_input_leaves_the_output_unchanged(which, junk, published):
    model, x = published if which == "published" else (small_model(), random_input(8))
    x = x[:4]
    mask = torch.tensor([[True, False, True, True], [False, True, False, False],
                         [True, True, False, True], [False, False, True, True]])
    changed = x.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100 if junk == "random" else junk
    with torch.no_grad():
        out = model(x, mask)
        assert torch.isfinite(out).all()
        assert torch.equal(model(changed, mask), out)
        assert torch.equal(model.forward_with_attention(changed, mask)[0], out)


# (4) inter-view attention maps put nothing on absent keys

def test_inter_view_attention_maps_are_zero_on_absent_keys_and_rows_sum_to_one():
    model, x = small_model(), random_input(len(ALL_SUBSETS))
    with torch.no_grad():
        out, maps = model.forward_with_attention(x, ALL_SUBSETS)
        assert torch.equal(out, model(x, ALL_SUBSETS))
    absent_keys = ~ALL_SUBSETS[:, None, None, :].expand(-1, 4, V, V)  # (B, heads, queries, keys)
    assert len(maps["inter"]) == 2
    for a in maps["inter"]:
        assert a.shape == (len(ALL_SUBSETS), 4, V, V)
        assert torch.equal(a[absent_keys], torch.zeros_like(a[absent_keys]))
        assert (a[~absent_keys] > 0).all()
        torch.testing.assert_close(a.sum(-1), torch.ones(len(ALL_SUBSETS), 4, V))
    for a in maps["intra"]:
        torch.testing.assert_close(a.sum(-1), torch.ones(len(ALL_SUBSETS), V, 4, 17))


def test_a_single_present_view_attends_only_to_itself():
    model, x = small_model(), random_input(1)
    with torch.no_grad():
        _, maps = model.forward_with_attention(x, torch.tensor([False, False, True, False]))
    for a in maps["inter"]:
        assert torch.equal(a[..., 2], torch.ones_like(a[..., 2]))


# (5) a per-sample mask is the same as each sample run alone

@pytest.mark.parametrize("which", ["published", "small"])
def test_per_sample_mask_equals_each_sample_run_alone(which, published):
    model = published[0] if which == "published" else small_model()
    x = random_input(len(ALL_SUBSETS), seed=3)
    with torch.no_grad():
        batched = model(x, ALL_SUBSETS)
        for i, mask in enumerate(ALL_SUBSETS):
            torch.testing.assert_close(model(x[i:i + 1], mask), batched[i:i + 1])
            torch.testing.assert_close(model(x[i:i + 1], mask[None]), batched[i:i + 1])


def test_batched_prediction_slices_a_per_sample_mask_batch_by_batch():
    from iivformer.evaluate import predict
    model, x = small_model(), random_input(len(ALL_SUBSETS), seed=4)
    whole = predict(model, x.numpy(), batch_size=len(ALL_SUBSETS), view_mask=ALL_SUBSETS.numpy())
    in_batches = predict(model, x.numpy(), batch_size=4, view_mask=ALL_SUBSETS.numpy())
    np.testing.assert_allclose(in_batches, whole, atol=1e-4)


def test_a_one_dimensional_mask_applies_to_every_sample():
    model, x = small_model(), random_input(5)
    mask = torch.tensor([False, True, True, False])
    with torch.no_grad():
        assert torch.equal(model(x, mask), model(x, mask.expand(5, V)))


# (6) the weighted mean over the present views

def masked_mean_of(model, x, mask):
    seen, handles = capture_view_tokens_and_mean(model)
    try:
        with torch.no_grad():
            model(x, mask)
    finally:
        for handle in handles:
            handle.remove()
    return seen["tokens"], seen["mean"]


def test_weighted_mean_with_all_views_is_the_original_conv1d():
    for weights in ([0.3, 0.2, 0.1, 0.4], [1.0, -1.0, 0.5, -0.5]):  # the second sums to zero
        model = with_weights(small_model(), weights)
        x = random_input(3)
        for mask in (None, torch.tensor([[True] * V, [True, False, True, True], [True] * V])):
            tokens, mean = masked_mean_of(model, x, mask)
            conv = model.weighted_mean(tokens)
            full_rows = [0, 2]
            torch.testing.assert_close(mean[full_rows], conv[full_rows], atol=1e-6, rtol=1e-6)
            expected = torch.einsum("v,bvd->bd", torch.tensor(weights), tokens)[:, None] + 0.25
            torch.testing.assert_close(mean[full_rows], expected[full_rows], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("weights", [[0.3, 0.2, 0.1, 0.4], [1.0, -1.0, 0.5, -0.25], None])
def test_weighted_mean_of_one_present_view_is_that_view_times_the_weight_sum(weights):
    model = small_model() if weights is None else with_weights(small_model(), weights)
    w = model.weighted_mean.weight.detach().reshape(V)
    b = model.weighted_mean.bias.detach()
    x = random_input(V)
    tokens, mean = masked_mean_of(model, x, torch.eye(V, dtype=torch.bool))  # sample v keeps view v
    for v in range(V):
        torch.testing.assert_close(mean[v, 0], w.sum() * tokens[v, v] + b)


@pytest.mark.parametrize("weights", [[0.3, 0.2, 0.1, 0.4], [1.0, -1.0, 0.5, -0.25], [0.0, 0.0, 0.7, 0.1]])
def test_weighted_mean_shares_the_absent_views_weight_equally_among_the_present(weights):
    model = with_weights(small_model(), weights)
    mask = torch.tensor([[True, False, True, False], [False, True, True, True],
                         [True, True, False, False], [True, True, True, False]])
    tokens, mean = masked_mean_of(model, random_input(4), mask)
    w = torch.tensor(weights)
    for i, present in enumerate(mask):
        absent_weight = w[~present].sum()
        expected = (w[present, None] * tokens[i, present]).sum(0) + absent_weight * tokens[i, present].mean(0) + 0.25
        torch.testing.assert_close(mean[i, 0], expected)
    assert torch.isfinite(mean).all()


@pytest.mark.parametrize("weights", [[0.3, 0.2, 0.1, 0.4], [1.0, -1.0, 0.5, -0.25], None])
def test_views_that_agree_give_the_same_pose_from_any_subset(weights):
    """Identical views with no view position embedding give identical view tokens, so every
    subset must reproduce the all-view output: the rescaling keeps the all-view scale."""
    model = small_model() if weights is None else with_weights(small_model(), weights)
    with torch.no_grad():
        model.Inter_pos_embed.zero_()
        x = random_input(1)[:, :1].expand(len(ALL_SUBSETS), V, 17, 2)
        full = model(x[:1])
        torch.testing.assert_close(model(x, ALL_SUBSETS), full.expand(len(ALL_SUBSETS), -1, -1, -1),
                                   atol=1e-5, rtol=1e-4)


# (7) refusals

def test_a_sample_without_any_view_is_refused_naming_the_count():
    model, x = small_model(), random_input(3)
    mask = torch.tensor([[True, False, False, False], [False] * V, [False] * V])
    with pytest.raises(ValueError, match=r"2 of 3 samples.*sample 1"):
        model(x, mask)
    with pytest.raises(ValueError, match=r"3 of 3 samples"):
        model.forward_with_attention(x, torch.zeros(V, dtype=torch.bool))


def test_a_mask_of_the_wrong_shape_or_type_is_refused():
    model, x = small_model(), random_input(3)
    for mask in (torch.ones(3, dtype=torch.bool), torch.ones(2, V, dtype=torch.bool),
                 torch.ones(3, V, 1, dtype=torch.bool)):
        with pytest.raises(ValueError, match="view_mask must have shape"):
            model(x, mask)
    for mask in (torch.ones(V), torch.ones(3, V, dtype=torch.long), [True] * V):
        with pytest.raises(TypeError, match="bool tensor"):
            model(x, mask)


# (8) gradients reach only the present views

@pytest.mark.parametrize("junk", [None, float("nan"), 1e30])
def test_gradients_reach_only_present_views_inputs(junk):
    model = small_model().train()  # dropout rates are 0; drop path is stochastic but finite
    mask = torch.tensor([[True, False, True, True], [False, True, False, False], [True] * V])
    x = random_input(3)
    if junk is not None:
        x[~mask] = junk
    x.requires_grad_(True)
    model(x, mask).square().sum().backward()
    absent_grad = x.grad[~mask]
    assert torch.equal(absent_grad, torch.zeros_like(absent_grad))
    assert torch.isfinite(x.grad).all()
    for v in range(V):
        for i in range(3):
            if mask[i, v]:
                assert x.grad[i, v].abs().sum() > 0, (i, v)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.weighted_mean.weight.grad.abs().sum() > 0
