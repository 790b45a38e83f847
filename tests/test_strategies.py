"""Ranking strategies: permutations, determinism, k-center coverage under cosine distance, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.rank import strategies
from orchestrator.rank.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    Candidates,
    budget_to_k,
    get_strategy,
    kcenter_greedy,
    rank,
    register_strategy,
)

D = 8


def make(
    features: np.ndarray,
    uncertainty: np.ndarray | None = None,
    instances: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    disagreement: np.ndarray | None = None,
    flip_spread: np.ndarray | None = None,
) -> Candidates:
    n, d = features.shape
    return Candidates(
        task_ids=np.arange(100, 100 + n, dtype=np.int64),
        uncertainty=np.linspace(0, 1, n) if uncertainty is None else uncertainty,
        features=features.astype(np.float32),
        instances=np.zeros(n, int) if instances is None else instances,
        labelled_features=np.empty((0, d), np.float32) if labelled is None else labelled,
        disagreement=np.linspace(1, 0, n) if disagreement is None else disagreement,
        flip_spread=np.linspace(0.5, 0, n) if flip_spread is None else flip_spread,
    )


def random_candidates(n: int, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    features, uncertainty, instances = rng.normal(size=(n, D)), rng.random(n), rng.integers(0, 30, n)
    return make(features, uncertainty, instances, rng.normal(size=(2, D)), rng.random(n), rng.random(n))


def clusters(sizes: list[int], dims: list[int], scales: list[float], seed: int = 0) -> np.ndarray:
    """Tight clusters around axis directions, each with its own scale (cosine must ignore scale)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for size, dim, scale in zip(sizes, dims, scales, strict=True):
        direction = np.zeros(D)
        direction[dim] = 1.0
        blocks.append(scale * (direction + 0.05 * rng.normal(size=(size, D))))
    return np.concatenate(blocks)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def is_permutation(order: np.ndarray, n: int) -> bool:
    return order.shape == (n,) and np.array_equal(np.sort(order), np.arange(n))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("n", [0, 1, 7, 50])
def test_every_strategy_returns_a_deterministic_permutation(name: str, n: int) -> None:
    candidates = random_candidates(n)
    for k in (0, 1, 3, n + 5):
        order = STRATEGIES[name](candidates, k, np.random.default_rng(3))
        again = STRATEGIES[name](candidates, k, np.random.default_rng(3))
        assert is_permutation(np.asarray(order), n), (k, order)
        np.testing.assert_array_equal(order, again)
        ranking = rank(candidates, k, name, seed=3)
        assert ranking.k == min(k, n) and ranking.strategy == name
        np.testing.assert_array_equal(ranking.order, order)


def test_all_strategies_registered_and_default() -> None:
    assert set(STRATEGIES) == {
        "random", "instance-random", "entropy", "coreset", "hybrid", "disagreement", "typiclust",
        "probcover", "tta", "count-strata",
    }  # fmt: skip
    assert DEFAULT_STRATEGY == "random" and rank(random_candidates(5), 2).strategy == "random"


@pytest.mark.parametrize("name", ["random", "instance-random"])
def test_different_seeds_give_different_random_orders(name: str) -> None:
    candidates = random_candidates(50)
    orders = {tuple(rank(candidates, 5, name, seed=seed).order) for seed in range(5)}
    assert len(orders) == 5


def test_entropy_puts_most_uncertain_first_ties_by_index() -> None:
    uncertainty = np.array([0.2, 3.5, 0.9, 3.5, -1.0])
    order = rank(make(np.eye(5, D), uncertainty), 2, "entropy").order
    np.testing.assert_array_equal(order, [1, 3, 2, 0, 4])


def test_disagreement_puts_where_model_and_pseudo_label_differ_first() -> None:
    candidates = make(np.eye(5, D), disagreement=np.array([0.1, 0.8, 0.3, 0.8, 0.0]))
    np.testing.assert_array_equal(rank(candidates, 2, "disagreement").order, [1, 3, 2, 0, 4])
    fields = {name: getattr(candidates, name) for name in candidates.__dataclass_fields__}
    with pytest.raises(ValueError, match="needs a trained model"):
        rank(Candidates(**{**fields, "disagreement": None}), 2, "disagreement")


def test_tta_puts_where_flipped_predictions_disagree_first() -> None:
    candidates = make(np.eye(5, D), flip_spread=np.array([0.02, 0.3, 0.1, 0.3, 0.0]))
    np.testing.assert_array_equal(rank(candidates, 2, "tta").order, [1, 3, 2, 0, 4])
    fields = {name: getattr(candidates, name) for name in candidates.__dataclass_fields__}
    with pytest.raises(ValueError, match="flip spread"):
        rank(Candidates(**{**fields, "flip_spread": None}), 2, "tta")


def test_count_strata_takes_the_least_sure_image_of_each_count_stratum() -> None:
    """Dense images are the least sure here, so entropy takes only them; count-strata takes the
    least sure image of the sparse, the middle and the dense third, then the rest by entropy."""
    instances = np.array([1, 2, 3, 10, 11, 12, 50, 60, 70])
    uncertainty = np.array([0.10, 0.30, 0.20, 0.45, 0.40, 0.50, 0.90, 0.80, 0.70])
    candidates = make(np.eye(9, D + 1)[:, :D] + 0.1, uncertainty, instances)
    np.testing.assert_array_equal(rank(candidates, 3, "entropy").order[:3], [6, 7, 8])
    order = rank(candidates, 3, "count-strata").order
    np.testing.assert_array_equal(order[:3], [6, 5, 1])
    np.testing.assert_array_equal(order[3:], [7, 8, 3, 4, 2, 0])


def test_typiclust_takes_the_typical_image_of_each_large_cluster() -> None:
    """Clusters of 30, 20 and 10 images and an outlying trio: at k = 3, one image from each of the
    three large clusters, each the one nearest its cluster's centre (coreset would take the trio)."""
    features = clusters([30, 20, 10, 3], [0, 1, 2, 3], [1.0, 2.0, 0.5, 1.0], seed=4)
    group = np.repeat([0, 1, 2, 3], [30, 20, 10, 3])
    for seed in range(3):
        picks = rank(make(features), 3, "typiclust", seed=seed).order[:3]
        assert sorted(group[picks]) == [0, 1, 2], (seed, group[picks])
        for pick in picks:
            members = np.flatnonzero(group == group[pick])
            centre = features[members].mean(axis=0, keepdims=True)
            distance = cosine_distances(features[members], centre)[:, 0]
            assert distance[list(members).index(pick)] <= np.quantile(distance, 0.5)


def test_probcover_covers_the_large_clusters_and_skips_what_is_annotated() -> None:
    """Clusters of 30, 20 and 10 images and an outlying trio: at k = 3 the balls that cover most are
    one in each large cluster, whatever the scale; once cluster 0 is annotated, the trio comes in."""
    features = clusters([30, 20, 10, 3], [0, 1, 2, 3], [1.0, 2.0, 0.5, 1.0], seed=4)
    group = np.repeat([0, 1, 2, 3], [30, 20, 10, 3])
    for seed in range(3):
        picks = rank(make(features), 3, "probcover", seed=seed).order[:3]
        assert list(group[picks]) == [0, 1, 2], (seed, group[picks])
    annotated = features[:5]  # images like cluster 0's, already corrected
    picks = rank(make(features, labelled=annotated), 3, "probcover", seed=0).order[:3]
    assert sorted(group[picks]) == [1, 2, 3], group[picks]


def test_kcenter_picks_one_per_cluster_despite_scale() -> None:
    features = clusters([20, 5, 12], [0, 1, 2], [100.0, 0.01, 3.0])
    labels = np.repeat([0, 1, 2], [20, 5, 12])
    for seed in range(5):
        selected, _ = kcenter_greedy(features, 3, rng=np.random.default_rng(seed))
        assert sorted(labels[selected]) == [0, 1, 2]
    selected, _ = kcenter_greedy(features, 3)  # no rng: start from the point farthest from the mean
    assert sorted(labels[selected]) == [0, 1, 2]


@pytest.mark.parametrize("with_centres", [False, True])
def test_kcenter_min_distance_matches_brute_force(with_centres: bool) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, D)) * rng.uniform(0.1, 10, size=(60, 1))
    centres = rng.normal(size=(300, D)) if with_centres else None  # > one block of centres
    selected, min_dist = kcenter_greedy(features, 7, centres, rng)
    assert len(set(selected.tolist())) == 7
    references = features[selected] if centres is None else np.concatenate([features[selected], centres])
    np.testing.assert_allclose(min_dist, cosine_distances(features, references).min(axis=1), atol=1e-9)
    # greedy: every pick was the farthest point from what came before it
    for step in range(1, 7):
        before = features[selected[:step]]
        if centres is not None:
            before = np.concatenate([centres, before])
        dist = cosine_distances(features, before).min(axis=1)
        assert dist[selected[step]] == pytest.approx(dist.max())


def test_kcenter_never_starts_on_a_point_identical_to_a_centre() -> None:
    features = clusters([10, 10], [0, 1], [1.0, 5.0])
    for seed in range(10):
        selected, _ = kcenter_greedy(features, 1, features[:10] * 3.0, np.random.default_rng(seed))
        assert selected[0] >= 10


def test_kcenter_first_pick_is_seeded_or_farthest_from_mean() -> None:
    features = np.concatenate([clusters([30], [0], [1.0]), [[0.0, 0.0, 0.0, 5.0, 0, 0, 0, 0]]])
    firsts = {int(kcenter_greedy(features, 1, rng=np.random.default_rng(s))[0][0]) for s in range(20)}
    assert firsts == {int(np.random.default_rng(s).integers(31)) for s in range(20)} and len(firsts) > 5
    assert kcenter_greedy(features, 1)[0][0] == 30


def test_kcenter_edge_cases() -> None:
    features = np.zeros((4, D))
    features[1, 0] = 2.0
    selected, min_dist = kcenter_greedy(features, 10, rng=np.random.default_rng(0))  # zero rows, k > N
    assert sorted(selected.tolist()) == [0, 1, 2, 3] and np.all(np.isfinite(min_dist))
    np.testing.assert_array_equal(min_dist, 0.0)
    selected, min_dist = kcenter_greedy(np.ones((3, D)), 3)  # all identical: distinct picks anyway
    assert sorted(selected.tolist()) == [0, 1, 2]
    selected, min_dist = kcenter_greedy(np.empty((0, D)), 3, rng=np.random.default_rng(0))
    assert selected.shape == (0,) and min_dist.shape == (0,)
    with pytest.raises(ValueError, match="k must be"):
        kcenter_greedy(np.ones((3, D)), -1)


def test_kcenter_is_vectorised_enough_for_large_pools() -> None:
    features = np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32)
    selected, min_dist = kcenter_greedy(features, 100, rng=np.random.default_rng(0))
    assert len(np.unique(selected)) == 100 and min_dist.shape == (20000,)


def test_coreset_skips_the_cluster_already_annotated() -> None:
    features = clusters([15, 15, 15], [0, 1, 2], [1.0, 20.0, 0.5])
    labels = np.repeat([0, 1, 2], 15)
    labelled = clusters([4], [0], [7.0], seed=9)
    for seed in range(5):
        order = rank(make(features, labelled=labelled), 2, "coreset", seed=seed).order
        assert sorted(labels[order[:2]]) == [1, 2]
        selected, min_dist = kcenter_greedy(features, 2, labelled, np.random.default_rng(seed))
        np.testing.assert_array_equal(order[:2], selected)
        assert np.all(np.diff(min_dist[order[2:]]) <= 0)  # the rest: farthest from the core-set first


def hard_duplicates_case() -> tuple[Candidates, np.ndarray]:
    """The 10 most uncertain images are near-duplicates; two other uncertain clusters follow; then certain
    outliers in directions of their own, which pure diversity would pick."""
    features = np.concatenate([clusters([10, 8, 8], [0, 1, 2], [1.0, 4.0, 0.2]), clusters([26], [3], [1.0])])
    features[26:, 4:] += np.random.default_rng(5).normal(size=(26, D - 4)) * 3  # spread-out outliers
    labels = np.repeat([0, 1, 2, 3], [10, 8, 8, 26])
    uncertainty = np.concatenate(
        [
            np.linspace(1.0, 0.9, 10),
            np.linspace(0.8, 0.7, 8),
            np.linspace(0.6, 0.5, 8),
            np.linspace(0.1, 0, 26),
        ]
    )
    return make(features, uncertainty), labels


def test_hybrid_covers_the_uncertain_clusters_and_stays_in_the_pool() -> None:
    candidates, labels = hard_duplicates_case()
    n, k = len(labels), 3
    pool = set(np.argsort(-candidates.uncertainty, kind="stable")[: max(2 * k, -(-n // 2))].tolist())
    for seed in range(5):
        ranking = rank(candidates, k, "hybrid", seed=seed)
        core = ranking.order[:k]
        assert set(core.tolist()) <= pool
        assert sorted(labels[core]) == [0, 1, 2]
        rest = ranking.order[k:]
        # after the core-set: the rest of the pool, then the others, each by uncertainty
        assert set(rest[: len(pool) - k].tolist()) == pool - set(core.tolist())
        assert np.all(np.diff(candidates.uncertainty[rest[: len(pool) - k]]) <= 0)
        assert np.all(np.diff(candidates.uncertainty[rest[len(pool) - k :]]) <= 0)


def test_hybrid_beats_entropy_at_diversity() -> None:
    candidates, labels = hard_duplicates_case()
    entropy_core = rank(candidates, 3, "entropy").order[:3]
    hybrid_core = rank(candidates, 3, "hybrid").order[:3]
    assert len(set(labels[entropy_core])) == 1
    assert len(set(labels[hybrid_core])) == 3

    def spread(core: np.ndarray) -> float:
        dist = cosine_distances(candidates.features[core], candidates.features[core])
        return float(dist[np.triu_indices(len(core), 1)].min())

    assert spread(hybrid_core) > 0.5 > 0.1 > spread(entropy_core)


def test_hybrid_uses_labelled_features_as_centres() -> None:
    candidates, labels = hard_duplicates_case()
    labelled = clusters([3], [0], [2.0], seed=4)
    ranking = rank(make(candidates.features, candidates.uncertainty, labelled=labelled), 2, "hybrid")
    assert sorted(labels[ranking.order[:2]]) == [1, 2]


def test_instance_random_prefers_crowded_images() -> None:
    instances = np.array([50, 0] * 10)
    candidates = make(np.random.default_rng(0).normal(size=(20, D)), instances=instances)
    firsts = [rank(candidates, 1, "instance-random", seed=seed).order[0] for seed in range(200)]
    crowded_first = int(np.sum(instances[firsts] == 50))  # expected 196 of 200 (p = 510 / 520)
    assert crowded_first > 150


@pytest.mark.parametrize(
    ("budget", "n", "expected"),
    [
        ("5%", 100, 5),
        ("5%", 10, 1),  # 0.5 rounds up
        ("1%", 3, 1),  # at least one
        ("7%", 100, 7),  # no float rounding up to 8
        ("100%", 9, 9),
        ("12.5%", 8, 1),
        (" 12 ", 50, 12),
        ("12", 5, 5),
        (12, 50, 12),
        (12.0, 50, 12),
        (np.int64(3), 50, 3),
        (0.07, 100, 7),
        (0.5, 7, 4),
        ("0.25", 8, 2),
        ("5%", 0, 0),
        (4, 0, 0),
    ],
)
def test_budget_to_k(budget: str | float | int, n: int, expected: int) -> None:
    assert budget_to_k(budget, n) == expected


@pytest.mark.parametrize(
    "budget", ["abc", "-3", "0%", "150%", "", "%", "5%%", 0, -3, 1.5, 0.0, "nan", None, True]
)
def test_budget_to_k_rejects(budget: object) -> None:
    with pytest.raises(ValueError, match="invalid budget") as error:
        budget_to_k(budget, 10)  # type: ignore[arg-type]
    assert repr(budget) in str(error.value) and "\n" not in str(error.value)


def test_registry_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ValueError, match=r"unknown strategy 'nope'; known: coreset, count-strata, disagreement, entropy"
    ):
        get_strategy("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("random")(lambda c, k, rng: np.arange(len(c.task_ids)))
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))
    register_strategy("reversed")(lambda c, k, rng: np.arange(len(c.task_ids))[::-1])
    np.testing.assert_array_equal(rank(random_candidates(4), 1, "reversed").order, [3, 2, 1, 0])
    register_strategy("broken")(lambda c, k, rng: np.zeros(len(c.task_ids), int))
    with pytest.raises(RuntimeError, match="'broken' did not return a permutation"):
        rank(random_candidates(4), 1, "broken")
    with pytest.raises(ValueError, match="k must be"):
        rank(random_candidates(4), -1)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_rank_clusters_by_nearest_core_member(name: str) -> None:
    candidates = random_candidates(40, seed=2)
    ranking = rank(candidates, 5, name, seed=1)
    core = ranking.order[:5]
    assert ranking.clusters.shape == (40,)
    np.testing.assert_array_equal(ranking.clusters[core], np.arange(5))
    features = candidates.features.astype(np.float64)
    expected = cosine_distances(features, features[core]).argmin(axis=1)
    np.testing.assert_array_equal(ranking.clusters, expected)


def test_rank_clusters_without_core_set_and_with_duplicates() -> None:
    assert np.all(rank(random_candidates(6), 0, "entropy").clusters == -1)
    features = np.ones((4, D))  # identical images: each core member still heads its own cluster
    ranking = rank(make(features), 2, "entropy")
    np.testing.assert_array_equal(ranking.clusters[ranking.order[:2]], [0, 1])
    np.testing.assert_array_equal(ranking.clusters[ranking.order[2:]], [0, 0])


def test_candidates_validation() -> None:
    good = random_candidates(5)
    fields = {name: getattr(good, name) for name in good.__dataclass_fields__}
    bad_values = {
        "task_ids": (np.zeros((5, 1)), "task_ids must be 1-D"),
        "uncertainty": (np.zeros(4), r"uncertainty must have shape \(5,\)"),
        "instances": (np.zeros(6, int), r"instances must have shape \(5,\)"),
        "features": (np.zeros((4, D)), r"features must have shape \(5, D\)"),
        "labelled_features": (np.zeros((2, D + 1)), r"labelled_features must have shape \(M, 8\)"),
        "disagreement": (np.array([0, 1, np.inf, 0, 0]), r"disagreement must be finite with shape \(5,\)"),
        "flip_spread": (np.zeros(4), r"flip_spread must be finite with shape \(5,\)"),
    }
    for name, (value, message) in bad_values.items():
        with pytest.raises(ValueError, match=message):
            Candidates(**{**fields, name: value})
    with pytest.raises(ValueError, match="finite"):
        Candidates(**{**fields, "uncertainty": np.array([0, 1, np.nan, 0, 0])})
    with pytest.raises(ValueError, match="non-negative"):
        Candidates(**{**fields, "instances": np.array([0, 1, -2, 0, 0])})
    Candidates(**{**fields, "labelled_features": np.empty((0, 3))})  # nothing annotated yet: any width
    nothing = np.empty((0, D))
    empty = Candidates(np.empty(0, np.int64), np.empty(0), nothing, np.empty(0, int), nothing, np.empty(0))
    assert rank(empty, 3).order.shape == (0,)


def test_one_default_strategy_everywhere() -> None:
    """The study's winner is the default of the demo and of a new project's stored settings (rank)."""
    from activeseg.projectstate import Settings
    from orchestrator.cli import build_parser
    from orchestrator.demo.run import DemoSettings

    assert Settings().strategy == DemoSettings().strategy == strategies.DEFAULT_STRATEGY
    assert build_parser().parse_args(["demo"]).strategy == strategies.DEFAULT_STRATEGY
