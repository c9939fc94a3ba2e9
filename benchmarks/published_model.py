"""The published IIVFormer forward (Peng, The Visual Computer 2025), restated in plain PyTorch
as the baseline of the speed benchmarks.

Same parameter names, shapes and registration order as ``iivformer.model.IIVFormer`` (so the
same state dict loads into either) and the same function; only the way it is computed follows
the published code, so that a timing compares implementations, not models:

* attention as explicit matrices: ``q @ k^T * scale``, the pre-softmax scores copied out as
  ``detach().cpu()`` on every call (the published ``last_attn_map``; on a CPU tensor ``.cpu()``
  is the tensor itself, so it costs nothing here), softmax, attention dropout, ``attn @ v``;
* ``(B, 2, V, J)`` channel-first input rearranged with permutes, the position embeddings added in
  place, the weighted mean over views as a ``Conv1d`` with kernel 1;
* stochastic depth as in timm 1.0 (identity where the rate is 0), einops and timm replaced by torch.

    from benchmarks.published_model import PublishedIIVFormer
    model = PublishedIIVFormer(); model.load_state_dict(project_model.state_dict())
"""
import torch
import torch.nn as nn

from iivformer.config import ModelConfig


class PublishedDropPath(nn.Module):
    """timm's DropPath (timm 1.0, as the published requirements pin): zero whole samples with
    probability `rate` in training, the rest scaled by 1 / keep through the (B, 1, ...) mask."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * mask


class PublishedMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PublishedAttention(nn.Module):
    """Explicit softmax attention, keeping the last pre-softmax score map on the host."""

    def __init__(self, dim, num_heads, qkv_bias, qk_scale, attn_drop, proj_drop):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.last_attn_map = None

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        self.last_attn_map = scores.detach().cpu()
        attn = self.attn_drop(scores.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, N, D)))


class PublishedBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PublishedAttention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = PublishedDropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = PublishedMlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PublishedIIVFormer(nn.Module):
    """(B, V, J, 2) -> (B, 1, J, 3), computed the published way; state dict as IIVFormer's."""

    def __init__(self, config: ModelConfig = None):
        super().__init__()
        c = config or ModelConfig()
        C, J, V = c.embed_dim_ratio, c.num_joints, c.num_view
        width = J * C
        self.Intra_patch_to_embedding = nn.Linear(c.in_chans, C)
        self.Intra_pos_embed = nn.Parameter(torch.zeros(1, J, C))
        self.Inter_pos_embed = nn.Parameter(torch.zeros(1, V, width))
        self.pos_drop = nn.Dropout(c.drop_rate)
        rates = [r.item() for r in torch.linspace(0, c.drop_path_rate, c.depth)]
        args = dict(num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, qk_scale=c.qk_scale,
                    drop=c.drop_rate, attn_drop=c.attn_drop_rate)
        self.Intra_blocks = nn.ModuleList([PublishedBlock(C, drop_path=r, **args) for r in rates])
        self.Inter_blocks = nn.ModuleList([PublishedBlock(width, drop_path=r, **args) for r in rates])
        self.Intra_norm = nn.LayerNorm(C, eps=1e-6)
        self.Inter_norm = nn.LayerNorm(width, eps=1e-6)
        self.weighted_mean = nn.Conv1d(V, 1, kernel_size=1)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, J * 3))

    def intra_features(self, x):
        """(B, 2, V, J) channel-first -> (B, V, J*C)."""
        B, chans, V, J = x.shape
        x = x.permute(0, 2, 3, 1).reshape(B * V, J, chans)  # 'b c f p -> (b f) p c'
        x = self.Intra_patch_to_embedding(x)
        x += self.Intra_pos_embed
        x = self.pos_drop(x)
        for block in self.Intra_blocks:
            x = block(x)
        return self.Intra_norm(x).reshape(B, V, -1)  # '(b f) w c -> b f (w c)'

    def inter_features(self, x):
        """(B, V, J*C) -> (B, 1, J*C)."""
        x += self.Inter_pos_embed
        x = self.pos_drop(x)
        for block in self.Inter_blocks:
            x = block(x)
        return self.weighted_mean(self.Inter_norm(x)).view(x.shape[0], 1, -1)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)  # (B, 2, V, J), "following image data"
        B, J = x.shape[0], x.shape[3]
        x = self.head(self.inter_features(self.intra_features(x)))
        return x.view(B, 1, J, -1)
