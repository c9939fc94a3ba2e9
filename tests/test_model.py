import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from published_recipe import load_manifest, recipe_state_dict  # noqa: E402

from iivformer.errors import IIVFormerError
from iivformer.model import Attention, IIVFormer, ModelConfig, count_parameters

GOLDEN_PATH = Path(__file__).parent / "fixtures" / "forward_golden.npz"
SMALL = dict(embed_dim_ratio=16, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def published():
    golden = np.load(GOLDEN_PATH)
    model = IIVFormer().eval()
    model.load_state_dict(recipe_state_dict(int(golden["weight_seed"])), strict=True)
    return model, golden


def test_state_dict_matches_manifest_keys_order_and_shapes():
    manifest = load_manifest()["entries"]
    state = IIVFormer().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e["key"], e["shape"]) for e in manifest]


def test_parameter_count_matches_published_checkpoint():
    manifest_total = sum(math.prod(e["shape"]) for e in load_manifest()["entries"])
    assert manifest_total == 9_560_920
    assert count_parameters(IIVFormer()) == 9_560_920


def test_manifest_config_matches_defaults():
    config = ModelConfig()
    for key, value in load_manifest()["config"].items():
        assert getattr(config, key) == value


def test_golden_forward_parity(published):
    model, golden = published
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input"])).numpy()
    assert out.shape == golden["output"].shape == (8, 1, 17, 3)
    np.testing.assert_allclose(out, golden["output"], atol=1e-4, rtol=0)


def test_forward_with_attention_matches_forward(published):
    model, golden = published
    x = torch.from_numpy(golden["input"])
    with torch.no_grad():
        out = model(x)
        out_attn, maps = model.forward_with_attention(x)
    torch.testing.assert_close(out_attn, out, atol=0, rtol=0)
    assert len(maps["intra"]) == len(maps["inter"]) == 4
    for a in maps["intra"]:
        assert a.shape == (8, 4, 8, 17, 17)
        torch.testing.assert_close(a.sum(-1), torch.ones(8, 4, 8, 17))
        assert (a >= 0).all()
    for a in maps["inter"]:
        assert a.shape == (8, 8, 4, 4)
        torch.testing.assert_close(a.sum(-1), torch.ones(8, 8, 4))
        assert (a >= 0).all()


@pytest.mark.parametrize("num_view,num_joints", [(4, 17), (3, 17), (2, 13), (5, 21)])
def test_small_configs_shapes_and_gradients(num_view, num_joints):
    torch.manual_seed(0)
    model = IIVFormer(num_view=num_view, num_joints=num_joints, **SMALL)
    x = torch.randn(3, num_view, num_joints, 2)
    out = model(x)
    assert out.shape == (3, 1, num_joints, 3)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.Intra_patch_to_embedding.weight.grad.abs().sum() > 0
    model.eval()
    _, maps = model.forward_with_attention(x)
    assert [a.shape for a in maps["intra"]] == [(3, num_view, 4, num_joints, num_joints)] * 2
    assert [a.shape for a in maps["inter"]] == [(3, 4, num_view, num_view)] * 2


def test_train_mode_drop_path_is_stochastic_eval_is_deterministic():
    torch.manual_seed(0)
    model = IIVFormer(drop_path_rate=0.5, **SMALL)
    x = torch.randn(16, 4, 17, 2)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_drop_path_schedule_is_linear_and_zero_rate_is_identity():
    model = IIVFormer(depth=3, drop_path_rate=0.2, **{k: v for k, v in SMALL.items() if k != "depth"})
    for blocks in (model.Intra_blocks, model.Inter_blocks):
        assert [b.drop_path.rate for b in blocks] == pytest.approx([0.0, 0.1, 0.2])
    torch.manual_seed(0)
    model = IIVFormer(drop_path_rate=0.0, **SMALL).train()
    x = torch.randn(4, 4, 17, 2)
    assert torch.equal(model(x), model(x))


def test_qk_scale_override_changes_output():
    torch.manual_seed(0)
    default = IIVFormer(**SMALL).eval()
    scaled = IIVFormer(qk_scale=1.0, **SMALL).eval()
    scaled.load_state_dict(default.state_dict())
    x = torch.randn(2, 4, 17, 2)
    with torch.no_grad():
        assert not torch.allclose(default(x), scaled(x), atol=1e-5)


@pytest.mark.parametrize("qk_scale", [None, 0.7])
def test_attention_maps_reproduce_fused_attention_output(qk_scale):
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4, qk_scale=qk_scale).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y, probs = attn(x, return_attention=True)
        y_plain, none = attn(x)
        v = attn.qkv(x).reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)[2]  # (B, heads, N, head_dim)
        y_from_probs = attn.proj((probs @ v).transpose(1, 2).reshape(2, 5, 32))
    assert none is None
    torch.testing.assert_close(y, y_plain, atol=0, rtol=0)
    torch.testing.assert_close(y_from_probs, y, atol=1e-5, rtol=1e-5)


def test_config_round_trip_and_model_from_config():
    config = ModelConfig(num_view=3, qk_scale=0.5, **SMALL)
    assert ModelConfig.from_dict(config.to_dict()) == config
    model = IIVFormer(config)
    assert model.config == config
    assert model.Inter_pos_embed.shape == (1, 3, 17 * 16)
    assert IIVFormer().config == ModelConfig()


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(IIVFormerError, match="unknown keys: bogus") as info:
        ModelConfig.from_dict({**ModelConfig().to_dict(), "bogus": 1})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("qkv_bias,qk_scale", [(True, None), (False, 0.7)])
def test_head_by_head_attention_equals_fused_attention_with_gradients(qkv_bias, qk_scale):
    """Narrow heads on the CPU go head by head (explicit softmax), the rest through SDPA: same function."""
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=8, qkv_bias=qkv_bias, qk_scale=qk_scale)  # head width 4
    x = torch.randn(6, 17, 32)
    grad_out = torch.randn(6, 17, 32)
    results = []
    for path in (attn._head_by_head, lambda x, maps: attn._fused(x, maps, None)):
        attn.zero_grad()
        x_in = x.clone().requires_grad_(True)
        y, maps = path(x_in, True)
        (y * grad_out).sum().backward()
        results.append((y.detach(), maps, x_in.grad, [p.grad.clone() for p in attn.qkv.parameters()]))
    (y1, maps1, gx1, gp1), (y2, maps2, gx2, gp2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps1, maps2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    for a, b in zip(gp1, gp2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dim,heads", [(32, 8), (136, 2)])  # the intra-view and a wide inter-view shape
def test_explicit_attention_equals_fused_attention_with_masks_and_gradients(dim, heads):
    """On CUDA every head goes as explicit matrices (the published computation): the same function as
    SDPA, view mask included, computed here on the CPU."""
    torch.manual_seed(0)
    attn = Attention(dim=dim, num_heads=heads)
    x = torch.randn(6, 4, dim)
    key_mask = torch.ones(6, 1, 1, 4, dtype=torch.bool)
    key_mask[::2, ..., 1] = False
    grad_out = torch.randn(6, 4, dim)
    results = []
    for path in (attn._explicit, attn._fused):
        attn.zero_grad()
        x_in = x.clone().requires_grad_(True)
        y, maps = path(x_in, True, key_mask)
        (y * grad_out).sum().backward()
        results.append((y.detach(), maps, x_in.grad, [p.grad.clone() for p in attn.qkv.parameters()]))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.all(results[0][1][::2, :, :, 1] == 0)  # masked views get no attention


def test_the_path_is_chosen_by_device(monkeypatch):
    """CPU: narrow heads one by one, wide heads by SDPA; CUDA: explicit matrices; other devices: SDPA."""
    attn = Attention(dim=32, num_heads=8)
    called = []
    for name in ("_head_by_head", "_explicit", "_fused"):
        monkeypatch.setattr(attn, name, lambda *args, name=name: called.append(name) or (args[0], None))
    attn(torch.randn(2, 17, 32))
    monkeypatch.setattr(Attention, "EXPLICIT_DEVICES", ("cpu",))
    attn(torch.randn(2, 17, 32), key_mask=torch.ones(2, 1, 1, 17, dtype=torch.bool))
    monkeypatch.setattr(Attention, "EXPLICIT_DEVICES", ())
    attn(torch.randn(2, 17, 32), key_mask=torch.ones(2, 1, 1, 17, dtype=torch.bool))
    assert called == ["_head_by_head", "_explicit", "_fused"]


def test_bf16_autocast_computes_only_the_inter_view_stack_in_bfloat16():
    """Under bf16 autocast the inter-view blocks compute in bfloat16, while the 2D input embedding,
    the intra-view blocks, the view mean and the head take float32: a nudge far below bfloat16's
    resolution (1e-4 on inputs in [0.5, 1), where bfloat16's steps are 2**-8) still reaches the
    output, which is float32."""
    torch.manual_seed(0)
    model = IIVFormer(**SMALL).eval()
    seen = {}
    model.Intra_blocks[0].attn.proj.register_forward_hook(lambda m, i, o: seen.update(intra=o.dtype))
    model.Intra_blocks[-1].mlp.fc2.register_forward_hook(lambda m, i, o: seen.update(intra_out=o.dtype))
    model.Inter_blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.update(inter=(i[0].dtype, o.dtype)))
    model.Inter_blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.update(mlp=o.dtype))
    model.head[1].register_forward_hook(lambda m, i, o: seen.update(head=(i[0].dtype, o.dtype)))
    x = 0.5 + 0.5 * torch.rand(2, 4, 17, 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, nudged = model(x), model(x + 1e-4)
        masked = model(x, view_mask=torch.tensor([True, False, True, True]))
    assert seen == {"intra": torch.float32, "intra_out": torch.float32, "inter": (torch.float32, torch.bfloat16),
                    "mlp": torch.bfloat16, "head": (torch.float32, torch.float32)}
    assert out.dtype == masked.dtype == torch.float32
    assert (out - nudged).abs().max() > 0
    with torch.no_grad():
        full = model(x)
    assert 0 < (out - full).abs().max() < 0.1 * full.abs().max()  # bf16 in between: close, not equal
