"""The study's statistics, laid out like the paper's Table 3 (rank-1 share and mean rank per system).

For each system: the share of its appearances at rank 1..k, its mean rank with a bootstrap confidence
interval (votes resampled with replacement; a fixed seed makes it reproducible), its vote count, and a
Bradley-Terry strength fitted with Hunter's MM algorithm to the pairwise outcomes each ranking implies
(a ranking of k videos implies k(k-1)/2 "i beat j" outcomes).

Attention checks: a check's own vote never counts, and every vote of a voter who failed a check is excluded.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SystemStats:
    name: str
    votes: int  # comparisons the system appeared in
    rank_shares: list[float]  # share of its appearances at rank 1, 2, ..., k
    mean_rank: float
    ci_low: float
    ci_high: float
    strength: float  # Bradley-Terry, strengths sum to 1


@dataclass
class StudyStats:
    systems: list[SystemStats]
    votes_counted: int
    voters_counted: int
    attention_checks: int = 0
    attention_failures: int = 0  # failed checks
    votes_excluded: int = 0  # ordinary votes of voters who failed a check
    confidence: float = 0.95
    wins: list[list[int]] = field(default_factory=list)  # implied pairwise wins [i][j]: i beat j

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def rank_matrix(rankings: list[list[str]], systems: list[str]) -> np.ndarray:
    """[V, S] rank (1 = best) of each system in each vote, NaN where it was not shown."""
    index = {s: i for i, s in enumerate(systems)}
    ranks = np.full((len(rankings), len(systems)), np.nan)  # [V, S]
    for v, ranking in enumerate(rankings):
        for r, s in enumerate(ranking, 1):
            ranks[v, index[s]] = r
    return ranks


def implied_wins(rankings: list[list[str]], systems: list[str]) -> np.ndarray:
    """[S, S] wins[i, j]: how often i was ranked above j."""
    index = {s: i for i, s in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))  # [S, S]
    for ranking in rankings:
        for better, worse in itertools.combinations(ranking, 2):
            wins[index[better], index[worse]] += 1
    return wins


def bradley_terry(wins: np.ndarray, prior: float = 0.0, tol: float = 1e-12, max_iter: int = 100_000) -> np.ndarray:
    """Bradley-Terry strengths p (summing to 1, P(i beats j) = p_i / (p_i + p_j)) by Hunter's (2004) MM:
    p_i <- W_i / sum_j n_ij / (p_i + p_j). `prior` adds that many virtual wins each way to every pair that
    met, which keeps p finite when a system never lost or never won. NaN for systems that never met another."""
    wins = np.asarray(wins, dtype=float)
    met = (wins + wins.T) > 0
    wins = wins + prior * met
    games = wins + wins.T  # [S, S]
    total_wins = wins.sum(axis=1)  # [S]
    active = games.sum(axis=1) > 0
    p = np.where(active, 1.0 / max(active.sum(), 1), np.nan)
    if not active.any():
        return p
    for _ in range(max_iter):
        pa = p[active]
        denom = (games[np.ix_(active, active)] / (pa[:, None] + pa[None, :])).sum(axis=1)
        new = total_wins[active] / denom
        new /= new.sum()
        change = np.abs(new - pa).max()
        p[active] = new
        if change < tol:
            break
    return p


def bootstrap_mean_rank(ranks: np.ndarray, samples: int, seed: int, confidence: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of each system's mean rank: resample the votes with replacement."""
    num_votes = ranks.shape[0]
    if num_votes == 0:
        nan = np.full(ranks.shape[1], np.nan)
        return nan, nan
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_votes, np.full(num_votes, 1.0 / num_votes), size=samples)  # [B, V]
    shown = ~np.isnan(ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ np.nan_to_num(ranks)) / (counts @ shown)  # [B, S]
    alpha = (1 - confidence) / 2
    return np.nanquantile(means, alpha, axis=0), np.nanquantile(means, 1 - alpha, axis=0)


def compute_stats(rankings: list[list[str]], systems: list[str], *, samples: int = 2000, seed: int = 0,
                  prior: float = 0.5, confidence: float = 0.95, **counts) -> StudyStats:
    """Statistics of counted rankings (each a list of system names, best first)."""
    for ranking in rankings:
        if len(set(ranking)) != len(ranking) or not set(ranking) <= set(systems):
            raise ValueError(f"ranking {ranking} must list distinct systems out of {systems}")
    k = max((len(r) for r in rankings), default=len(systems))
    ranks = rank_matrix(rankings, systems)
    low, high = bootstrap_mean_rank(ranks, samples, seed, confidence)
    wins = implied_wins(rankings, systems)
    strength = bradley_terry(wins, prior=prior)
    rows = []
    for i, name in enumerate(systems):
        column = ranks[:, i][~np.isnan(ranks[:, i])]
        n = len(column)
        shares = [float((column == r).sum() / n) if n else math.nan for r in range(1, k + 1)]
        rows.append(SystemStats(name, n, shares, float(column.mean()) if n else math.nan, float(low[i]),
                                float(high[i]), float(strength[i])))
    rows.sort(key=lambda s: (math.isnan(s.mean_rank), s.mean_rank))
    return StudyStats(rows, len(rankings), counts.pop("voters_counted", 0), confidence=confidence,
                      wins=wins.astype(int).tolist(), **counts)


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def format_table(stats: StudyStats) -> str:
    """Markdown, laid out like the paper's Table 3 (plus the other ranks, CIs, strengths and counts)."""
    k = max((len(s.rank_shares) for s in stats.systems), default=0)
    head = (["System", "Rank-1 (%) ↑"] + [f"Rank-{r} (%)" for r in range(2, k + 1)]
            + [f"Mean rank ↓ [{100 * stats.confidence:.0f}% CI]", "Bradley-Terry", "Votes"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in stats.systems:
        mean = "–" if math.isnan(s.mean_rank) else f"{s.mean_rank:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"
        bt = "–" if math.isnan(s.strength) else f"{s.strength:.3f}"
        lines.append("| " + " | ".join([s.name] + [_pct(x) for x in s.rank_shares] + [mean, bt, str(s.votes)]) + " |")
    lines.append("")
    lines.append(f"{stats.votes_counted} votes from {stats.voters_counted} voters counted. "
                 f"Attention checks: {stats.attention_checks}, failed: {stats.attention_failures} "
                 f"(those voters' {stats.votes_excluded} other votes excluded).")
    return "\n".join(lines)


def plot_stats(stats: StudyStats):
    """A matplotlib figure: stacked rank shares per system, and mean rank with its CI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [s.name for s in stats.systems]
    k = max((len(s.rank_shares) for s in stats.systems), default=0)
    fig, (ax_share, ax_rank) = plt.subplots(1, 2, figsize=(10, 0.6 * len(names) + 1.8))
    left = np.zeros(len(names))
    colors = plt.cm.viridis(np.linspace(0.15, 0.9, max(k, 1)))
    for r in range(k):
        share = np.array([100 * np.nan_to_num(s.rank_shares[r]) if r < len(s.rank_shares) else 0.0
                          for s in stats.systems])
        ax_share.barh(names, share, left=left, color=colors[r], label=f"rank {r + 1}")
        left += share
    ax_share.set_xlabel("share of appearances (%)")
    ax_share.invert_yaxis()
    ax_share.legend(loc="lower right", fontsize=8)
    means = np.array([s.mean_rank for s in stats.systems])
    err = np.array([[s.mean_rank - s.ci_low, s.ci_high - s.mean_rank] for s in stats.systems]).T
    ax_rank.errorbar(means, np.arange(len(names)), xerr=np.nan_to_num(err) if len(names) else None, fmt="o")
    ax_rank.set_yticks(np.arange(len(names)), names)
    ax_rank.invert_yaxis()
    ax_rank.set_xlabel(f"mean rank (lower is better), {100 * stats.confidence:.0f}% bootstrap CI")
    fig.suptitle(f"{stats.votes_counted} votes, {stats.voters_counted} voters")
    fig.tight_layout()
    return fig
