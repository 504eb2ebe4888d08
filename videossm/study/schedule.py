"""Balanced comparisons: choose which systems meet, on which item, and in which order.

With n systems and k videos per comparison, every comparison shows k(k-1)/2 pairs. The scheduler picks the
k-subset whose pairs have been shown least (ties at random), so every pair is shown about equally often; then
the least-shown item that has clips for all of them; then a uniformly random letter order.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter


class BalancedScheduler:
    def __init__(self, systems: list[str], k: int, rng: random.Random | None = None):
        if not 2 <= k <= len(systems):
            raise ValueError(f"k must be in [2, {len(systems)}] for {len(systems)} systems, got {k}")
        self.systems, self.k = list(systems), k
        self.rng = rng or random.SystemRandom()
        self.pair_counts: Counter = Counter()  # frozenset({a, b}) -> times shown together
        self.item_counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, item_id: str, systems: tuple[str, ...] | list[str]) -> None:
        with self._lock:
            self._record(item_id, systems)

    def _record(self, item_id: str, systems) -> None:
        self.item_counts[item_id] += 1
        for a, b in itertools.combinations(sorted(systems), 2):
            self.pair_counts[frozenset((a, b))] += 1

    def next(self, items: dict[str, set[str]]) -> tuple[str, list[str]]:
        """`items`: item id -> systems that have a clip for it. Returns (item id, systems in letter order)."""
        with self._lock:
            best, best_cost = [], None
            for subset in itertools.combinations(self.systems, self.k):
                if not any(set(subset) <= have for have in items.values()):
                    continue
                pairs = [self.pair_counts[frozenset(p)] for p in itertools.combinations(subset, 2)]
                cost = (sum(pairs), max(pairs))
                if best_cost is None or cost < best_cost:
                    best, best_cost = [subset], cost
                elif cost == best_cost:
                    best.append(subset)
            if not best:
                raise LookupError(f"no item in the pool has clips for {self.k} of the systems {self.systems}")
            subset = self.rng.choice(best)
            fitting = [i for i, have in items.items() if set(subset) <= have]
            least = min(self.item_counts[i] for i in fitting)
            item = self.rng.choice(sorted(i for i in fitting if self.item_counts[i] == least))
            order = list(subset)
            self.rng.shuffle(order)
            self._record(item, order)
            return item, order
