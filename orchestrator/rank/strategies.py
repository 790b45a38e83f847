"""Ranking strategies: which unannotated images annotators should correct first.

Every strategy returns a full order of the candidates; the first ``k`` are the core-set sent for
correction, the rest are the queue after it. Pure numpy, so the active-learning loop can rank
without a GPU, torch or a Label Studio server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from math import ceil

import numpy as np

#: with cells split at distance peaks, no ranking beat random picks on two collections (DSB2018's
#: 256x256 and 520x696 fields), and random images cost the fewest corrections: docs/results.md
DEFAULT_STRATEGY = "random"
#: strategies that read ``Candidates.disagreement`` (the loop computes it only for them)
NEEDS_DISAGREEMENT = frozenset({"disagreement"})
#: strategies that read ``Candidates.flip_spread`` (scoring predicts each image 4 times only for them)
NEEDS_FLIPS = frozenset({"tta"})
#: strategies measured on a trained nnU-Net's scores: ``rank`` refuses them before pretraining rather
#: than rank by the pseudo-labels' own confidence, which the study never measured for them
NEEDS_MODEL = NEEDS_DISAGREEMENT | NEEDS_FLIPS | {"entropy", "count-strata"}
_CENTRE_BLOCK = 256  # centres per matrix product, so N x M distances never sit in memory at once


@dataclass(frozen=True, eq=False)
class Candidates:
    """The unannotated images to rank, and what the current model says about them."""

    task_ids: np.ndarray  # (N,) int64
    uncertainty: np.ndarray  # (N,) float, higher = model less sure (not necessarily in [0, 1])
    features: np.ndarray  # (N, D) float32, one vector per image (e.g. pooled encoder activations)
    instances: np.ndarray  # (N,) int, predicted instance (cell) count per image
    labelled_features: np.ndarray  # (M, D) features of already annotated images: existing coreset centres
    #: (N,) in [0, 1]: how much the model's instances disagree with the image's pseudo-label
    #: (1 - mSA of one against the other); None where no model and pseudo-label are both at hand
    disagreement: np.ndarray | None = None
    #: (N,) >= 0: how much the model's predictions of the image flipped (left-right, up-down, both)
    #: disagree, over the predicted foreground; None unless a strategy needs it (NEEDS_FLIPS)
    flip_spread: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.task_ids) != 1:
            raise ValueError(f"task_ids must be 1-D, got shape {np.shape(self.task_ids)}")
        n = len(self.task_ids)
        for name in ("uncertainty", "instances"):
            shape = np.shape(getattr(self, name))
            if shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like task_ids, got {shape}")
        if np.ndim(self.features) != 2 or np.shape(self.features)[0] != n:
            raise ValueError(f"features must have shape ({n}, D), got {np.shape(self.features)}")
        d = np.shape(self.features)[1]
        labelled = np.shape(self.labelled_features)
        if len(labelled) != 2 or (labelled[0] > 0 and labelled[1] != d):
            raise ValueError(f"labelled_features must have shape (M, {d}) like features, got {labelled}")
        if not (np.all(np.isfinite(self.uncertainty)) and np.all(np.isfinite(self.features))):
            raise ValueError("uncertainty and features must be finite (no NaN or inf)")
        if np.any(np.asarray(self.instances) < 0):
            raise ValueError("instances must be non-negative counts")
        for name in ("disagreement", "flip_spread"):
            values = getattr(self, name)
            if values is not None and (np.shape(values) != (n,) or not np.all(np.isfinite(values))):
                raise ValueError(f"{name} must be finite with shape ({n},), got {np.shape(values)}")


@dataclass(frozen=True, eq=False)
class Ranking:
    order: np.ndarray  # (N,) permutation of range(N), most informative first; core-set = order[:k]
    clusters: np.ndarray  # (N,) core-set cluster id per candidate, indexed like the candidates (-1 if k == 0)
    strategy: str
    k: int  # core-set size actually used: min(requested k, N)


StrategyFn = Callable[[Candidates, int, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, StrategyFn] = {}


def register_strategy(name: str) -> Callable[[StrategyFn], StrategyFn]:
    """Decorator adding a strategy under ``name``; reusing a name is a mistake, not an override."""

    def add(fn: StrategyFn) -> StrategyFn:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = fn
        return fn

    return add


def get_strategy(name: str) -> StrategyFn:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None


def _normalise(features: np.ndarray) -> np.ndarray:
    """Unit rows in float64; zero rows stay zero, so they are at cosine distance 1 from everything else."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _distance_to(unit: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosine distance of every unit row to one unit vector, clipped at 0 against rounding."""
    return np.maximum(1.0 - unit @ vector, 0.0)


def _first_pick(unit: np.ndarray, rng: np.random.Generator | None) -> int:
    """With nothing annotated: a seeded random point, or without a generator the farthest from the mean."""
    if rng is not None:
        return int(rng.integers(len(unit)))
    mean = unit.mean(axis=0)
    norm = np.linalg.norm(mean)
    return int(np.argmax(_distance_to(unit, mean / norm if norm > 0 else mean)))


def kcenter_greedy(
    features: np.ndarray,
    k: int,
    centres: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sener & Savarese k-center greedy under cosine distance: each pick is the point farthest from
    everything chosen so far (and from ``centres``), so the picks cover the feature space.

    Cosine, because pooled activations differ in scale with image brightness and cell count, not content.
    Returns the picks in order and every point's final distance to the nearest pick or centre
    (0 for picks; inf if there is neither a pick nor a centre).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    unit = _normalise(features)
    n = len(unit)
    k = min(k, n)
    min_dist = np.full(n, np.inf)
    has_centres = centres is not None and len(centres) > 0
    if has_centres:
        unit_centres = _normalise(centres)
        for start in range(0, len(unit_centres), _CENTRE_BLOCK):
            block = unit_centres[start : start + _CENTRE_BLOCK]
            min_dist = np.minimum(min_dist, np.maximum(1.0 - unit @ block.T, 0.0).min(axis=1))
    selected = np.empty(k, dtype=np.int64)
    for step in range(k):
        pick = int(np.argmax(min_dist)) if step or has_centres else _first_pick(unit, rng)
        selected[step] = pick
        min_dist = np.minimum(min_dist, _distance_to(unit, unit[pick]))
        min_dist[pick] = -1.0  # never picked twice, even when every remaining distance is 0
    min_dist[selected] = 0.0
    return selected, min_dist


def budget_to_k(budget: str | float | int, n: int) -> int:
    """Core-set size from an annotation budget: a count ("12", 12), a percentage ("5%") or a fraction (0.05).

    A fraction or percentage rounds up, to at least 1 when there are candidates; a count is capped at ``n``.
    """
    if n < 0:
        raise ValueError(f"number of candidates must be >= 0, got {n}")
    bad = ValueError(
        f"invalid budget {budget!r}: use a count (12), a percentage ('5%') or a fraction in (0, 1)"
    )
    text = str(budget).strip()  # str() of a float is its shortest decimal, so 0.07 stays exactly 7/100
    percent = isinstance(budget, str) and text.endswith("%")
    try:
        value = Fraction(text.removesuffix("%") if percent else text)
    except ValueError:
        raise bad from None
    if percent and 0 < value <= 100:
        fraction = value / 100
    elif not percent and 0 < value < 1:
        fraction = value
    elif not percent and value >= 1 and value.denominator == 1:
        return min(int(value), n)
    else:
        raise bad
    return min(n, max(1, ceil(fraction * n))) if n else 0


def _by_uncertainty(candidates: Candidates) -> np.ndarray:
    return np.argsort(-np.asarray(candidates.uncertainty, dtype=np.float64), kind="stable")


@register_strategy("random")
def random_order(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(candidates.task_ids))


@register_strategy("instance-random")
def instance_random(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """Random, weighted by predicted cell count + 1: images full of cells teach more per annotation,
    and this cheap baseline is the one active-learning studies find hard to beat."""
    n = len(candidates.task_ids)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    weights = np.asarray(candidates.instances, dtype=np.float64) + 1.0
    return rng.choice(n, n, replace=False, p=weights / weights.sum())


@register_strategy("entropy")
def entropy(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """Least sure first; ties keep candidate order."""
    return _by_uncertainty(candidates)


@register_strategy("coreset")
def coreset(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy from the already annotated images; the rest farthest-from-the-core-set first."""
    selected, min_dist = kcenter_greedy(candidates.features, k, candidates.labelled_features, rng)
    rest = np.setdiff1d(np.arange(len(min_dist)), selected)
    return np.concatenate([selected, rest[np.argsort(-min_dist[rest], kind="stable")]])


@register_strategy("hybrid")
def hybrid(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy inside the most uncertain half (at least 2k images).

    Pure uncertainty picks near-duplicates from one hard cluster; pure diversity picks outliers and
    empty images the model already handles. Covering the uncertain pool gets both, as in
    uncertainty-then-diversity pipelines such as BADGE. After the core-set: the rest of the pool,
    then everything else, each by uncertainty.
    """
    by_uncertainty = _by_uncertainty(candidates)
    n = len(by_uncertainty)
    pool = by_uncertainty[: min(n, max(2 * k, ceil(n / 2)))]
    picked, _ = kcenter_greedy(candidates.features[pool], k, candidates.labelled_features, rng)
    rest_of_pool = np.delete(pool, picked)  # pool is in uncertainty order, and np.delete keeps it
    return np.concatenate([pool[picked], rest_of_pool, by_uncertainty[len(pool) :]])


@register_strategy("disagreement")
def disagreement(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """Where the model and the pseudo-label disagree most first: there the teacher is probably
    wrong, so a correction changes the most labels (and the model learnt something else there)."""
    if candidates.disagreement is None:
        raise ValueError("the disagreement strategy needs a trained model's instances and pseudo-labels")
    return np.argsort(-np.asarray(candidates.disagreement, dtype=np.float64), kind="stable")


@register_strategy("tta")
def tta(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """Test-time-augmentation disagreement first: where the model's answer changes when the image is
    flipped, it has not learnt the cells there, whatever its softmax confidence says."""
    if candidates.flip_spread is None:
        raise ValueError("the tta strategy needs a trained model's flip spread (scored with flips)")
    return np.argsort(-np.asarray(candidates.flip_spread, dtype=np.float64), kind="stable")


@register_strategy("count-strata")
def count_strata(candidates: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
    """Entropy within cell-count strata: the pool sorted by predicted cell count and cut into k
    strata of equal size, and from each its least sure image. Plain entropy tends to pick the
    densest images (many cells to correct, one kind of image); this keeps its uncertainty but
    spreads the core-set from sparse to crowded fields. After the core-set, the rest by entropy."""
    n = len(candidates.task_ids)
    if n == 0 or k == 0:
        return _by_uncertainty(candidates)
    uncertainty = np.asarray(candidates.uncertainty, dtype=np.float64)
    by_count = np.argsort(np.asarray(candidates.instances), kind="stable")
    picked = np.array(
        [s[np.argmax(uncertainty[s])] for s in np.array_split(by_count, min(k, n))], dtype=np.int64
    )
    picked = picked[np.argsort(-uncertainty[picked], kind="stable")]
    order = _by_uncertainty(candidates)
    return np.concatenate([picked, order[~np.isin(order, picked)]])


def _kmeans(unit: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 5) -> np.ndarray:
    """Cluster of every row: the best of ``restarts`` k-means runs (least total cosine distance to
    the centres); one run can merge two groups and split another."""
    best, best_cost = np.zeros(len(unit), dtype=np.int64), np.inf
    for _ in range(restarts):
        labels, cost = _kmeans_once(unit, k, rng)
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def _kmeans_once(
    unit: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 50
) -> tuple[np.ndarray, float]:
    """Lloyd's k-means under cosine distance, k-means++ seeding: (cluster per row, total distance)."""
    n = len(unit)
    centre = np.empty((k, unit.shape[1]))
    centre[0] = unit[int(rng.integers(n))]
    dist = _distance_to(unit, centre[0])
    for c in range(1, k):
        total = dist.sum()
        centre[c] = unit[int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))]
        dist = np.minimum(dist, _distance_to(unit, centre[c]))
    labels = np.full(n, -1)
    for _ in range(rounds):
        new = np.argmax(unit @ centre.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(centre)
        np.add.at(sums, labels, unit)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centre = np.where(norms > 0, sums / np.where(norms > 0, norms, 1.0), centre)  # empty: kept
    return labels, float(np.sum(1.0 - np.max(unit @ centre.T, axis=1)))


def _distance_blocks(unit: np.ndarray, others: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, cosine distances of the next rows of ``unit`` to every row of ``others``), a block
    of rows at a time, so N x M distances never sit in memory at once."""
    for start in range(0, len(unit), _CENTRE_BLOCK):
        yield start, np.maximum(1.0 - unit[start : start + _CENTRE_BLOCK] @ others.T, 0.0)


def _typicality(unit: np.ndarray, neighbours: int) -> np.ndarray:
    """1 / mean cosine distance to the ``neighbours`` nearest other rows (all 1 for a single row)."""
    n = len(unit)
    m = min(neighbours, n - 1)
    typicality = np.ones(n)
    for start, block in _distance_blocks(unit, unit) if m else ():
        nearest = np.partition(block, m, axis=1)[:, : m + 1]  # itself (0) and its m nearest
        typicality[start : start + len(block)] = 1.0 / (nearest.sum(axis=1) / m + 1e-12)
    return typicality


@register_strategy("typiclust")
def typiclust(candidates: Candidates, k: int, rng: np.random.Generator, neighbours: int = 20) -> np.ndarray:
    """TypiClust (Hacohen et al. 2022), the low-budget winner: k clusters of the features, and from
    each of the largest clusters its most typical image (the densest: nearest to its neighbours in
    the cluster).
    At tiny budgets representative images teach more than uncertain outliers. After the core-set,
    the rest by typicality."""
    n = len(candidates.task_ids)
    if n == 0 or k == 0:
        return rng.permutation(n)
    unit = _normalise(candidates.features)
    clusters = _kmeans(unit, k, rng)
    sizes = np.bincount(clusters, minlength=k)
    picked = []
    for c in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(clusters == c)
        if len(members):
            picked.append(int(members[np.argmax(_typicality(unit[members], neighbours))]))
    typicality = _typicality(unit, neighbours)
    rest = np.setdiff1d(np.arange(n), picked)
    rest = rest[np.argsort(-typicality[rest], kind="stable")]
    return np.concatenate([np.array(picked, dtype=np.int64), rest])


def _nearest_other_cluster(unit: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cosine distance of every row to the nearest row of another cluster (inf with one cluster)."""
    nearest = np.full(len(unit), np.inf)
    for start, block in _distance_blocks(unit, unit):
        block[clusters[start : start + _CENTRE_BLOCK, None] == clusters[None, :]] = np.inf
        nearest[start : start + len(block)] = block.min(axis=1)
    return nearest


def _within(unit: np.ndarray, others: np.ndarray, radius: float) -> np.ndarray:
    """(N, M) bool: which rows of ``others`` lie within ``radius`` (cosine distance) of each row."""
    inside = np.zeros((len(unit), len(others)), dtype=bool)
    for start, block in _distance_blocks(unit, others):
        inside[start : start + len(block)] = block <= radius
    return inside


@register_strategy("probcover")
def probcover(candidates: Candidates, k: int, rng: np.random.Generator, purity: float = 0.95) -> np.ndarray:
    """ProbCover (Yehuda et al. 2022), TypiClust's successor at tiny budgets: balls of radius delta
    around every image, and greedily the image whose ball covers the most images no pick (nor an
    annotated image) covers yet. Delta is the largest radius at which ``purity`` of the balls stay
    inside one k-means cluster of the features, so a ball stands for images alike. After the
    core-set (or once everything is covered), the rest densest first."""
    n = len(candidates.task_ids)
    if n <= 1 or k == 0:
        return rng.permutation(n)
    unit = _normalise(candidates.features)
    clusters = _kmeans(unit, min(max(k, 2), n), rng)
    delta = float(np.quantile(_nearest_other_cluster(unit, clusters), 1.0 - purity))
    if not np.isfinite(delta):  # one cluster only (identical features): every ball covers everything
        delta = 2.0
    ball = _within(unit, unit, delta)  # ball[i, j]: image j is in image i's ball
    labelled = _normalise(candidates.labelled_features)
    covered = _within(unit, labelled, delta).any(axis=1) if len(labelled) else np.zeros(n, dtype=bool)
    gain = ball[:, ~covered].sum(axis=1)
    picked: list[int] = []
    while len(picked) < k and gain.max() > 0:
        best = int(np.argmax(gain))
        newly = ball[best] & ~covered
        covered |= newly
        gain -= ball[:, newly].sum(axis=1)
        picked.append(best)
    density = ball.sum(axis=1)
    rest = np.setdiff1d(np.arange(n), picked)
    rest = rest[np.argsort(-density[rest], kind="stable")]
    return np.concatenate([np.array(picked, dtype=np.int64), rest])


def rank(candidates: Candidates, k: int, strategy: str = DEFAULT_STRATEGY, seed: int = 0) -> Ranking:
    """Order the candidates with ``strategy`` and group each one with its nearest core-set member,
    so an annotator's correction of a core image can be read as standing for its cluster."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = len(candidates.task_ids)
    k = min(k, n)
    order = np.asarray(get_strategy(strategy)(candidates, k, np.random.default_rng(seed)))
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise RuntimeError(f"strategy {strategy!r} did not return a permutation of range({n})")
    unit = _normalise(candidates.features)
    clusters = np.full(n, -1, dtype=np.int64)
    nearest = np.full(n, np.inf)
    for cluster, member in enumerate(order[:k]):
        dist = _distance_to(unit, unit[member])
        closer = dist < nearest  # strict: ties go to the earlier core-set member
        nearest[closer] = dist[closer]
        clusters[closer] = cluster
    clusters[order[:k]] = np.arange(k)  # duplicates (and zero rows) of a member still get their own cluster
    return Ranking(order=order.astype(np.int64), clusters=clusters, strategy=strategy, k=k)
