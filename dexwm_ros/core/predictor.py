"""DexWM predictor: a block-causal CDiT regressing the next frame's patch latents.

Paper section 3.2 and appendix A.2 (Table 5). Layout:

* ``num_slots`` frame slots (8 context + 1 target in the paper) of ``num_patches`` tokens each.
  Slot ``s`` holds frame ``s``'s latent and is conditioned on action ``s`` (frame s -> s+1); its
  output is the prediction of frame ``s + 1`` (the absolute latent, no residual to the input).
* A learned positional table ``(slot, token, dim)`` is added after the input projection.
* Each block, per slot, takes 11 adaLN-Zero modulation chunks from ``SiLU -> Linear(132, 11 D)``
  of the slot's action: shift/scale/gate for self-attention, shift/scale/gate for the
  cross-attention queries, shift/scale for the slot's tokens when they serve as cross-attention
  keys/values of later slots ("context tokens modulated by their own action"), shift/scale/gate
  for the MLP (ratio 2, GELU-tanh).
* Self-attention runs within the slot's own frame; cross-attention goes from the slot to all
  tokens of strictly earlier slots (slot 0 has none and skips it). Nothing flows backwards, so
  the prediction for slot ``s`` only depends on frames ``0..s`` and actions ``0..s``.
* Cross-attention source: earlier frames are attended through their per-block hidden states
  (block ``b`` reads the earlier slots' tokens as they are after blocks ``< b`` and block
  ``b``'s self-attention), as in a block-causal transformer. The
  authors' implementation (CDiT as in NWM) attends in every block to the context frames' input
  embeddings instead (input projection + positions, adaLN-modulated per block). We keep hidden
  states so that each earlier frame reaches later slots already related to its own history and
  actions, at every depth; the attention cost per block is the same either way. The two have
  not been compared on training runs here.
* Final layer: LayerNorm, adaLN shift/scale, Linear; adaLN and the final Linear start at zero.
  Input/output projections map the encoder width to the predictor width when they differ.
* Action conditioning options (``action_conditioning``; all off by default, which is the
  paper's adaLN on the flat action): structured action tokens with local refinement (each
  block's latent tokens also cross-attend to their slot's action tokens, after the
  self-attention) and/or global modulation (a learned query's summary of the action tokens is
  the adaLN input instead of the action vector). ``action_representation`` names what the
  actions are (``actions.ACTION_REPRESENTATIONS``) and fixes ``action_dim``.

Because the model is block-causal, keys/values of earlier slots never change when later slots
are appended. ``score_candidates`` exploits that: the keys/values of the shared context are
computed once (batch 1) and reused by all candidates; candidates then only process their own
slots, one slot per step, with a per-candidate key/value cache.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from dexwm_ros.core.action_conditioning import ActionConditioner, LocalRefinement
from dexwm_ros.core.actions import ACTION_REPRESENTATIONS

NUM_MODULATION_CHUNKS = 11
_TWO_SQRT_2_OVER_PI = 2 * math.sqrt(2 / math.pi)

#: Preset sizes: (depth, dim, heads). S/B/L/XL from paper Table 5 (31M/104M/344M/456M
#: parameters with a 1024-wide encoder and 448 patches); "tiny" is for tests and demos; "cpu"
#: is the default world model's (fewer heads: small attention is overhead-bound on a CPU).
PREDICTOR_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"depth": 2, "dim": 64, "heads": 4},
    "cpu": {"depth": 2, "dim": 64, "heads": 2},
    "S": {"depth": 12, "dim": 384, "heads": 6},
    "B": {"depth": 12, "dim": 768, "heads": 12},
    "L": {"depth": 24, "dim": 1024, "heads": 16},
    "XL": {"depth": 32, "dim": 1024, "heads": 16},
}


@dataclass
class PredictorConfig:
    """Size and options of a ``CDiTPredictor``; ``preset`` is informational (``"custom"`` if
    hand-made). ``action_dim`` defaults to the width of ``action_representation``.

    DexAC switches: ``action_tokenizer`` (structured per-dimension action tokens over the last
    ``action_window`` actions, width ``action_token_dim``), ``local_refinement`` and
    ``global_modulation`` (both need the tokenizer, and the tokenizer needs one of them);
    ``action_token_heads`` heads for the global query."""

    preset: str
    latent_dim: int
    num_patches: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 2.0
    num_slots: int = 9
    action_representation: str = "keypoint_delta"
    action_dim: int | None = None
    action_tokenizer: bool = False
    local_refinement: bool = False
    global_modulation: bool = False
    action_token_dim: int = 64
    action_window: int = 1
    action_token_heads: int = 4

    def __post_init__(self) -> None:
        if self.action_representation not in ACTION_REPRESENTATIONS:
            raise ValueError(f"PredictorConfig.action_representation must be one of "
                             f"{sorted(ACTION_REPRESENTATIONS)}, got "
                             f"{self.action_representation!r}")
        width = ACTION_REPRESENTATIONS[self.action_representation]
        if self.action_dim is None:
            self.action_dim = width
        if self.action_dim != width:
            raise ValueError(f"PredictorConfig.action_dim {self.action_dim!r} does not match "
                             f"action_representation {self.action_representation!r} ({width})")
        for name in ("latent_dim", "num_patches", "dim", "depth", "heads", "num_slots",
                     "action_token_dim", "action_window", "action_token_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PredictorConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"PredictorConfig: dim {self.dim} not divisible by heads {self.heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"PredictorConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        for name in ("action_tokenizer", "local_refinement", "global_modulation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PredictorConfig.{name} must be a bool, "
                                 f"got {getattr(self, name)!r}")
        uses_tokens = self.local_refinement or self.global_modulation
        if uses_tokens and not self.action_tokenizer:
            raise ValueError("PredictorConfig: local_refinement and global_modulation need "
                             "action_tokenizer: true")
        if self.action_tokenizer and not uses_tokens:
            raise ValueError("PredictorConfig: action_tokenizer needs local_refinement or "
                             "global_modulation (nothing else reads the action tokens)")
        if self.action_token_dim % self.action_token_heads:
            raise ValueError(f"PredictorConfig: action_token_dim {self.action_token_dim} not "
                             f"divisible by action_token_heads {self.action_token_heads}")

    @classmethod
    def from_preset(cls, name: str, latent_dim: int = 1024, num_patches: int = 448,
                    **overrides) -> PredictorConfig:
        if name not in PREDICTOR_PRESETS:
            raise ValueError(f"unknown predictor preset {name!r}; choose from "
                             f"{sorted(PREDICTOR_PRESETS)}")
        return cls(preset=name, latent_dim=latent_dim, num_patches=num_patches,
                   **{**PREDICTOR_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PredictorConfig:
        if not isinstance(data, dict):
            raise ValueError(f"PredictorConfig.from_dict: expected a dict, "
                             f"got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"PredictorConfig: unknown field(s) {sorted(unknown)}")
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"PredictorConfig: missing field(s) {missing}")
        return cls(**data)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)


def _cpu_inference(x: torch.Tensor) -> bool:
    """True for fp32 planning on CPU: no autograd, so in-place kernels are allowed (bf16
    keeps the fused kernels, which accumulate in fp32)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(Dh)) v`` over ``(B, H, L, Dh)`` tensors. In fp32 CPU inference,
    batched matmuls and an in-place softmax: faster than the fused kernel on the predictor's
    short sequences (``benchmarks/planning_kernels.py``); elsewhere the fused kernel."""
    if not _cpu_inference(q):
        return F.scaled_dot_product_attention(q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    return torch.matmul(torch.softmax(scores, dim=-1, out=scores), v)


class TanhGELU(nn.Module):
    """GELU, tanh approximation. In fp32 CPU inference computed in place as ``x sigmoid(2z)``,
    which equals ``x (1 + tanh z) / 2`` and is faster than the tanh kernel there
    (``benchmarks/planning_kernels.py``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_inference(x):
            return F.gelu(x, approximate="tanh")
        two_z = (x * x).mul_(0.044715 * _TWO_SQRT_2_OVER_PI).add_(_TWO_SQRT_2_OVER_PI).mul_(x)
        return torch.sigmoid_(two_z).mul_(x)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, D) -> (..., H, L, D/H)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., H, L, Dh) -> (..., L, H*Dh)."""
    return x.transpose(-3, -2).flatten(-2)


class CDiTBlock(nn.Module):
    """One predictor block. Works on tensors shaped ``(..., P, D)`` with modulation
    ``(..., 1, D)`` so the same code serves whole sequences and single slots."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, adaln_dim: int,
                 local_refinement: LocalRefinement | None = None):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.norm_sa = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.sa_proj = nn.Linear(dim, dim)
        self.norm_ca = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ca_q = nn.Linear(dim, dim)
        self.ca_kv = nn.Linear(dim, 2 * dim)
        self.ca_proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), TanhGELU(),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(adaln_dim, NUM_MODULATION_CHUNKS * dim))
        self.local = local_refinement

    def modulation(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(..., adaln_dim) -> 11 tensors (..., 1, D)."""
        return self.ada(conditioning).unsqueeze(-2).chunk(NUM_MODULATION_CHUNKS, dim=-1)

    def refine(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """Local refinement by the slot's action tokens ``(..., A, Dt)`` (identity without)."""
        return x if self.local is None else x + self.local(x, tokens)

    def self_attention(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, scale, gate = mod[0:3]
        qkv = self.qkv(_modulate(self.norm_sa(x), shift, scale))
        # the attention kernels want 4-D (batch, heads, tokens, head_dim)
        q, k, v = _heads(qkv.flatten(0, -3), self.heads).chunk(3, dim=-1)
        attn = _merge_heads(attention(q, k, v)).view(x.shape)
        return torch.addcmul(x, gate, self.sa_proj(attn))

    def query_and_keys(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...], keys: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Cross-attention query (as this slot) and, with ``keys``, key/value (as context for
        later slots), each ``(..., H, P, Dh)``. Query and keys normalise ``x`` alike (each
        with its own modulation)."""
        normed = self.norm_ca(x)
        q = _heads(self.ca_q(_modulate(normed, mod[3], mod[4])), self.heads)
        if not keys:
            return q, None, None
        k, v = _heads(self.ca_kv(_modulate(normed, mod[6], mod[7])), self.heads).chunk(2, dim=-1)
        return q, k, v

    def cross_update(self, x: torch.Tensor, attn: torch.Tensor,
                     mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.addcmul(x, mod[5], self.ca_proj(_merge_heads(attn)))

    def mlp_update(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, scale, gate = mod[8:11]
        return torch.addcmul(x, gate, self.mlp(_modulate(self.norm_mlp(x), shift, scale)))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, adaln_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(adaln_dim, 2 * dim))
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(conditioning).unsqueeze(-2).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(x), shift, scale))


KVList = list[tuple[torch.Tensor, torch.Tensor]]


class CDiTPredictor(nn.Module):
    """Action-conditioned latent dynamics model (see module docstring)."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        c = config
        self.input_proj = (nn.Linear(c.latent_dim, c.dim) if c.latent_dim != c.dim
                           else nn.Identity())
        self.output_proj = (nn.Linear(c.dim, c.latent_dim) if c.latent_dim != c.dim
                            else nn.Identity())
        self.pos_embed = nn.Parameter(torch.zeros(c.num_slots, c.num_patches, c.dim))
        self.conditioner = ActionConditioner(
            c.action_dim, c.action_tokenizer, c.local_refinement, c.global_modulation,
            c.action_token_dim, c.action_window, c.action_token_heads)
        adaln_dim = self.conditioner.adaln_dim
        self.blocks = nn.ModuleList(
            CDiTBlock(c.dim, c.heads, c.mlp_ratio, adaln_dim,
                      LocalRefinement(c.dim, c.action_token_dim, c.heads)
                      if c.local_refinement else None)
            for _ in range(c.depth))
        self.final = FinalLayer(c.dim, adaln_dim)
        self.register_buffer("action_mean", torch.zeros(c.action_dim))
        self.register_buffer("action_std", torch.ones(c.action_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: Xavier linears, N(0, 0.02) positions, adaLN and the final
        Linear at zero (adaLN-Zero, as in DiT); local-refinement output projections at
        zero too, so every DexAC branch starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.conditioner.reset_parameters()
        for layer in self.zero_initialized_layers():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def zero_initialized_layers(self) -> list[nn.Linear]:
        """The adaLN modulation Linears, the local-refinement output projections and the final
        Linear (zero at initialisation)."""
        local = [b.local.proj for b in self.blocks if b.local is not None]
        return [b.ada[1] for b in self.blocks] + local + [self.final.ada[1], self.final.linear]

    # ------------------------------------------------------------------ actions
    def set_action_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-dimension action statistics; raw actions are mapped to
        ``(a - mean) / std`` inside every public method."""
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        shape = (self.config.action_dim,)
        if mean.shape != shape or std.shape != shape:
            raise ValueError(f"set_action_normalization: expected mean and std of shape {shape}, "
                             f"got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("set_action_normalization: mean must be finite and std finite > 0")
        self.action_mean.copy_(mean)
        self.action_std.copy_(std)

    def _normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw -> normalised actions, computed in float32, returned in the parameters' dtype."""
        normalized = (actions.float() - self.action_mean.float()) / self.action_std.float()
        return normalized.to(self.pos_embed.dtype)

    # ------------------------------------------------------------------ checks
    def _check(self, name: str, tensor: torch.Tensor, shape: tuple) -> None:
        """``shape`` entries: int (exact) or None (any)."""
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        ok = tensor.dim() == len(shape) and all(
            want is None or want == got for want, got in zip(shape, tensor.shape, strict=True))
        if not ok:
            pretty = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name}: expected shape {pretty}, got {tuple(tensor.shape)}")

    @staticmethod
    def _autocast(dtype: torch.dtype | None, device: torch.device):
        if dtype is None or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced prediction.

        ``latents`` (B, S, P, Dl) are frames 0..S-1, ``actions`` (B, S, action_dim) raw actions
        where ``actions[:, s]`` takes frame s to s+1. Returns (B, S, P, Dl); ``out[:, s]``
        predicts frame s+1 from frames 0..s and actions 0..s. S <= num_slots.
        """
        c = self.config
        self._check("latents", latents, (None, None, c.num_patches, c.latent_dim))
        batch, slots = latents.shape[:2]
        self._check("actions", actions, (batch, slots, c.action_dim))
        if not 1 <= slots <= c.num_slots:
            raise ValueError(f"sequence length {slots} must be in [1, {c.num_slots}]")
        in_dtype, dtype = latents.dtype, self.pos_embed.dtype
        latents = latents.to(dtype)
        conditioning, tokens = self.conditioner(self._normalize(actions))
        x = self._run_slots(latents, conditioning, tokens)
        return self.output_proj(self.final(x, conditioning)).to(in_dtype)

    def _run_slots(self, latents: torch.Tensor, conditioning: torch.Tensor,
                   tokens: torch.Tensor | None, cache: KVList | None = None) -> torch.Tensor:
        """Blocks over whole sequences (B, S, P, Dl) with the conditioner's adaLN input
        (B, S, C) and action tokens (B, S, A, Dt) or None; with ``cache`` also append every
        block's keys/values (B, H, S*P, Dh) to it."""
        slots = latents.shape[1]
        x = self.input_proj(latents) + self.pos_embed[:slots]
        for block in self.blocks:
            mod = block.modulation(conditioning)  # each (B, S, 1, D)
            x = block.refine(block.self_attention(x, mod), tokens)
            q, k, v = block.query_and_keys(x, mod)  # (B, S, H, P, Dh)
            k, v = k.transpose(1, 2).flatten(2, 3), v.transpose(1, 2).flatten(2, 3)
            if cache is not None:
                cache.append((k, v))
            if slots > 1:
                # slot s attends to all tokens of slots < s (strictly earlier frames)
                per_slot = self.config.num_patches
                attn = [attention(q[:, s], k[:, :, :s * per_slot], v[:, :, :s * per_slot])
                        for s in range(1, slots)]
                later = block.cross_update(x[:, 1:], torch.stack(attn, dim=1),
                                           tuple(m[:, 1:] for m in mod))
                x = torch.cat([x[:, :1], later], dim=1)
            x = block.mlp_update(x, mod)
        return x

    # ------------------------------------------------------------------ rollout
    def rollout(self, context_latents: torch.Tensor, context_actions: torch.Tensor,
                future_actions: torch.Tensor, autocast: torch.dtype | None = None
                ) -> torch.Tensor:
        """Plain autoregressive rollout: at each step run ``forward`` on the most recent
        ``num_slots`` frames (context + predictions so far) and keep the last slot's output.

        ``context_latents`` (B, C, P, Dl), ``context_actions`` (B, C-1, A) between context
        frames, ``future_actions`` (B, T, A) where ``future_actions[:, 0]`` takes the last
        context frame to the first predicted one. Returns (B, T, P, Dl) in the latents' dtype.
        ``autocast`` (e.g. ``torch.bfloat16``) runs the network under autocast. Inputs are cast
        to the parameters' dtype, so a predictor converted with ``.to(torch.bfloat16)`` (the
        fastest CPU inference path) takes and returns float32 latents unchanged.
        """
        self._check_rollout_inputs(context_latents, context_actions, future_actions)
        frames = list(context_latents.unbind(1))
        actions = list(context_actions.unbind(1))
        outputs = []
        window = self.config.num_slots
        with self._autocast(autocast, context_latents.device):
            for step in range(future_actions.shape[1]):
                actions.append(future_actions[:, step])
                seq_latents = torch.stack(frames[-window:], dim=1)
                seq_actions = torch.stack(actions[-window:], dim=1)
                pred = self.forward(seq_latents, seq_actions)[:, -1].to(context_latents.dtype)
                frames.append(pred)
                outputs.append(pred)
        return torch.stack(outputs, dim=1)

    def _check_rollout_inputs(self, context_latents, context_actions, future_actions):
        c = self.config
        self._check("context_latents", context_latents,
                    (None, None, c.num_patches, c.latent_dim))
        batch, num_ctx = context_latents.shape[:2]
        if num_ctx < 1:
            raise ValueError("context_latents must hold at least one frame")
        self._check("context_actions", context_actions, (batch, num_ctx - 1, c.action_dim))
        self._check("future_actions", future_actions, (batch, None, c.action_dim))
        if future_actions.shape[1] < 1:
            raise ValueError("future_actions must hold at least one step")
        return batch, num_ctx

    # ------------------------------------------------------------------ shared-context scoring
    def score_candidates(self, context_latents: torch.Tensor, context_actions: torch.Tensor,
                         candidate_actions: torch.Tensor, chunk_size: int | None = None,
                         autocast: torch.dtype | None = None) -> torch.Tensor:
        """Roll out N candidate action sequences from one shared context.

        ``context_latents`` (C, P, Dl), ``context_actions`` (C-1, A), ``candidate_actions``
        (N, T, A). Returns (N, T, P, Dl), equal to ``rollout`` on the context repeated N times.

        The context slots 0..C-2 (whose actions are shared) are run once with batch 1 and their
        per-block keys/values reused by every candidate; each candidate then runs only slot C-1
        (the last context frame, conditioned on its own first action) and its predicted slots,
        with a key/value cache. Candidates are processed ``chunk_size`` at a time (default: a
        size that keeps the cache around 1 GiB). If C + T - 1 exceeds ``num_slots`` the window
        would slide and nothing can be cached: falls back to chunked ``rollout``.
        """
        c = self.config
        self._check("context_latents", context_latents, (None, c.num_patches, c.latent_dim))
        self._check("candidate_actions", candidate_actions, (None, None, c.action_dim))
        n, horizon = candidate_actions.shape[:2]
        num_ctx = context_latents.shape[0]
        self._check_rollout_inputs(context_latents[None], context_actions[None],
                                   candidate_actions[:1])
        if chunk_size is None:
            itemsize = (autocast or next(self.parameters()).dtype).itemsize
            chunk_size = self.default_chunk_size(num_ctx, horizon, itemsize)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        out_dtype = context_latents.dtype
        if num_ctx + horizon - 1 > c.num_slots:
            return torch.cat([
                self.rollout(context_latents.expand(len(chunk), -1, -1, -1),
                             context_actions.expand(len(chunk), -1, -1), chunk, autocast)
                for chunk in candidate_actions.split(chunk_size)])
        context_latents = context_latents.to(self.pos_embed.dtype)
        with self._autocast(autocast, context_latents.device):
            shared = self._encode_shared_context(context_latents[:-1], context_actions)
            outputs = [self._rollout_from_cache(shared, context_latents[-1], context_actions,
                                                chunk)
                       for chunk in candidate_actions.split(chunk_size)]
        return torch.cat(outputs).to(out_dtype)

    def default_chunk_size(self, num_context: int, horizon: int, itemsize: int = 4,
                           budget_bytes: int = 1 << 30) -> int:
        """Candidates per chunk so that ``score_candidates``' key/value buffers
        (2 x depth x (C-1 + T-1) slots x P x D per candidate) fit ``budget_bytes``."""
        c = self.config
        slots = max(num_context + horizon - 2, 1)
        per_candidate = 2 * c.depth * slots * c.num_patches * c.dim * itemsize
        return max(1, budget_bytes // per_candidate)

    def _encode_shared_context(self, latents: torch.Tensor, actions: torch.Tensor) -> KVList:
        """Run context slots 0..C-2 once (batch 1); return their per-block keys/values."""
        cache: KVList = []
        if latents.shape[0] > 0:
            conditioning, tokens = self.conditioner(self._normalize(actions)[None])
            self._run_slots(latents[None], conditioning, tokens, cache)
        return cache

    def _rollout_from_cache(self, shared: KVList, last_context: torch.Tensor,
                            context_actions: torch.Tensor, actions: torch.Tensor
                            ) -> torch.Tensor:
        """Candidates ``actions`` (n, T, A) continue from the cached shared context.

        Per block, one key/value buffer (n, H, L_shared + (T-1) P, Dh) is filled with the
        shared context once and then with each candidate's own slots as they are computed.
        The conditioning is computed over context + candidate actions (the tokenizer's window
        reaches back into the context), then the candidate slots' part is used."""
        n, horizon = actions.shape[:2]
        per_slot = self.config.num_patches
        shared_len = shared[0][0].shape[2] if shared else 0
        first_slot = shared_len // per_slot
        total_len = shared_len + (horizon - 1) * per_slot
        buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)
        sequence = torch.cat([context_actions.expand(n, -1, -1), actions], dim=1)
        conditioning, tokens = self.conditioner(self._normalize(sequence))
        conditioning = conditioning[:, first_slot:]
        tokens = None if tokens is None else tokens[:, first_slot:]
        frame = last_context.expand(n, -1, -1)
        outputs = []
        for step in range(horizon):
            cond = conditioning[:, step]
            slot_tokens = None if tokens is None else tokens[:, step]
            x = self.input_proj(frame) + self.pos_embed[first_slot + step]
            known = shared_len + step * per_slot  # keys/values visible to this slot
            last = step == horizon - 1  # the last step's keys/values are never read
            for i, block in enumerate(self.blocks):
                mod = block.modulation(cond)  # each (n, 1, D)
                x = block.refine(block.self_attention(x, mod), slot_tokens)
                q, k, v = block.query_and_keys(x, mod, keys=not last)
                if buffers[i] is None and total_len > 0:
                    kbuf = q.new_empty(n, q.shape[1], total_len, q.shape[3])
                    vbuf = torch.empty_like(kbuf)
                    if shared_len:
                        kbuf[:, :, :shared_len] = shared[i][0]
                        vbuf[:, :, :shared_len] = shared[i][1]
                    buffers[i] = (kbuf, vbuf)
                if known:
                    kbuf, vbuf = buffers[i]
                    attn = attention(q, kbuf[:, :, :known], vbuf[:, :, :known])
                    x = block.cross_update(x, attn, mod)
                if not last:
                    kbuf, vbuf = buffers[i]
                    kbuf[:, :, known:known + per_slot] = k
                    vbuf[:, :, known:known + per_slot] = v
                x = block.mlp_update(x, mod)
            frame = self.output_proj(self.final(x, cond))
            outputs.append(frame)
        return torch.stack(outputs, dim=1)
