"""α-Rank vs OpenSpiel's alpharank.compute (test-only cross-check), hand cases, and
ResponseGraphUCB / pairwise ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrolab.beyond.alpharank import alpharank, fixation_probability, sweep_alpha
from entrolab.beyond.rgucb import (
    BernoulliGame,
    edge_orientation,
    pairwise_from_correctness,
    rank_pairwise,
    response_graph_edges,
    response_graph_ucb,
)
from entrolab.errors import EntrolabError

RPS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])


def _games():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (4, 4))
    bos = [0.02 * np.array([[3.0, 0.0], [0.0, 2.0]]), 0.02 * np.array([[2.0, 0.0], [0.0, 3.0]])]
    three = [rng.uniform(-1, 1, (2, 3, 2)) for _ in range(3)]
    return {
        "rps": [RPS],
        "transitive": [np.array([[0.0, -0.5, -1.0], [0.5, 0.0, -0.3], [1.0, 0.3, 0.0]])],
        "random_antisymmetric": [a - a.T],
        "random_general": [rng.uniform(0, 1, (3, 3))],
        "battle_of_sexes": bos,
        "three_population": three,
    }


def test_fixation_probability_hand_and_limits():
    # Δ = 0 → 1/m; α Δ = ln 2, m = 2: (1 − 1/2) / (1 − 1/4) = 2/3
    assert fixation_probability(0.0, 1.0, 50) == pytest.approx(1 / 50)
    assert fixation_probability(math.log(2), 1.0, 2) == pytest.approx(2 / 3, abs=1e-15)
    # stable where the direct form overflows (Kuhn pitfall): αΔ = −500, m = 50
    tiny = fixation_probability(-1.0, 500.0, 50)
    assert 0 <= tiny < 1e-200 and np.isfinite(tiny)
    assert fixation_probability(1.0, 500.0, 50) == pytest.approx(1.0)


def test_hand_cases():
    # RPS is cyclic and symmetric → uniform; transitive → all mass on the dominant strategy
    np.testing.assert_allclose(alpharank([RPS]).pi, [1 / 3] * 3, atol=1e-12)
    pi = alpharank(_games()["transitive"]).pi
    assert pi[2] > 0.999 and alpharank(_games()["transitive"]).ranking()[0] == 2
    # α = ∞ on a 2-strategy game where 1 beats 0: C = [[1−(1−ε), 1−ε], [ε, 1−ε]] → π = (ε, 1−ε)
    two = [np.array([[0.0, -1.0], [1.0, 0.0]])]
    np.testing.assert_allclose(alpharank(two, alpha=math.inf, eps=0.1).pi, [0.1, 0.9])
    res = alpharank(_games()["battle_of_sexes"], alpha=10)
    assert res.pi.shape == (4,) and [len(x) for x in res.marginals()] == [2, 2]
    np.testing.assert_allclose(res.transitions.sum(1), 1.0)


def test_nearly_reducible_chain_keeps_its_symmetry():
    # Battle of the sexes with payoffs swapped between players: by symmetry the two pure
    # equilibria (0, 0) and (1, 1) carry equal mass. Exits from them have ρ ~ 1e-9 here, so the
    # diagonal 1 − Σ loses them in float64; GTH elimination never forms the diagonal and keeps
    # the symmetry to rounding (OpenSpiel's eig is off by ~1.5e-8 on this game).
    bos = [0.1 * np.array([[3.0, 0.0], [0.0, 2.0]]), 0.1 * np.array([[2.0, 0.0], [0.0, 3.0]])]
    pi = alpharank(bos, alpha=5.0, m=20).pi
    assert abs(pi[0] - pi[3]) < 1e-14 and pi[1] > pi[2] > 0
    # an absorbing sink (transitive game at α = 100: worse moves underflow to 0) is fine
    assert alpharank(_games()["transitive"], alpha=100.0).pi[2] == pytest.approx(1.0)


def test_bad_payoff_tables():
    with pytest.raises(
        EntrolabError, match="missing \\(NaN\\) entries, first at profile \\(0, 1\\)"
    ):
        alpharank([np.array([[0.0, np.nan], [1.0, 0.0]])])
    with pytest.raises(EntrolabError, match="square"):
        alpharank([np.zeros((2, 3))])
    with pytest.raises(EntrolabError, match="2 populations need 2 tables"):
        alpharank([np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(EntrolabError, match="list of arrays"):
        alpharank(RPS)


@pytest.mark.parametrize("name", list(_games()))
@pytest.mark.parametrize(
    "kwargs", [{"alpha": 1.0}, {"alpha": 5.0, "m": 20}, {"alpha": math.inf, "eps": 0.01}]
)
def test_matches_openspiel(name, kwargs):
    alpharank_os = pytest.importorskip(
        "open_spiel.python.egt.alpharank",
        reason="open-spiel (test extra; cp311 x86_64 wheel) is not installed",
    )
    tables = _games()[name]
    inf = math.isinf(kwargs["alpha"])
    os_kwargs = {"m": kwargs.get("m", 50)}
    os_kwargs.update(
        {"use_inf_alpha": True, "inf_alpha_eps": kwargs["eps"]}
        if inf
        else {"alpha": kwargs["alpha"]}
    )
    pi_ref = alpharank_os.compute([t.copy() for t in tables], **os_kwargs)[2]
    ours = alpharank(
        tables, alpha=kwargs["alpha"], m=kwargs.get("m", 50), eps=kwargs.get("eps", 0.01)
    )
    np.testing.assert_allclose(ours.pi, pi_ref, atol=1e-8, rtol=0)
    if len(tables) == 1 and not inf:  # non-local finite-population fitness
        ref_nl = alpharank_os.compute(
            [tables[0].copy()], use_local_selection_model=False, **os_kwargs
        )[2]
        ours_nl = alpharank(tables, alpha=kwargs["alpha"], m=os_kwargs["m"], local_selection=False)
        np.testing.assert_allclose(ours_nl.pi, ref_nl, atol=1e-8, rtol=0)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # OpenSpiel's
@pytest.mark.parametrize("name", ["rps", "transitive", "random_general", "random_antisymmetric"])
def test_sweep_matches_openspiel(name):
    # (battle of the sexes is left out: there OpenSpiel's eig reports two stationary
    # distributions at α ≈ 13 and its sweep backtracks; our solver does not fail there)
    alpharank_os = pytest.importorskip(
        "open_spiel.python.egt.alpharank",
        reason="open-spiel (test extra; cp311 x86_64 wheel) is not installed",
    )
    tables = _games()[name]
    pi_ref, alpha_ref = alpharank_os.sweep_pi_vs_alpha(
        [t.copy() for t in tables], return_alpha=True
    )
    res, alpha = sweep_alpha(tables)
    assert alpha == pytest.approx(alpha_ref) and res.pi == pytest.approx(pi_ref, abs=1e-8)


def test_response_graph_edges_count():
    # 2 players × 3 strategies: 9 profiles, each player has C(3,2) = 3 pairs per opponent strategy
    edges = response_graph_edges((3, 3))
    assert len(edges) == 2 * 3 * 3 and ((0, 0), (0, 2), 1) in edges


@pytest.mark.parametrize("ci", ["clopper-pearson", "hoeffding"])
def test_rgucb_resolves_bernoulli_game(ci):
    rng = np.random.default_rng(4)
    m0 = rng.uniform(0.1, 0.9, (2, 2))
    game = BernoulliGame([m0, 1 - m0])  # zero-sum in win probability
    res = response_graph_ucb(game, delta=0.1, ci=ci, budget=20000, seed=1)
    assert res.resolved == set(res.edges) and res.errors(game.means) == 0
    assert res.interactions == res.counts.sum() and res.interactions < 20000
    with pytest.raises(EntrolabError, match="delta"):
        response_graph_ucb(game, delta=0)


def test_round_robin_baseline_plays_profiles_in_turn():
    game = BernoulliGame([np.array([[0.2, 0.8], [0.6, 0.3]]), np.array([[0.7, 0.1], [0.4, 0.9]])])
    res = response_graph_ucb(game, delta=0.1, ci="hoeffding", exploration="round-robin", seed=0)
    # every profile is played in turn, so the counts differ by at most one
    assert res.counts.max() - res.counts.min() <= 1 and res.resolved == set(res.edges)
    assert res.errors(game.means) == 0


def test_rank_pairwise_orders_and_intervals():
    # strength 0 < 1 < 2: win rates 0.8 for the stronger side, 200 games per pair
    p = np.array([[0.5, 0.2, 0.2], [0.8, 0.5, 0.2], [0.8, 0.8, 0.5]])
    games = np.full((3, 3), 200.0)
    wins = p * games
    out = rank_pairwise(wins, games, ["a", "b", "c"], draws=50)
    assert out.order[0] == "c" and out.pi_low[2] <= out.result.pi[2] <= out.pi_high[2]
    g2 = games.copy()
    g2[0, 1] = g2[1, 0] = 0
    with pytest.raises(EntrolabError, match="pair \\(0, 1\\) has no games"):
        rank_pairwise(np.minimum(wins, g2), g2)
    assert edge_orientation([np.array([[0.3, 0.6]])], ((0, 0), (0, 1), 0)) == (0, 1)


def test_pairwise_from_correctness_hand_case():
    # items: A = 1 1 0 1, B = 1 0 0 0. A beats B on items 1, 3; draws on 0, 2 → A wins 2 + 1 = 3
    wins, games = pairwise_from_correctness([[1, 1, 0, 1], [1, 0, 0, 0]])
    assert wins.tolist() == [[0.0, 3.0], [1.0, 0.0]] and games.tolist() == [[0, 4], [4, 0]]
    # three strategies of increasing accuracy on 200 items → ranked best first
    rng = np.random.default_rng(0)
    correct = rng.random((3, 200)) < np.array([[0.3], [0.5], [0.8]])
    out = rank_pairwise(*pairwise_from_correctness(correct), ["weak", "mid", "strong"], draws=20)
    assert out.order[0] == "strong"
    with pytest.raises(EntrolabError, match="0/1"):
        pairwise_from_correctness([[0.5, 1.0]])
