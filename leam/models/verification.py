"""Face-verification metrics over identity pairs of embedded analysis frames.

Why: before explaining a network we check that it recognises the faces of this data set (the LEAM maps of a
network that fails verification would explain noise). The embeddings come from
:func:`leam.embedding.embed_frames` (each model sees the frames through its own ``ModelSpec.input_warp``);
pairs are all same-identity pairs plus all (or a seeded sample of) different-identity pairs, and the
scores are cosine similarity and, for reference, Euclidean distance of the raw embeddings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from leam.errors import LeamError


def sample_pairs(identities, seed: int = 0, max_different: int = 0) -> pd.DataFrame:
    """Image pairs ``a < b`` (row indices): every same-identity pair and different-identity pairs.

    ``max_different`` = 0 keeps every different-identity pair; otherwise a seeded sample of that many
    distinct pairs. Columns: ``a, b, same``; sorted by (a, b).
    """
    labels = pd.factorize(np.asarray(identities))[0]
    n = len(labels)
    if n < 2:
        raise LeamError(f"need at least 2 images for verification pairs, got {n}")
    counts = np.bincount(labels)
    n_same = int((counts * (counts - 1) // 2).sum())
    n_different = n * (n - 1) // 2 - n_same
    if max_different <= 0 or max_different >= n_different:
        a, b = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        chosen = np.empty((0, 2), dtype=np.int64)
        while len(chosen) < max_different:  # oversample, drop same-identity and repeats, top up if short
            draw = rng.integers(0, n, size=(2 * max_different + 16, 2))
            draw = np.sort(draw, axis=1)
            draw = draw[labels[draw[:, 0]] != labels[draw[:, 1]]]
            chosen = np.unique(np.concatenate([chosen, draw]), axis=0)
        keep = rng.choice(len(chosen), size=max_different, replace=False)
        different = chosen[np.sort(keep)]
        same_a, same_b = np.triu_indices(n, k=1)
        is_same = labels[same_a] == labels[same_b]
        a = np.concatenate([same_a[is_same], different[:, 0]])
        b = np.concatenate([same_b[is_same], different[:, 1]])
    pairs = pd.DataFrame({"a": a.astype(np.int64), "b": b.astype(np.int64)})
    pairs["same"] = labels[pairs.a] == labels[pairs.b]
    return pairs.sort_values(["a", "b"], ignore_index=True)


def pair_scores(embeddings: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, Euclidean distance) of the raw embeddings for each pair, float64 (P,)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ea, eb = emb[a], emb[b]
    lengths = np.linalg.norm(emb, axis=1)  # once per image, not once per pair (the same row sums)
    norms = lengths[a] * lengths[b]
    cosine = (ea * eb).sum(axis=1) / np.maximum(norms, 1e-12)
    return cosine, np.linalg.norm(ea - eb, axis=1)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def verification_metrics(cosine: np.ndarray, distance: np.ndarray, same: np.ndarray,
                         threshold: float | None = None) -> dict:
    """AUC (cosine; Euclidean as -distance), mean cosines and, with a threshold, accuracy at ``distance < t``.

    Accuracy is over the pair set as given (different pairs usually dominate); balanced accuracy weights
    same and different pairs equally.
    """
    same = np.asarray(same, dtype=bool)
    result = {"pairs_same": int(same.sum()), "pairs_different": int((~same).sum()),
              "auc_cosine": roc_auc(cosine, same), "auc_euclidean": roc_auc(-np.asarray(distance), same),
              "mean_cosine_same": float(np.mean(cosine[same])) if same.any() else float("nan"),
              "mean_cosine_different": float(np.mean(cosine[~same])) if (~same).any() else float("nan")}
    if threshold is not None:
        predicted = np.asarray(distance) < threshold
        tpr = float(predicted[same].mean()) if same.any() else float("nan")
        tnr = float((~predicted[~same]).mean()) if (~same).any() else float("nan")
        result.update({"threshold": float(threshold), "accuracy": float((predicted == same).mean()),
                       "true_positive_rate": tpr, "true_negative_rate": tnr,
                       "balanced_accuracy": (tpr + tnr) / 2})
    return result


def evaluate(embeddings: np.ndarray, pairs: pd.DataFrame, genders, threshold: float | None = None) -> dict:
    """Metrics over all pairs plus, per gender, over the pairs whose two images both have that gender."""
    cosine, distance = pair_scores(embeddings, pairs.a.to_numpy(), pairs.b.to_numpy())
    same = pairs.same.to_numpy()
    result = verification_metrics(cosine, distance, same, threshold)
    genders = np.asarray(genders)
    ga, gb = genders[pairs.a.to_numpy()], genders[pairs.b.to_numpy()]
    for gender in sorted(set(genders.tolist()) - {"unknown"}):
        subset = (ga == gender) & (gb == gender)
        if subset.any():
            result[gender] = verification_metrics(cosine[subset], distance[subset], same[subset], threshold)
    return result
