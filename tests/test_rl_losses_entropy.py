"""Entropy-shaping policy losses (STEER, SIREN, Clip_B/Clip_V, AEPO, TEA-RL, Entropy-SFT):
hand-computed values, token selections on crafted inputs, transcriptions of the official code
(zz-haooo/STEER ``compute_token_weights`` + ``entropy_control``; Linn3a/siren
``efficient_top_p_sampling`` + ``mask_by_quantile``; agentscope-ai/Trinity-RFT
``ClipBAdvantageFn`` / ``ClipVAdvantageFn``), batch-scope split invariance, the TRL form of the
forking-token loss, and the first-order entropy change ΔH ≈ −ε·S."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses import POLICY_LOSSES, prepare_selection
from entrolab.rl.losses.aepo import aepo_arbitrary, tempered_log_weight
from entrolab.rl.losses.ares import ares, ares_entropy_score, difficulty_buckets, window_entropy
from entrolab.rl.losses.discriminator import clip_b, clip_v, discriminator_s, vocab_baseline_s
from entrolab.rl.losses.siren import peak_entropy_mask, siren, top_p_entropy
from entrolab.rl.losses.steer import steer, steer_omega, steer_weights
from entrolab.rl.losses.tea_rl import entropy_sft_token_loss, entropy_token_weights, tea_rl
from entrolab.rl.types import PolicyLossInput

F64 = torch.float64


def _inp(lp, old, adv, mask=None, **kw) -> PolicyLossInput:
    lp = torch.as_tensor(lp, dtype=F64).detach().requires_grad_(True)
    old = torch.as_tensor(old, dtype=F64)
    adv = torch.as_tensor(adv, dtype=F64)
    mask = torch.ones_like(lp, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    return PolicyLossInput(lp, old, adv, mask, **kw)


def _case(seed: int, b: int = 6, t: int = 7, v: int = 11, spread: float = 0.3):
    """A consistent random batch: logits [B, T, V] → ℓ, H of sampled tokens; old ℓ nearby."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, t, v, generator=g, dtype=F64) * 2).requires_grad_(True)
    logp = torch.log_softmax(logits, -1)
    ids = torch.multinomial(logp.detach().exp().reshape(-1, v), 1, generator=g).reshape(b, t)
    lp = torch.gather(logp, -1, ids[..., None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    old = lp.detach() + spread * torch.randn(b, t, generator=g, dtype=F64)
    adv = torch.randn(b, 1, generator=g, dtype=F64).expand(b, t).clone()
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    return logits, lp, ent, old, adv, mask


def _ppo_ref(lp, old, adv, lo, hi, c=None, clamp=None):
    d = lp - old
    if clamp is not None:
        d = d.clamp(-clamp, clamp)
    r = torch.exp(d)
    loss = torch.maximum(-adv * r, -adv * r.clamp(1 - lo, 1 + hi))
    if c is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * c), loss)
    return loss


# --- STEER ---------------------------------------------------------------------------------


def _steer_official_weights(adv, ent, old, lp, mask, wmin, wmax, linear):
    """zz-haooo/STEER ``compute_token_weights``, transcribed."""
    x = torch.exp(lp).clamp(min=1e-8, max=1.0 - 1e-8)
    f = x * (1 - x) * (torch.log(x) + ent)
    old_prob = torch.exp(old).clamp(min=1e-8, max=1.0)
    metric = adv / old_prob * f
    metric = torch.where(torch.isfinite(metric), metric, torch.zeros_like(metric)).abs()
    vm = mask.bool()
    valid = metric[vm]
    mn, mx = valid.min(), valid.max()
    tw = torch.zeros_like(metric)
    if linear:
        if mx > mn:
            w = wmax - (valid - mn) * ((wmax - wmin) / (mx - mn))
        else:
            w = torch.full_like(valid, (wmin + wmax) / 2)
        w = w.clamp(wmin, wmax)
    else:
        k = -torch.log(torch.tensor(wmin, dtype=metric.dtype)) / torch.maximum(
            mx, torch.tensor(0.02, dtype=metric.dtype)
        )
        w = torch.exp(-k * valid).clamp(wmin, 1.0)
    tw[vm] = w
    return tw * mask.to(tw.dtype)


def _steer_official_loss(old, lp, adv, mask, ent, lo, hi, c, wmin, wmax, linear):
    """STEER's ``entropy_control`` policy loss with token-mean ``agg_loss``, transcribed."""
    tw = _steer_official_weights(adv, ent, old, lp.detach(), mask, wmin, wmax, linear)
    d = torch.clamp(lp - old, min=-20.0, max=20.0)
    ratio = torch.exp(d)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    c1 = torch.maximum(l1, l2)
    c2 = torch.min(-adv * c, c1)
    pg = torch.where(adv < 0, c2, c1) * tw
    m = mask.to(pg.dtype)
    return (pg * m).sum() / m.sum()


def test_steer_weights_hand_computed() -> None:
    # p = 0.5 for all tokens, π_old = 0.5, H = ln 2 + d → Ω = |A/0.5 · 0.25 · d| = |A·d|/2
    # d = [0.2, 0.4, 0.8], A = 1 → Ω = [0.1, 0.2, 0.4]: linear map to [0.8, 1.2], max → 0.8
    # w = 1.2 − (Ω − 0.1)·0.4/0.3 = [1.2, 1.0666…, 0.8]
    lp = torch.full((1, 3), math.log(0.5), dtype=F64)
    ent = math.log(2) + torch.tensor([[0.2, 0.4, 0.8]], dtype=F64)
    omega = steer_omega(lp, lp, torch.ones(1, 3, dtype=F64), ent)
    torch.testing.assert_close(omega, torch.tensor([[0.1, 0.2, 0.4]], dtype=F64))
    m = torch.ones(1, 3, dtype=torch.bool)
    w = steer_weights(omega, m)
    torch.testing.assert_close(w, torch.tensor([[1.2, 1.2 - 0.4 / 3, 0.8]], dtype=F64))
    # exp map: k = −ln 0.8 / 0.4; w = exp(−kΩ) = 0.8^(Ω/0.4) = [0.8^.25, 0.8^.5, 0.8]
    w_exp = steer_weights(omega, m, mapping="exp", weight_max=1.0)
    torch.testing.assert_close(w_exp, torch.tensor([[0.8**0.25, 0.8**0.5, 0.8]], dtype=F64))
    # the loss on-policy: PPO token loss −A = −1 each, × w, token-mean: −(1.2 + 1.0667 + 0.8)/3
    inp = _inp(lp, lp, torch.ones(1, 3), entropy=ent)
    out = steer(inp)
    assert out.loss.item() == pytest.approx(-(1.2 + 1.2 - 0.4 / 3 + 0.8) / 3, rel=1e-12)
    assert out.metrics["weight_min"] == pytest.approx(0.8)
    assert out.metrics["touched_frac"] == pytest.approx(1.0)  # no weight is exactly 1


@pytest.mark.parametrize("linear", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_steer_matches_official_transcription(seed: int, linear: bool) -> None:
    _, lp, ent, old, adv, mask = _case(seed, spread=0.6)
    lp = lp.detach().requires_grad_(True)
    wmax = 1.2 if linear else 1.0
    ref = _steer_official_loss(old, lp, adv, mask, ent.detach(), 0.2, 0.28, 10.0, 0.8, wmax, linear)
    inp = PolicyLossInput(lp, old, adv, mask, entropy=ent.detach())
    out = steer(inp, mapping="linear" if linear else "exp", weight_max=wmax)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
    (g,) = torch.autograd.grad(out.loss, lp, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, lp)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


# --- Clip_B / Clip_V ---------------------------------------------------------------------------


def test_first_order_entropy_change_is_minus_eps_s() -> None:
    # δz = ε·e_k on a 5-token softmax: ΔH = −ε·S_k + O(ε²), S_k = p_k(H + log p_k)
    z = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0], dtype=F64)

    def h(x):
        lp = torch.log_softmax(x, -1)
        return float(-(lp.exp() * lp).sum())

    lp = torch.log_softmax(z, -1)
    for k in range(5):
        eps = 1e-6
        dz = torch.zeros(5, dtype=F64)
        dz[k] = eps
        s_k = float(discriminator_s(lp[k], torch.tensor(h(z), dtype=F64)))
        assert (h(z + dz) - h(z)) / eps == pytest.approx(-s_k, rel=1e-4, abs=1e-9)
    # E_π[S] from the logits equals Σ p_j S_j
    s_all = discriminator_s(lp, torch.tensor(h(z), dtype=F64))
    assert float(vocab_baseline_s(z[None, None])) == pytest.approx(float((lp.exp() * s_all).sum()))


def _clipb_official_keep(lp, ent, mask, adv, mu):
    """Trinity-RFT ``ClipBAdvantageFn`` token filter, transcribed (→ M_clipped as bool)."""
    p = lp.exp()
    s = p * (ent + lp)
    xs, m = s.detach().to(torch.float32), mask.to(torch.float32)
    n = m.sum().clamp_min(1.0)
    es = (xs * m).sum() / n
    std = (((xs - es) ** 2 * m).sum() / n).sqrt()
    z = xs - es
    if std.item() < 1e-12:
        return mask.clone()
    a = adv.to(torch.float32)
    keep = torch.where(a > 0, True, torch.where(a < 0, z >= -(mu * std), True))
    return mask & keep


def _clipv_official_keep(lp, ent, necs, mask, adv, mu, max_frac):
    """Trinity-RFT ``ClipVAdvantageFn`` token filter, transcribed (→ M_clipped as bool)."""
    s = lp.exp() * (ent + lp)
    xd = (necs - s).detach().to(torch.float32)
    a = adv.to(torch.float32)
    m = mask.to(torch.float32)
    n = m.sum().clamp_min(1.0)
    mean_d = (xd * m).sum() / n
    std_d = (((xd - mean_d) ** 2 * m).sum() / n).sqrt()
    if std_d.item() < 1e-12:
        return mask.clone()
    pos, neg = a > 0, a < 0
    keep_neg = xd <= (mu * std_d)
    keep_bool = torch.where(pos, torch.ones_like(pos), keep_neg)
    frac_clipped = ((mask & ~keep_bool).float().sum() / n).item()
    if frac_clipped <= max_frac:
        return mask & keep_bool
    cap = max(int(max_frac * n.item()), 1)
    neg_to_clip = neg & mask & ~keep_neg
    count = int(neg_to_clip.sum())
    if count <= cap:
        return mask & keep_bool
    scores = xd.masked_fill(~neg_to_clip, float("-inf")).view(-1)
    _, idx = torch.topk(scores, min(cap, count), largest=True)
    limited = torch.zeros_like(scores, dtype=torch.bool)
    limited[idx] = True
    final = keep_bool.clone()
    final[neg_to_clip] = True
    final[limited.view_as(xd)] = False
    return mask & final


def test_clip_b_selection_on_crafted_tokens() -> None:
    # S = p(H + log p): token 0 (p = 0.9, H = 0.4) S = 0.9·(0.4 + ln 0.9) = 0.2652;
    # tokens 1..7 identical to token 0; token 8 rare (p = e^−6, H = 3) S ≈ −0.0074 (close to 0);
    # token 9 confident-wrong: p = 0.5, H = 3 → S = 0.5·(3 − 0.693) = 1.153.
    # E[S] = 0.3267, σ_S = 0.2873: z-scores 0..7 −0.214, 8 −1.163, 9 +2.877
    lp = [math.log(0.9)] * 8 + [-6.0, math.log(0.5)]
    ent = [0.4] * 8 + [3.0, 3.0]
    # with μ = 1 the low-S tokens (token 8, S far below the mean) are dropped iff A < 0
    for a8, dropped in [(-1.0, True), (1.0, False), (0.0, False)]:
        adv = [1.0] * 8 + [a8, -1.0]
        inp = _inp([lp], [lp], [adv], entropy=torch.tensor([ent], dtype=F64))
        out = clip_b(inp, mu=1.0)
        assert out.metrics["frac_clipped"] == pytest.approx(0.1 if dropped else 0.0)
        (g,) = torch.autograd.grad(out.loss, inp.logprobs)
        if a8 != 0:  # (A = 0 has no gradient anyway)
            assert (g[0, 8] == 0) == dropped
        # token-mean over the kept tokens, on-policy token loss −A: dropped → (−8 + 1)/9 = −7/9;
        # kept → (−8 − a8 + 1)/10
        expected = -7 / 9 if dropped else (-8 - a8 + 1) / 10
        assert out.loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_clip_b_and_clip_v_match_trinity_transcriptions(seed: int) -> None:
    logits, lp, ent, old, adv, mask = _case(seed, b=8, t=9, v=6, spread=0.3)
    lp, ent = lp.detach(), ent.detach()
    adv = torch.where(
        torch.rand(adv.shape, generator=torch.Generator().manual_seed(seed)) < 0.1,
        torch.zeros_like(adv),
        adv,
    )  # fmt: skip  (some A = 0 tokens)
    necs = vocab_baseline_s(logits)
    for mu in (0.5, 1.0, 2.5):
        keep_b = _clipb_official_keep(lp, ent, mask, adv, mu)
        for max_frac in (1e-4, 0.05, 1.0):
            keep_v = _clipv_official_keep(lp, ent, necs, mask, adv, mu, max_frac)
            x = lp.clone().requires_grad_(True)
            inp = PolicyLossInput(x, old, adv, mask, entropy=ent, logits=logits.detach())
            out = clip_v(inp, mu=mu, max_frac=max_frac)
            ref_tok = _ppo_ref(x, old, adv, 0.2, 0.2)
            ref = (ref_tok * keep_v).sum() / keep_v.sum()
            torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
            assert out.metrics["effective_tokens"] == int(keep_v.sum())
        x = lp.clone().requires_grad_(True)
        out = clip_b(PolicyLossInput(x, old, adv, mask, entropy=ent), mu=mu)
        ref = (_ppo_ref(x, old, adv, 0.2, 0.2) * keep_b).sum() / keep_b.sum()
        torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
        (g,) = torch.autograd.grad(out.loss, x)
        assert torch.all(g[mask & ~keep_b] == 0)


def test_clip_v_needs_logits() -> None:
    _, lp, ent, old, adv, mask = _case(0)
    with pytest.raises(EntrolabError, match="pass_logits"):
        clip_v(PolicyLossInput(lp.detach(), old, adv, mask, entropy=ent.detach()))


# --- SIREN ---------------------------------------------------------------------------------


def _official_top_p(logits, k, p):
    """Linn3a/siren ``efficient_top_p_sampling`` (entropy part), transcribed; logits [N, V]."""
    probs = torch.softmax(logits, dim=-1)
    _, topk_indices = torch.topk(logits, k=k)
    topk_probs = torch.gather(probs, dim=1, index=topk_indices)
    cum = torch.cumsum(topk_probs, dim=-1)
    tensor_p = p * torch.ones([probs.shape[0], k], dtype=cum.dtype)
    cutoff = torch.unsqueeze(torch.max(torch.searchsorted(cum, tensor_p), dim=-1).values, dim=1)
    bsz, kk = topk_indices.shape
    rng = torch.arange(kk).unsqueeze(0).expand(bsz, kk)
    mask = rng < cutoff.expand_as(topk_indices)
    filtered = [row[mrow] for row, mrow in zip(topk_indices, mask, strict=True)]
    full = torch.zeros_like(logits, dtype=torch.bool)
    for i in range(bsz):
        full[i].scatter_(0, filtered[i], True)
    pd = probs * full.float().to(probs.dtype)
    pd = pd / (pd.sum(dim=-1, keepdim=True) + 1e-12)
    return -torch.sum(pd * torch.log(pd + 1e-12), dim=-1)


def _official_mask_by_quantile(x, response_mask, lower):
    x_masked = x.masked_fill(~response_mask.to(dtype=torch.bool), float("nan")).float()
    lower_bound = torch.nanquantile(x_masked, lower, dim=-1, keepdim=True)
    return x > lower_bound


def test_top_p_entropy_hand_computed_and_official() -> None:
    # probs [0.6, 0.3, 0.1]: p = 0.8 → cumsum [0.6, 0.9, 1.0]; searchsorted(0.8) = 1 → the
    # nucleus is token 0 alone (the crossing token is excluded) → entropy 0
    z = torch.log(torch.tensor([[0.6, 0.3, 0.1]], dtype=F64))
    assert float(top_p_entropy(z, 0.8, 3)) == pytest.approx(0.0, abs=1e-9)
    # p = 0.95 → cutoff 2: tokens 0, 1 renormalised to [2/3, 1/3]
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert float(top_p_entropy(z, 0.95, 3)) == pytest.approx(expected, rel=1e-9)
    logits, *_ = _case(3, v=13)
    flat = logits.detach().reshape(-1, 13)
    for p, k in [(0.8, 13), (0.95, 5), (0.5, 13)]:
        torch.testing.assert_close(
            top_p_entropy(flat, p, k), _official_top_p(flat, k, p), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_siren_matches_official_transcription_and_grads_only_on_peak(seed: int) -> None:
    logits, lp, _, old, adv, mask = _case(seed, b=5, t=9, v=12)
    lp = lp.detach().requires_grad_(True)
    logits = logits.detach().requires_grad_(True)
    anchor, beta = 0.3, 0.5
    inp = PolicyLossInput(lp, old, adv, mask, logits=logits)
    out = siren(inp, entropy_coef=beta, entropy_anchor=anchor, top_k=12)
    # official: pg (old verl vanilla, dual clip 3, SMTSN = Σ/(B·T)) + β·(SMTM(H^p, peak) − a)²
    hp = _official_top_p(logits.reshape(-1, 12), 12, 0.8).reshape(5, 9)
    peak = _official_mask_by_quantile(hp, mask, 0.8) & mask
    pg = (_ppo_ref(lp, old, adv, 0.28, 0.28, c=3.0) * mask).sum() / (5 * 9)
    seq = (hp * peak).sum(-1) / peak.sum(-1)
    ref = pg + beta * (seq.mean() - anchor) ** 2
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(out.loss, logits, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)
    # spec §6: the regulariser's gradient is non-zero only at peak positions
    reg_only = siren(PolicyLossInput(lp.detach(), old, torch.zeros_like(adv), mask, logits=logits),
                     entropy_coef=beta, entropy_anchor=anchor, top_k=12)  # fmt: skip
    (gr,) = torch.autograd.grad(reg_only.loss, logits)
    nonzero = gr.abs().sum(-1) > 0
    assert torch.equal(nonzero & mask, nonzero) and torch.all(nonzero <= peak)
    assert bool(nonzero.any())


def test_peak_mask_hand_computed_and_anchor_none_is_inert() -> None:
    # per sequence, q = 0.5 over [1, 2, 3, 4] → median 2.5 → tokens 2, 3; padding never selected
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0]], dtype=F64)
    m = torch.tensor([[True] * 4 + [False]])
    assert peak_entropy_mask(h, m, 0.5).tolist() == [[False, False, True, True, False]]
    # entropy_anchor=None: the regulariser is (H̄ − sg(H̄))² → 0 value and 0 gradient
    logits, lp, _, old, adv, mask = _case(1, v=9)
    x = logits.detach().requires_grad_(True)
    out = siren(PolicyLossInput(lp.detach(), old, torch.zeros_like(adv), mask, logits=x), top_k=9)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-15) and out.metrics["siren_reg"] == 0.0
    (g,) = torch.autograd.grad(out.loss, x)
    assert float(g.abs().max()) == 0.0
    assert out.metrics["siren_entropy"] > 0


# --- AEPO, TEA-RL, Entropy-SFT -------------------------------------------------------------


def test_tempered_weight_exact_and_first_order() -> None:
    z = torch.tensor([[[2.0, 0.5, -1.0, 0.0]]], dtype=F64)
    logp = torch.log_softmax(z, -1)
    for temp in (0.8, 1.2):
        exact = tempered_log_weight(logp[..., 0], temp, logits=z)
        ref = torch.log_softmax(z / temp, -1)[..., 0] - logp[..., 0]  # log π^T(y) − log π(y)
        torch.testing.assert_close(exact, ref)
    # first order in (1/T − 1) with H: error O((1/T − 1)²)
    h = -(logp.exp() * logp).sum(-1)
    for temp in (0.99, 1.01):
        approx = tempered_log_weight(logp[..., 1], temp, entropy=h)
        exact = tempered_log_weight(logp[..., 1], temp, logits=z)
        assert float(approx) == pytest.approx(float(exact), abs=5 * (1 / temp - 1) ** 2)


def test_aepo_hand_computed_temperature_switch() -> None:
    # two tokens on-policy (ℓ = ℓ_old = log 0.5), A = [1, −1]; H = [0.2, 0.2] < H* = 0.5 → T_high
    # first-order weight: log w = (1/1.2 − 1)(ln 0.5 + 0.2) → w = exp(−(−0.49315)/6) = 1.08562
    # PPO term: (−1 + 1)/2 = 0; REINFORCE on token 0 only (A > 0.05): −w·ℓ/2 = w·0.69315/2
    lp = [[math.log(0.5)] * 2]
    inp = _inp(lp, lp, [[1.0, -1.0]], entropy=torch.tensor([[0.2, 0.2]], dtype=F64))
    out = aepo_arbitrary(inp, target_entropy=0.5, reinforce_coef=0.1)
    w = math.exp((1 / 1.2 - 1) * (math.log(0.5) + 0.2))
    assert out.metrics["aepo_temperature"] == 1.2
    assert out.loss.item() == pytest.approx(0.1 * w * math.log(2) / 2, rel=1e-12)
    (g,) = torch.autograd.grad(out.loss, inp.logprobs)
    # ∂/∂ℓ: PPO −A/2 = [−0.5, 0.5]; REINFORCE −0.1·w/2 on token 0
    torch.testing.assert_close(g, torch.tensor([[-0.5 - 0.05 * w, 0.5]], dtype=F64))
    # above the target: T_low and α/2
    inp2 = _inp(lp, lp, [[1.0, -1.0]], entropy=torch.tensor([[0.9, 0.9]], dtype=F64))
    out2 = aepo_arbitrary(inp2, target_entropy=0.5, reinforce_coef=0.1)
    assert out2.metrics["aepo_temperature"] == 0.8 and out2.metrics["aepo_coef"] == 0.05


def test_tea_rl_and_entropy_sft_hand_computed() -> None:
    # H = [0.5, 1, 2.5] → H̄ = 4/3 → H/H̄ = [0.375, 0.75, 1.875] → clamp [0.5, 2]: [0.5, 0.75, 1.875]
    h = torch.tensor([[0.5, 1.0, 2.5]], dtype=F64)
    m = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(
        entropy_token_weights(h, m), torch.tensor([[0.5, 0.75, 1.875]], dtype=F64)
    )
    lp = [[-1.0, -1.0, -1.0]]
    out = tea_rl(_inp(lp, lp, [[1.0, 1.0, -1.0]], entropy=h))
    # on-policy −A·w: (−0.5 − 0.75 + 1.875)/3
    assert out.loss.item() == pytest.approx((-0.5 - 0.75 + 1.875) / 3, rel=1e-12)
    # Entropy-SFT: uniform 2-way prediction (H = ln 2) and a peaked one; targets 0
    logits = torch.tensor([[[0.0, 0.0], [3.0, -3.0]]], dtype=F64)
    loss, met = entropy_sft_token_loss(logits, torch.zeros(1, 2, dtype=torch.long),
                                       torch.ones(1, 2, dtype=torch.bool))  # fmt: skip
    lp2 = torch.log_softmax(logits, -1)
    hh = -(lp2.exp() * lp2).sum(-1)[0]
    w = (hh / hh.mean()).clamp(0.5, 2.0)
    expected = (w[0] * math.log(2) + w[1] * -lp2[0, 1, 0]) / 2
    assert loss.item() == pytest.approx(float(expected), rel=1e-12)
    assert met["sft_entropy"] == pytest.approx(float(hh.mean()))


# --- ARES ----------------------------------------------------------------------------------


def _official_entropy_score(gen, target, accuracy, difficulty, alpha):
    """shawn0728/ARES examples/reward_function/aepo.py ``compute_score`` (entropy part),
    transcribed."""

    def huber(x, kappa):
        x = max(float(x), 0.0)
        return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa

    def sat(x, temp):
        return 1.0 / (1.0 + math.exp(-x / max(float(temp), 1e-6)))

    margin_frac = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
    kappa_d = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
    temp_d = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
    cap_d = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
    delta = gen - target
    margin = max(1.0, margin_frac.get(difficulty, 0.2) * max(float(target), 1.0))
    kappa, temp = kappa_d.get(difficulty, 2.0), temp_d.get(difficulty, 2.0)
    cap = alpha * cap_d.get(difficulty, 1.0)
    if difficulty in ("easy", "medium"):
        if accuracy == 1.0:
            if difficulty == "easy":
                pen = huber(max(delta - margin, 0.0), kappa)
            else:
                pen = huber(max(abs(delta) - margin, 0.0), kappa)
            return -min(cap, pen / (margin + kappa) * cap)
        over = max(delta - margin, 0.0)
        return sat(over, temp) * cap * (0.6 if difficulty == "easy" else 0.8)
    if accuracy == 1.0:
        if delta >= -margin:
            return sat(delta - (-margin), temp) * cap
        pen = huber((-delta) - margin, kappa)
        return -min(cap, 0.5 * pen / (margin + kappa) * cap)
    return sat(max(delta - margin, 0.0), temp) * cap


def test_ares_entropy_score_matches_official() -> None:
    names = ["easy", "medium", "hard"]
    for n in (0, 1, 3, 7, 12, 30):
        for target in (0, 2, 5, 20):
            for correct in (True, False):
                for b in range(3):
                    for alpha in (0.5, 1.3):
                        ours = ares_entropy_score(n, target, correct, b, alpha)
                        ref = _official_entropy_score(n, target, 1.0 if correct else 0.0,
                                                      names[b], alpha)  # fmt: skip
                        assert ours == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_ares_window_entropy_buckets_and_shaped_loss() -> None:
    # H = [1, 2, 3, 4] (length 4), w = 2: windows t = 0, 1, 2 → [1.5, 2.5, 3.5]; t = 3 invalid
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]], dtype=F64)
    m = torch.tensor([[True] * 4 + [False]])
    w, valid = window_entropy(h, m, 2)
    torch.testing.assert_close(w[0, :3], torch.tensor([1.5, 2.5, 3.5], dtype=F64))
    assert valid.tolist() == [[True, True, True, False, False]]
    assert difficulty_buckets(torch.tensor([1.0, 2 / 3, 0.5, 1 / 3, 0.0])).tolist() == [
        0, 0, 1, 1, 2,
    ]  # fmt: skip
    # two sequences of one group (pass rate 0.5 → medium), on-policy, A = [1, −1]
    _, lp, ent, _, _, mask = _case(2, b=2, t=9)
    lp, ent = lp.detach(), ent.detach()
    adv = torch.tensor([[1.0], [-1.0]], dtype=F64).expand(2, 9).clone()
    info = {"group": torch.tensor([0, 0]), "correct": torch.tensor([1.0, 0.0], dtype=F64),
            "pass_rate": torch.tensor([0.5, 0.5], dtype=F64)}  # fmt: skip
    x = lp.clone().requires_grad_(True)
    out = ares(PolicyLossInput(x, lp, adv, mask, entropy=ent, sequence_info=info), window=3,
               percentile=0.5)  # fmt: skip
    # reference: the same PPO loss with A + (s − mean s), s from the official score
    wv, vv = window_entropy(ent, mask, 3)
    tau = float(torch.stack([torch.quantile(wv[i][vv[i]], 0.5) for i in range(2)]).median())
    n_hwe = ((wv >= tau) & vv).sum(-1).double()
    target = float(n_hwe.mean())  # both medium
    s = torch.tensor([_official_entropy_score(float(n_hwe[i]), target, [1.0, 0.0][i], "medium",
                                              0.5) for i in range(2)], dtype=F64)  # fmt: skip
    shaped = adv + (s - s.mean())[:, None]
    ref = (_ppo_ref(x, lp, shaped, 0.2, 0.28, c=3.0, clamp=20.0) * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
    assert out.metrics["hwe_mean"] == pytest.approx(float(n_hwe.mean()))
    with pytest.raises(EntrolabError, match="sequence_info"):
        ares(PolicyLossInput(x, lp, adv, mask, entropy=ent))


# --- batch scope, registry, TRL form of forking tokens --------------------------------------

_NEW = [
    ("steer", {}),
    ("clip_b", {"mu": 1.0}),
    ("clip_v", {"mu": 0.5, "max_frac": 0.05}),
    ("siren", {"entropy_coef": 0.5, "entropy_anchor": 0.4, "top_k": 8}),
    ("aepo_arbitrary", {"target_entropy": 5.0}),
    ("tea_rl", {}),
    ("ares", {"window": 3, "percentile": 0.5}),
]


@pytest.mark.parametrize(("name", "params"), _NEW)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_batch_scope_independent_of_micro_batch_size(name: str, params: dict, agg: str) -> None:
    logits, lp, ent, old, adv, mask = _case(11, b=8, t=6, v=8, spread=0.5)
    lp, ent, logits = lp.detach(), ent.detach(), logits.detach()
    counts = {"global_tokens": int(mask.sum()), "global_sequences": 8, "max_response_length": 6}
    extra = {**params, "aggregation": agg, "selection_scope": "batch"}
    info = {"group": torch.arange(8) // 4, "correct": (torch.arange(8) % 3 == 0).double(),
            "pass_rate": torch.tensor([0.5] * 4 + [0.25] * 4, dtype=F64),
            "row": torch.arange(8)}  # fmt: skip
    full = PolicyLossInput(lp, old, adv, mask, entropy=ent, logits=logits, sequence_info=info,
                           **counts)  # fmt: skip
    sel = prepare_selection(name, full, **extra)
    fn = POLICY_LOSSES.get(name)
    results = []
    for size in (8, 1, 3):
        x = lp.clone().requires_grad_(True)
        z = logits.clone().requires_grad_(True)
        total = torch.zeros((), dtype=F64)
        for lo in range(0, 8, size):
            hi = min(lo + size, 8)
            part = PolicyLossInput(x[lo:hi], old[lo:hi], adv[lo:hi], mask[lo:hi],
                                   entropy=ent[lo:hi], logits=z[lo:hi], selection=sel,
                                   sequence_info={k: v[lo:hi] for k, v in info.items()},
                                   **counts)  # fmt: skip
            total = total + fn(part, **extra).loss
        gx, gz = torch.autograd.grad(total, (x, z), allow_unused=True)
        results.append((total.detach(), gx, gz))
    for loss, gx, gz in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gx, results[0][1], rtol=1e-10, atol=1e-12)
        if gz is not None:
            torch.testing.assert_close(gz, results[0][2], rtol=1e-9, atol=1e-12)


def test_forking_tokens_trl_defaults_equal_trl_transcription() -> None:
    """TRL 1.16 GRPOTrainer, loss_type='dapo', top_entropy_quantile=ρ, epsilon=0.2 (high = low),
    transcribed: mask = H ≥ quantile(H_valid, 1 − ρ); per_token_loss *= mask; Σ / Σ completion."""
    _, lp, ent, old, adv, mask = _case(5, spread=0.5)
    x = lp.detach().requires_grad_(True)
    ent = ent.detach()
    thr = torch.quantile(ent[mask], 1 - 0.2)
    emask = (ent >= thr) & mask
    coef_1 = torch.exp(x - old)
    per_tok = -torch.min(coef_1 * adv, coef_1.clamp(0.8, 1.2) * adv) * emask
    ref = (per_tok * mask).sum() / mask.sum().clamp(min=1)
    out = POLICY_LOSSES.get("forking_tokens_trl")(PolicyLossInput(x, old, adv, mask, entropy=ent))
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)


def test_new_losses_registered_with_papers() -> None:
    for name in ("steer", "siren", "clip_b", "clip_v", "aepo_arbitrary", "tea_rl", "ares"):
        entry = POLICY_LOSSES.entry(name)
        assert "arXiv" in entry.paper and entry.summary
