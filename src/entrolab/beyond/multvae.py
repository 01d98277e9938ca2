"""Mult-VAE^PR and Mult-DAE (Liang, Krishnan, Hoffman, Jebara, WWW 2018) with KL annealing.

Per user u with click vector x_u [I]: the decoder gives π(z) = softmax(f(z)) and the
multinomial log-likelihood Σ_i x_ui log π_i. Encoder input: x L2-normalised per user, dropout
(keep 0.5) while training, tanh hidden layers; the last encoder layer emits [μ, log σ²];
z = μ + ε σ while training, z = μ at test time.

Loss (scope: mean over the users of a batch) — :func:`multvae_loss`:
−mean_u Σ_i x_ui log softmax(f(z_u))_i + β · mean_u KL_u (+ λ Σ w² over all weights),
KL_u = ½ Σ_k (−log σ²_k + σ²_k + μ²_k − 1). β follows :func:`linear_anneal` (β_t = min(cap,
t / total_steps), t = gradient updates); λ = 0 for the VAE, 0.01 for Mult-DAE (no KL).
Architectures: VAE [I → 600 → 200 → 600 → I], DAE [I → 200 → I].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from entrolab.beyond.recsim import Split, ndcg_at_k, recall_at_k
from entrolab.errors import EntrolabError

__all__ = [
    "MultDAE",
    "MultVAE",
    "TrainResult",
    "evaluate",
    "gaussian_kl",
    "linear_anneal",
    "multvae_loss",
    "train_mult",
]


def linear_anneal(step: int, cap: float, total_steps: int) -> float:
    """β_t = min(cap, t / total_steps): the KL weight after ``step`` gradient updates."""
    if total_steps <= 0 or cap < 0:
        raise EntrolabError(f"need total_steps > 0 and cap >= 0, got {total_steps}, {cap}")
    return min(float(cap), step / total_steps)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row, nats: [B, K] → [B]."""
    return 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(-1)


def multvae_loss(
    logits: torch.Tensor,
    clicks: torch.Tensor,
    mu: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """−mean_u Σ_i x_ui log softmax(logits)_ui + β mean_u KL_u; returns (loss, metrics).

    logits, clicks [B, I]; mu, logvar [B, K] (None for the DAE)."""
    if logits.shape != clicks.shape:
        raise EntrolabError(f"logits {tuple(logits.shape)} and clicks {tuple(clicks.shape)} differ")
    if not bool(torch.isfinite(logits).all()):
        raise EntrolabError("decoder logits are NaN/inf; lower the learning rate")
    nll = -(torch.log_softmax(logits, -1) * clicks).sum(-1).mean()
    kl = torch.zeros((), dtype=logits.dtype)
    if mu is not None and logvar is not None:
        kl = gaussian_kl(mu, logvar).mean()
    loss = nll + beta * kl
    return loss, {"nll": float(nll.detach()), "kl": float(kl.detach()), "beta": float(beta)}


def _encode_input(x: torch.Tensor, dropout: nn.Dropout) -> torch.Tensor:
    return dropout(nn.functional.normalize(x, dim=-1))


class MultVAE(nn.Module):
    """[I → hidden → 2·latent] encoder, [latent → hidden → I] decoder (tanh)."""

    def __init__(self, n_items: int, hidden: int = 600, latent: int = 200, keep: float = 0.5):
        super().__init__()
        self.enc = nn.Linear(n_items, hidden)
        self.enc_out = nn.Linear(hidden, 2 * latent)
        self.dec = nn.Linear(latent, hidden)
        self.dec_out = nn.Linear(hidden, n_items)
        self.drop = nn.Dropout(1.0 - keep)
        self.latent = latent

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, I] → (logits [B, I], μ [B, K], log σ² [B, K])."""
        h = self.enc_out(torch.tanh(self.enc(_encode_input(x, self.drop))))
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.dec_out(torch.tanh(self.dec(z))), mu, logvar


class MultDAE(nn.Module):
    """[I → latent (tanh) → I] denoising autoencoder."""

    def __init__(self, n_items: int, latent: int = 200, keep: float = 0.5):
        super().__init__()
        self.enc = nn.Linear(n_items, latent)
        self.dec = nn.Linear(latent, n_items)
        self.drop = nn.Dropout(1.0 - keep)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return self.dec(torch.tanh(self.enc(_encode_input(x, self.drop)))), None, None


@dataclass
class TrainResult:
    """best_epoch, best_val_ndcg (NDCG@100 on validation users), history (per-epoch dicts)."""

    model: nn.Module
    best_epoch: int
    best_val_ndcg: float
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def scores_for(model: nn.Module, fold_in: np.ndarray, batch: int = 2000) -> np.ndarray:
    """Item scores (decoder logits) [U, I] for fold-in clicks [U, I], eval mode."""
    model.eval()
    x = torch.as_tensor(np.asarray(fold_in, dtype=np.float32))
    return torch.cat([model(x[i : i + batch])[0] for i in range(0, len(x), batch)]).numpy()


def evaluate(model: nn.Module, fold_in: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user NDCG@100, Recall@20 and Recall@50 on held-out users."""
    s = scores_for(model, fold_in)
    return {
        "ndcg@100": ndcg_at_k(s, fold_in, target, 100),
        "recall@20": recall_at_k(s, fold_in, target, 20),
        "recall@50": recall_at_k(s, fold_in, target, 50),
    }


def train_mult(
    split: Split,
    kind: Literal["vae", "dae"] = "vae",
    *,
    epochs: int = 60,
    batch: int = 100,
    lr: float = 1e-3,
    anneal_cap: float = 0.2,
    total_anneal_steps: int = 1000,
    l2: float | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train on ``split.train``; keep the weights of the epoch with the best validation NDCG@100.

    ``l2`` defaults to 0 for the VAE and 0.01 for the DAE (λ Σ w² over weight matrices)."""
    if kind not in ("vae", "dae"):
        raise EntrolabError(f"kind must be 'vae' or 'dae', got {kind!r}")
    lam = (0.0 if kind == "vae" else 0.01) if l2 is None else float(l2)
    x = torch.as_tensor(split.train.astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        n_items = x.shape[1]
        model: nn.Module = MultVAE(n_items) if kind == "vae" else MultDAE(n_items)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        step, best, best_state, history = 0, -1.0, None, []
        for epoch in range(epochs):
            model.train()
            for idx in torch.randperm(len(x), generator=g).split(batch):
                xb = x[idx]
                logits, mu, logvar = model(xb)
                beta = linear_anneal(step, anneal_cap, total_anneal_steps) if kind == "vae" else 0.0
                loss, info = multvae_loss(logits, xb, mu, logvar, beta)
                if lam:
                    loss = loss + lam * sum(
                        (p**2).sum() for n, p in model.named_parameters() if n.endswith("weight")
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
            val = float(evaluate(model, split.val_in, split.val_target)["ndcg@100"].mean())
            history.append({"epoch": epoch, "val_ndcg@100": val, **info})
            if val > best:
                best, best_epoch = val, epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
        assert best_state is not None
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, best, history)
