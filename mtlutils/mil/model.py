"""Paper B's bag model: tile projection -> Transformer encoder -> decoder of learnable task tokens -> heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtlutils.models import TaskSpec, parse_tasks


@dataclass(frozen=True)
class MILConfig:
    """Sizes of the bag Transformer. The defaults are small, for CPU; :data:`PAPER_B` has the paper's
    (d_model 384, 2 encoder + 2 decoder layers, 6 heads, ffn 768, dropout 0.1)."""

    d_model: int = 64
    heads: int = 4
    encoder_layers: int = 1
    decoder_layers: int = 1
    ffn: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of heads={self.heads}")


PAPER_B = MILConfig(d_model=384, heads=6, encoder_layers=2, decoder_layers=2, ffn=768, dropout=0.1)


class TokenDecoderLayer(nn.Module):
    """Post-norm decoder layer (self-attention among the task tokens, cross-attention to the tiles,
    feed-forward) that can return the cross-attention weights (averaged over heads)."""

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(cfg.d_model, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn, cfg.d_model),
        )
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, q: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.norms[0](q + self.drop(self.self_attn(q, q, q, need_weights=False)[0]))
        out, weights = self.cross_attn(q, memory, memory, key_padding_mask=pad, need_weights=need_weights)
        q = self.norms[1](q + self.drop(out))
        return self.norms[2](q + self.drop(self.ff(q))), weights


class BagTransformer(nn.Module):
    """Linear(d_in -> d_model) + ReLU -> Transformer encoder over the tiles -> decoder whose queries are
    one learnable token per task ([cls] for the binary main task, [rgr] for a regression) -> one linear
    head per token. Inputs are standardised with the training tiles' mean and sd
    (:meth:`set_normalisation`; buffers saved with the model). Bags of different lengths share a batch
    through a key-padding mask (True = padding): in eval mode a bag's outputs are the same padded or
    alone. ``forward`` returns ``{task: (B,) output}``; ``embed`` also the tokens' embeddings (the head
    inputs) and the [cls] attention over tiles."""

    def __init__(
        self,
        d_in: int,
        tasks: Mapping[str, str | TaskSpec] | Sequence[TaskSpec],
        cfg: MILConfig | None = None,
    ):
        super().__init__()
        self.cfg = cfg or MILConfig()
        self.tasks = parse_tasks(tasks)
        bad = [n for n, s in self.tasks.items() if s.kind not in {"binary", "regression"}]
        if bad:
            raise ValueError(f"tasks {bad}: the bag model has binary and regression tasks only")
        # the binary task's token is [cls] and comes first; regression tokens ([rgr]) follow by name
        self.order = sorted(self.tasks, key=lambda n: (self.tasks[n].kind != "binary", n))
        d = self.cfg.d_model
        self.project = nn.Sequential(nn.Linear(d_in, d), nn.ReLU())
        layer = nn.TransformerEncoderLayer(
            d, self.cfg.heads, self.cfg.ffn, self.cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, self.cfg.encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.ModuleList(TokenDecoderLayer(self.cfg) for _ in range(self.cfg.decoder_layers))
        self.tokens = nn.Parameter(torch.randn(len(self.order), d) * 0.02)
        self.heads = nn.ModuleDict({name: nn.Linear(d, 1) for name in self.order})
        self.d_in = int(d_in)
        self.register_buffer("feat_mean", torch.zeros(self.d_in))
        self.register_buffer("feat_std", torch.ones(self.d_in))

    def set_normalisation(self, tiles: np.ndarray) -> None:
        """Standardise inputs with the mean and sd of ``tiles`` ((n, d_in), e.g. every training tile)."""
        x = torch.as_tensor(np.asarray(tiles), dtype=torch.float32)
        self.feat_mean.copy_(x.mean(0))
        self.feat_std.copy_(x.std(0).clamp_min(1e-6))

    def shared_parameters(self) -> list[nn.Parameter]:
        """What the gradient methods act on: projection, encoder and decoder (tokens and heads are the
        tasks' own)."""
        return [
            p for m in (self.project, self.encoder, self.decoder) for p in m.parameters() if p.requires_grad
        ]

    def embed(
        self, x: torch.Tensor, pad: torch.Tensor | None = None, attention: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
        """(outputs, token embeddings {task: (B, d_model)}, [cls] attention (B, N) of the last decoder
        layer or None). ``x``: (B, N, d_in); ``pad``: (B, N) bool, True at padded positions."""
        if x.ndim != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"bags must be (batch, tiles, {self.d_in}), got {tuple(x.shape)}")
        if pad is not None and bool(pad.all(dim=1).any()):
            raise ValueError("a bag in this batch has zero tiles (all padding); drop it before training")
        memory = self.encoder(self.project((x - self.feat_mean) / self.feat_std), src_key_padding_mask=pad)
        q = self.tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        weights = None
        for i, layer in enumerate(self.decoder):
            q, w = layer(q, memory, pad, need_weights=attention and i == len(self.decoder) - 1)
            weights = w if w is not None else weights
        tokens = {name: q[:, k] for k, name in enumerate(self.order)}
        outputs = {name: self.heads[name](tokens[name]).squeeze(-1) for name in self.order}
        cls_attention = weights[:, 0] if weights is not None else None
        return outputs, tokens, cls_attention

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.embed(x, pad)[0]


def pad_bags(
    bags: Sequence[np.ndarray], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags of (n_i, d) features into (B, max n, d) zeros-padded and the (B, max n) padding mask."""
    if not bags:
        raise ValueError("pad_bags(): no bags")
    lengths = [len(b) for b in bags]
    if min(lengths) == 0:
        raise ValueError(f"bag {lengths.index(0)} of this batch has zero tiles; drop it before training")
    d = bags[0].shape[1]
    x = torch.zeros(len(bags), max(lengths), d)
    pad = torch.ones(len(bags), max(lengths), dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = torch.as_tensor(b, dtype=torch.float32)
        pad[i, : len(b)] = False
    return x.to(device), pad.to(device)
