"""Structured action conditioning (DexAC; "Not All Actions Are Equal", sections 4.3-4.4).

The default DexWM predictor feeds each slot's whole (normalised) action vector to adaLN. DexAC
keeps the action dimensions apart instead:

* ``StructuredActionTokenizer`` (SAT, section 4.3, eq. 5-6): every action dimension becomes its
  own token. Each value is projected by one shared ``Linear(1, token_dim)`` (the paper's 512
  SAT parameters at width 256, appendix C Table 6), the ``window`` most recent actions of that
  dimension are fused by a learnable linear map over time followed by GELU (eq. 6), and a
  learned per-dimension embedding is added so attention can tell the dimensions apart (the
  paper leaves this implicit). Slot ``s`` sees actions ``s - window + 1 .. s`` only (the mean
  action, 0 after normalisation, before the sequence starts), which keeps the predictor
  block-causal.
* ``LocalRefinement`` (section 4.4, eq. 7): in every block the slot's latent tokens
  cross-attend to the slot's own action tokens (residual; the output projection starts at
  zero like the adaLN-Zero layers).
* ``GlobalModulation`` (section 4.4, eq. 8-10): a learned query attends over the slot's action
  tokens; the resulting global action context replaces the raw action vector as the input of
  every adaLN modulation (eq. 9-11).

Local refinement and global modulation both consume SAT tokens; SAT without either has no
consumer and is rejected by ``PredictorConfig``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StructuredActionTokenizer(nn.Module):
    """Normalised actions ``(..., S, A)`` -> per-dimension tokens ``(..., S, A, token_dim)``."""

    def __init__(self, action_dim: int, token_dim: int, window: int):
        super().__init__()
        self.window = window
        self.value_proj = nn.Linear(1, token_dim)
        self.temporal_fusion = nn.Linear(window, 1)
        self.dim_embed = nn.Parameter(torch.zeros(action_dim, token_dim))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.dim_embed, std=0.02)
        nn.init.constant_(self.temporal_fusion.weight, 1.0 / self.window)
        nn.init.zeros_(self.temporal_fusion.bias)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        padded = F.pad(actions, (0, 0, self.window - 1, 0))  # (..., S + W - 1, A)
        windows = padded.unfold(-2, self.window, 1)  # (..., S, A, W): oldest .. current
        tokens = self.value_proj(windows.unsqueeze(-1))  # (..., S, A, W, Dt)
        fused = self.temporal_fusion(tokens.transpose(-1, -2)).squeeze(-1)  # (..., S, A, Dt)
        return F.gelu(fused) + self.dim_embed


class GlobalModulation(nn.Module):
    """Action tokens ``(..., A, Dt)`` -> global action context ``(..., Dt)`` (eq. 8)."""

    def __init__(self, token_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(token_dim))
        self.norm = nn.LayerNorm(token_dim)
        self.kv = nn.Linear(token_dim, 2 * token_dim)
        self.proj = nn.Linear(token_dim, token_dim)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lead = tokens.shape[:-2]
        flat = tokens.reshape(-1, *tokens.shape[-2:])  # (B, A, Dt)
        k, v = self.kv(self.norm(flat)).unflatten(-1, (self.heads, -1)).transpose(1, 2).chunk(
            2, dim=-1)  # each (B, H, A, Dt/H)
        q = self.query.view(1, self.heads, 1, -1).expand(flat.shape[0], -1, -1, -1)
        context = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, Dt/H)
        return self.proj(context.flatten(1)).reshape(*lead, -1)


class LocalRefinement(nn.Module):
    """Latent tokens ``(..., P, D)`` cross-attend to their slot's action tokens
    ``(..., A, Dt)`` (eq. 7); the caller adds the result to the latent tokens."""

    def __init__(self, dim: int, token_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(token_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q = self.q(self.norm(x)).flatten(0, -3)  # (B, P, D)
        kv = self.kv(tokens).flatten(0, -3)  # (B, A, 2D)
        q = q.unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = kv.unflatten(-1, (self.heads, -1)).transpose(1, 2).chunk(2, dim=-1)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
        return self.proj(attn).view(shape)


class ActionConditioner(nn.Module):
    """Per-slot conditioning of a normalised action sequence ``(..., S, A)``: the adaLN input
    ``(..., S, C)`` (the actions themselves, or the global context with ``global_modulation``)
    and the action tokens ``(..., S, A, Dt)`` for local refinement (``None`` without it)."""

    def __init__(self, action_dim: int, tokenizer: bool, local_refinement: bool,
                 global_modulation: bool, token_dim: int, window: int, heads: int):
        super().__init__()
        self.local_refinement = local_refinement
        self.tokenizer = (StructuredActionTokenizer(action_dim, token_dim, window)
                          if tokenizer else None)
        self.global_modulation = GlobalModulation(token_dim, heads) if global_modulation else None
        self.adaln_dim = token_dim if global_modulation else action_dim

    def reset_parameters(self) -> None:
        for module in (self.tokenizer, self.global_modulation):
            if module is not None:
                module.reset_parameters()

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.tokenizer is None:
            return actions, None
        tokens = self.tokenizer(actions)
        adaln = self.global_modulation(tokens) if self.global_modulation is not None else actions
        return adaln, tokens if self.local_refinement else None
