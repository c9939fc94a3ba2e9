"""IIVFormer: a multi-view 2D-to-3D human pose lifter, in one file.

Input is the 2D pose of one frame seen from V cameras, shape (B, V, J, 2). The model
works in two stages:

1. Intra-view: each view's J joints are embedded to width C and mixed by a stack of
   Transformer blocks (attention over joints, within one view).
2. Inter-view: each view's J tokens are flattened, joint-major, into a single token of
   width J*C, and a second stack of blocks attends across the V views. A 1x1 Conv1d
   over the view axis takes a learned weighted mean of the views, and a LayerNorm +
   Linear head reads out the 3D pose, shape (B, 1, J, 3).

Any non-empty subset of the V views can be given with ``view_mask`` (bool, (B, V) or (V,),
True = present). An absent view's 2D input is replaced by zeros before any arithmetic (so
even NaN or inf there cannot reach the output), no view attends to it in the inter-view
stack, and the weighted mean uses the present views P only, each keeping its learned weight
w_v plus an equal share of the absent views' weight:

    out = sum_{v in P} w_v x_v + (S - S_P) * mean_{v in P} x_v + b,   S = sum_v w_v,  S_P = sum_{v in P} w_v.

This gives ``S * x + b`` when the present views agree on x and ``S * x_v + b`` for a single view
v (the all-view scale), divides by nothing, and changes smoothly with the weights.
Without a mask, or with every view present, the model computes exactly as before.

Parameter names and registration order match the published implementation, so its
checkpoints load with ``load_state_dict(strict=True)``.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from iivformer.config import ModelConfig



def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples (first axis) with probability `rate`, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        return drop_path(x, self.rate, self.training)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The residual ``x + self(y)``, with the same random draw as `drop_path`, as one kernel.

        ``addcmul(x, y, mask / keep)`` replaces the mul, div and add of ``x + drop_path(y)``: fwd + bwd
        of one inter-view residual at batch 1024 from 3.9 to 2.1 ms, twelve such residuals a step. It
        may differ from ``x + y * mask / keep`` in the last bit; without drop path it is ``x + y``."""
        if self.rate == 0.0 or not self.training:
            return x + y
        keep = 1.0 - self.rate
        scale = y.new_empty((y.shape[0],) + (1,) * (y.ndim - 1)).bernoulli_(keep).div_(keep)
        return torch.addcmul(x, y, scale)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


@contextmanager
def _outside_autocast(device_type: str):
    """Inside: autocast off and a function that turns a tensor into float32, where autocast is on for
    `device_type`; else nothing changes (float32 runs exactly as without it). Under bf16 only the
    inter-view stack computes in bfloat16: its tokens are J*C wide, where the matrix units pay.
    The 2D embedding and the intra-view stack run this way: bfloat16 keeps 8 significant bits, so a
    normalised 2D input would be rounded to 1/256 of its size, and the stack's C-wide tokens and
    C/heads-wide heads (32 and 4 in the published model) are too narrow for bfloat16 to be faster.
    The view mean and the head run this way too: bfloat16 would round their 500-1000 mm outputs to 4 mm steps."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield lambda t: t.float()
    else:
        yield lambda t: t


def _fp32(tensor):
    """Inside: a function that turns a CPU bfloat16 tensor into float32, with autocast off, or
    leaves a tensor alone (float32 runs exactly as without it). Under bf16 autocast on the CPU the
    softmax and SDPA kernels are slower in bfloat16 than in float32, while the matrix products are
    faster (AMX); so attention's scores, softmax and weighted sums run in float32 and the
    projections around them in bfloat16. Full-size model, batch 512, 1 thread, torch.profiler over
    2 steps: softmax fwd + bwd 504 ms in bfloat16, 151 ms once in float32; SDPA fwd + bwd 277
    against 131 ms; a bf16 step took 0.943 s before (fp32 1.36 s) and 0.767 s after (fp32 1.46 s)."""
    cpu_bfloat16 = tensor.dtype == torch.bfloat16 and tensor.device.type == "cpu"
    return _outside_autocast("cpu") if cpu_bfloat16 else nullcontext(lambda t: t)


class Attention(nn.Module):
    """Multi-head self-attention over the N tokens of (B, N, dim).

    Three ways to the same function (equal to float rounding, ~1e-6), chosen by device and head
    width from measurements (fwd + bwd, batch 1024):

    * CPU, heads of width <= NARROW_HEAD (intra-view, width 4 over 17 joints): head by head as
      explicit softmax attention (`_head_by_head`: 59 ms a block against 87 ms for SDPA, whose CPU
      kernel pays per head and sample, 32768 problems of 17 x 4; width 8: 126 vs 145 ms, width 16:
      274 vs 292 ms, width 32: even; 2 threads).
    * CUDA: all heads at once as explicit matrices (`_explicit`, the published computation). SDPA's
      fp32 memory-efficient kernels took 60 % of a training step's GPU time on these tiny problems
      (17 x 4 and 4 x 68; 17 of 28 ms): the full-size model's step took 29.4 ms with SDPA against
      19.6 ms for the published model's explicit attention without its host copies (H200,
      torch 2.11, benchmarks/profile_step.py).
    * Elsewhere (wider heads on the CPU, other devices): scaled_dot_product_attention (`_fused`;
      inter-view, width 68 over 4 views: 122 ms on 2 CPU threads either way); it takes the view
      mask and attention dropout.
    """

    NARROW_HEAD = 16
    NARROW_DEVICES = ("cpu",)  # where narrow heads go head by head
    EXPLICIT_DEVICES = ("cuda",)  # where every head goes as explicit matrices (benchmarks/profile_step.py)

    def __init__(self, dim, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qk_scale = qk_scale
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, return_attention: bool = False, key_mask=None):
        """(B, N, dim) -> (B, N, dim), plus the (B, heads, N, N) softmax map if asked (else None).

        `key_mask`: None, or bool (B, 1, 1, N), False for tokens no query may attend to."""
        narrow = x.shape[-1] // self.num_heads <= self.NARROW_HEAD and x.device.type in self.NARROW_DEVICES
        if narrow and key_mask is None and not (self.training and self.attn_drop):
            y, attn = self._head_by_head(x, return_attention)
        elif x.device.type in self.EXPLICIT_DEVICES:
            y, attn = self._explicit(x, return_attention, key_mask)
        else:
            y, attn = self._fused(x, return_attention, key_mask)
        return self.proj_drop(self.proj(y)), attn

    def _head_by_head(self, x, return_attention: bool):
        """Explicit attention one head at a time: (B, N, dim) -> (B, N, dim) before `proj`, maps or None.

        The qkv projection is computed transposed, (3 * dim, B * N) with rows in the weight's own
        (q|k|v, head, head_dim) order: each head's q, k and v is a (head_dim, B, N) slab that the
        batched matmuls read in place (no layout copy forward; backward stacks the 3 * heads slab
        gradients into one block). One head's (B, N, N) scores (4.7 MB at batch 1024) stay small enough
        to be reused from the allocator and the cache: all heads at once (38 MB, over glibc's 32 MiB
        mmap threshold) page-faulted a fresh mapping every time, ~20k faults a training step."""
        B, N, D = x.shape
        H = self.num_heads
        rows = x.reshape(B * N, D).t()
        qkv = self.qkv.weight @ rows if self.qkv.bias is None else torch.addmm(self.qkv.bias[:, None], self.qkv.weight, rows)
        heads, maps = [], []
        with _fp32(qkv) as cast:
            slabs = cast(qkv).view(3 * H, D // H, B, N).unbind(0)
            for h in range(H):
                q, k, v = slabs[h].permute(1, 2, 0), slabs[H + h].permute(1, 0, 2), slabs[2 * H + h].permute(1, 2, 0)
                attn = ((q * self.scale) @ k).softmax(dim=-1)  # (B, N, N)
                heads.append(attn @ v)  # (B, N, head_dim); matmul, not bmm: torch.compile (2.13) mis-broadcasts bmm with this v
                maps.append(attn)
            y = torch.stack(heads, dim=2).view(B, N, D)
        return y, (torch.stack(maps, dim=1) if return_attention else None)

    def _explicit(self, x, return_attention: bool, key_mask):
        """All heads at once as explicit matrices: (B, N, dim) -> (B, N, dim) before `proj`, maps or None."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        attn = scores.softmax(dim=-1)
        y = F.dropout(attn, self.attn_drop, self.training) @ v
        return y.transpose(1, 2).reshape(B, N, D), (attn if return_attention else None)

    def _fused(self, x, return_attention: bool, key_mask):
        """scaled_dot_product_attention: (B, N, dim) -> (B, N, dim) before `proj`, maps or None.

        q, k, v are strided views (B, heads, N, head_dim) of the (B, N, 3, heads, head_dim) qkv output;
        unbind's backward stacks their gradients straight into that layout (indexing qkv[0], qkv[1],
        qkv[2] of a permuted copy zero-filled three full-size buffers and summed them: the inter-view
        attention's fwd + bwd took ~140 ms a block at batch 1024 that way, 60-85 ms this way)."""
        B, N, D = x.shape
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).unbind(2))
        with _fp32(q) as cast:
            y = F.scaled_dot_product_attention(
                cast(q), cast(k), cast(v), attn_mask=key_mask, dropout_p=self.attn_drop if self.training else 0.0,
                scale=self.qk_scale)
        attn = None
        if return_attention:
            scores = (q @ k.transpose(-2, -1)) * self.scale
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            attn = scores.softmax(dim=-1)
        return y.transpose(1, 2).reshape(B, N, D), attn  # SDPA's output is (B, N, heads, head_dim) in memory: no copy


class Block(nn.Module):
    """Pre-norm Transformer block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x, return_attention: bool = False, key_mask=None):
        y, attn = self.attn(self.norm1(x), return_attention, key_mask)
        x = self.drop_path.add(x, y)
        x = self.drop_path.add(x, self.mlp(self.norm2(x)))
        return x, attn


class IIVFormer(nn.Module):
    """Lift (B, V, J, 2) multi-view 2D poses to a (B, 1, J, 3) 3D pose."""

    def __init__(self, config: ModelConfig = None, **overrides):
        """`config` (default: the published architecture) with any of its fields overridden by
        keyword, as the published code builds it: ``IIVFormer(num_view=4, embed_dim_ratio=32, ...)``."""
        super().__init__()
        self.config = replace(config or ModelConfig(), **overrides)
        c = self.config
        C, J, V = c.embed_dim_ratio, c.num_joints, c.num_view
        view_dim = J * C  # width of one view's token in the inter-view stack

        # Registration order fixes the state_dict order of published checkpoints.
        self.Intra_patch_to_embedding = nn.Linear(c.in_chans, C)
        self.Intra_pos_embed = nn.Parameter(torch.zeros(1, J, C))
        self.Inter_pos_embed = nn.Parameter(torch.zeros(1, V, view_dim))
        self.pos_drop = nn.Dropout(c.drop_rate)

        rates = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()  # CPU: also under a meta device
        block_args = dict(num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                          qk_scale=c.qk_scale, drop=c.drop_rate, attn_drop=c.attn_drop_rate)
        self.Intra_blocks = nn.ModuleList([Block(C, drop_path=r, **block_args) for r in rates])
        self.Inter_blocks = nn.ModuleList([Block(view_dim, drop_path=r, **block_args) for r in rates])
        self.Intra_norm = nn.LayerNorm(C, eps=1e-6)
        self.Inter_norm = nn.LayerNorm(view_dim, eps=1e-6)

        self.weighted_mean = nn.Conv1d(in_channels=V, out_channels=1, kernel_size=1)
        self.head = nn.Sequential(nn.LayerNorm(view_dim), nn.Linear(view_dim, J * 3))

    def _forward(self, x, return_attention: bool, view_mask=None):
        B, V, J, _ = x.shape
        present = present_views(view_mask, B, V, x.device)  # None: every view present
        intra_maps, inter_maps = [], []
        if present is not None:  # absent views' inputs never enter any arithmetic
            x = torch.where(present[:, :, None, None], x, 0.0)

        # Intra-view: attention over the J joints of each view, views folded into the batch; in
        # float32 also under autocast (see _outside_autocast).
        with _outside_autocast(x.device.type) as cast:
            x = self.Intra_patch_to_embedding(cast(x.reshape(B * V, J, -1)))  # (B*V, J, C)
            x = self.pos_drop(x + self.Intra_pos_embed)
            for block in self.Intra_blocks:
                x, attn = block(x, return_attention)
                if return_attention:
                    intra_maps.append(attn.reshape(B, V, *attn.shape[1:]))  # (B, V, heads, J, J)
            x = self.Intra_norm(x)

        # Inter-view: one joint-major token of width J*C per view, attention over the V views.
        x = x.reshape(B, V, -1)  # (B, V, J*C)
        x = self.pos_drop(x + self.Inter_pos_embed)
        key_mask = None if present is None else present[:, None, None, :]  # (B, 1, 1, V)
        for block in self.Inter_blocks:
            x, attn = block(x, return_attention, key_mask)
            if return_attention:
                inter_maps.append(attn)  # (B, heads, V, V)
        x = self.Inter_norm(x)

        with _outside_autocast(x.device.type) as cast:  # the view mean and the head: float32 (above)
            x = cast(x)
            if present is None:
                x = self._weighted_view_sum(x, self.weighted_mean.weight.reshape(1, V))  # (B, 1, J*C)
            else:
                x = self._mean_of_present_views(x, present)
            x = self.head(x).reshape(B, 1, J, 3)
        return x, {"intra": intra_maps, "inter": inter_maps}

    def _weighted_view_sum(self, tokens, weights):
        """(B, V, D) view tokens, (1 or B, V) weights -> (B, 1, D) = sum_v w_v x_v + b: the
        `weighted_mean` Conv1d (kernel 1) as one batched matmul. The Conv1d went through a oneDNN
        convolution: 50-100 ms fwd + bwd at batch 1024 against 2 ms here, the same numbers forward."""
        B, V, _ = tokens.shape
        bias = self.weighted_mean.bias.reshape(1, 1, 1)
        return torch.baddbmm(bias, weights.to(tokens.dtype).reshape(-1, 1, V).expand(B, 1, V), tokens)

    def _mean_of_present_views(self, tokens, present):
        """(B, V, D) view tokens, (B, V) bool -> (B, 1, D): the learned weighted mean over the
        present views only, rescaled as the module docstring says."""
        tokens = torch.where(present[:, :, None], tokens, 0.0)
        return self._weighted_view_sum(tokens, self.present_view_weights(present))

    def present_view_weights(self, present: torch.Tensor) -> torch.Tensor:
        """(B, V) bool -> (B, V) weights of the weighted mean: the learned w_v on present views plus
        an equal share of the absent views' weight (module docstring), 0 on absent views."""
        w = self.weighted_mean.weight.reshape(1, -1)  # (1, V)
        absent_weight = torch.where(present, 0.0, w).sum(dim=1, keepdim=True)  # S - S_P
        return torch.where(present, w + absent_weight / present.sum(dim=1, keepdim=True), 0.0)

    def forward(self, x: torch.Tensor, view_mask: torch.Tensor = None) -> torch.Tensor:
        """(B, V, J, 2) 2D poses -> (B, 1, J, 3) 3D pose, from the views where `view_mask`
        (bool, (B, V) or (V,); None: all) is True."""
        return self._forward(x, return_attention=False, view_mask=view_mask)[0]

    def forward_with_attention(self, x: torch.Tensor, view_mask: torch.Tensor = None):
        """Like forward, also returning the softmax attention maps of every block:
        {"intra": [(B, V, heads, J, J)] * depth, "inter": [(B, heads, V, V)] * depth}.
        With `view_mask`, inter-view maps put exactly 0 on absent views as keys; the intra-view
        maps of an absent view describe its zero placeholder input."""
        return self._forward(x, return_attention=True, view_mask=view_mask)


def present_views(view_mask, batch: int, num_view: int, device) -> torch.Tensor | None:
    """`view_mask` checked and broadcast to bool (batch, num_view); None when every view is present."""
    if view_mask is None:
        return None
    if not isinstance(view_mask, torch.Tensor) or view_mask.dtype != torch.bool:
        raise TypeError(f"view_mask must be a bool tensor, not {getattr(view_mask, 'dtype', type(view_mask))}")
    if view_mask.shape not in ((num_view,), (batch, num_view)):
        raise ValueError(f"view_mask must have shape ({num_view},) or ({batch}, {num_view}), "
                         f"not {tuple(view_mask.shape)}")
    present = view_mask.to(device).expand(batch, num_view)
    empty = ~present.any(dim=1)
    if empty.any():
        raise ValueError(f"view_mask leaves {int(empty.sum())} of {batch} samples without any view "
                         f"(the first is sample {int(empty.nonzero()[0, 0])})")
    return None if present.all() else present


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
