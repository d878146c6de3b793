"""Per-feature attributions of a LightGBM score by decision path, looked up per leaf.

A row's raw score is the sum of one leaf value per tree. On the way from a tree's
root to the row's leaf, each split moves the expected output from that of the
parent node to that of the child the row takes. That move is credited to the
split's feature. Summed over trees, these credits plus the sum of the root
expectations equal the raw score exactly (the path method of treeinterpreter and
of XGBoost's approximate contributions).

The credits depend only on the leaf a row reaches in each tree, so they are
computed once per leaf when the model loads. Explaining a row then costs one
leaf prediction and a sum of table rows, a fraction of what LightGBM's SHAP
contributions of a single row cost (``bench/scoring.py`` measures both).
"""

from __future__ import annotations

from typing import Any, Sequence

import lightgbm
import numpy as np


class PathAttribution:
    """Leaf tables of a booster: credits of each leaf's path, by feature."""

    def __init__(self, booster: lightgbm.Booster) -> None:
        self.booster = booster
        dump = booster.dump_model()
        self.features = len(dump["feature_names"])
        tables: list[np.ndarray] = []
        roots: list[float] = []
        for tree in dump["tree_info"]:
            table = np.zeros((int(tree["num_leaves"]), self.features))
            roots.append(_expected(tree["tree_structure"]))
            _credit(tree["tree_structure"], np.zeros(self.features), table)
            tables.append(table)
        self.offsets = np.cumsum([0] + [len(table) for table in tables[:-1]]).astype(np.int64)
        self.table = np.vstack(tables)
        self.expected = float(sum(roots))  # the raw score before any split

    def contributions(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
        """Return one row of per-feature credits per input row (raw score = credits + ``expected``)."""
        matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.features)
        leaves = self.booster.predict(matrix, pred_leaf=True, num_threads=1).astype(np.int64)
        leaves = leaves.reshape(len(rows), len(self.offsets))
        return self.table[leaves + self.offsets].sum(axis=1)


def _expected(node: dict[str, Any]) -> float:
    """Return the count-weighted mean of the leaf values under ``node``."""
    if "leaf_index" in node:
        return float(node["leaf_value"])
    left, right = node["left_child"], node["right_child"]
    left_count, right_count = _count(left), _count(right)
    total = left_count + right_count
    if total == 0:
        return (_expected(left) + _expected(right)) / 2.0
    return (_expected(left) * left_count + _expected(right) * right_count) / total


def _count(node: dict[str, Any]) -> int:
    return int(node.get("leaf_count", node.get("internal_count", 0)))


def _credit(node: dict[str, Any], path: np.ndarray, table: np.ndarray) -> None:
    """Fill ``table`` with the credits of every leaf under ``node``, ``path`` being those above it."""
    if "leaf_index" in node:
        table[int(node["leaf_index"])] = path
        return
    parent_value = _expected(node)
    feature = int(node["split_feature"])
    for child in (node["left_child"], node["right_child"]):
        step = path.copy()
        step[feature] += _expected(child) - parent_value
        _credit(child, step, table)
