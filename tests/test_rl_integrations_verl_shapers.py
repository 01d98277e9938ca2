"""Shapers as verl advantage estimators (called as verl's compute_advantage calls them; verl itself
is not needed): rows in verl's arbitrary order give the pipeline's result in prompt-major order,
and missing per-token inputs name the keyword verl must pass."""

from __future__ import annotations

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.advantages.inputs import ShapingInputs
from entrolab.rl.integrations.verl_shaping import make_verl_shaped_advantage
from entrolab.rl.shaping import AdvantagePipeline


def test_verl_shaped_advantage_matches_the_pipeline_in_any_row_order() -> None:
    gen = torch.Generator().manual_seed(0)
    n, g, t = 3, 4, 5
    r = n * g
    rewards = torch.randint(0, 2, (n, g), generator=gen).float()
    lengths = torch.randint(1, t + 1, (r,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    sc = torch.rand(r, t, generator=gen) * 4 * mask
    z = torch.randn(r, t, generator=gen) * mask
    se = torch.rand(n, generator=gen)
    spec, params = "grpo+seed_grpo+ucas", {"seed_grpo": {"alpha": 0.5}}
    expected, _ = AdvantagePipeline(spec, params)(
        rewards,
        mask,
        ShapingInputs(rewards, mask, self_certainty=sc, token_logits=z, semantic_entropy=se),
    )
    perm = torch.randperm(r, generator=gen)  # verl's row order
    uid = [f"q{int(i) // g}" for i in perm]
    tok_rewards = torch.zeros(r, t)
    tok_rewards[torch.arange(r), lengths[perm] - 1] = rewards.reshape(-1)[perm]
    fn = make_verl_shaped_advantage(spec, params)
    adv, ret = fn(
        token_level_rewards=tok_rewards,
        response_mask=mask[perm].float(),
        config=None,
        index=uid,
        self_certaintys=sc[perm],
        actual_token_logits=z[perm],
        semantic_entropy=se.repeat_interleave(g)[perm],
    )
    torch.testing.assert_close(adv, expected[perm], rtol=1e-6, atol=1e-7)
    assert adv is ret
    with pytest.raises(EntrolabError, match="actual_token_logits"):
        fn(
            token_level_rewards=tok_rewards,
            response_mask=mask[perm].float(),
            index=uid,
            self_certaintys=sc[perm],
            semantic_entropy=se.repeat_interleave(g)[perm],
        )
