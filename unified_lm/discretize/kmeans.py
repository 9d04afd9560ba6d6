"""The ``kmeans`` discretizer: frame features -> nearest of K centroids.

Fitting samples frames (``FrameSampler``) and clusters them with one of two backends that
share one interface (``fit``, ``from_centroids``, ``assign``):

- ``faiss`` (default): ``faiss.Kmeans`` to fit, exact ``IndexFlatL2`` search to assign.
- ``sklearn``: ``MiniBatchKMeans`` with the reference recipe's settings to fit, its
  ``predict`` to assign.

Both keep only the centroids as state, so a tokenizer fitted with one backend assigns
with the other exactly as well.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from .base import DISCRETIZERS, extract_batch, in_batches
from .extractors import FeatureExtractor, build_features
from .tokenizer_recipe import KMeansConfig, TokenizerRecipe

logger = logging.getLogger("unified_lm.discretize")


class FrameSampler:
    """A uniform random sample of frames from a stream of utterances, in bounded memory.

    Every frame draws a key uniform in [0, 1): frames with key < ``fraction`` are
    candidates, and the ``max_frames`` candidates with the smallest keys are kept (bottom-k
    sampling), so the result is a uniform sample without replacement whatever the corpus
    size, and the same for the same seed and utterance order.
    """

    def __init__(self, fraction: float, max_frames: int, seed: int):
        self.fraction = fraction
        self.max_frames = max_frames
        self.rng = np.random.default_rng(seed)
        self._keys: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []
        self._held = 0
        self.seen = 0  # frames offered
        self.candidates = 0  # of those, drawn by the fraction (at most max_frames are kept)

    def add(self, feats: np.ndarray) -> None:
        keys = self.rng.random(len(feats))
        keep = keys < self.fraction
        self.seen += len(feats)
        self.candidates += int(keep.sum())
        self._keys.append(keys[keep])
        self._frames.append(feats[keep])
        self._held += int(keep.sum())
        if self._held > 2 * self.max_frames:
            self._shrink()

    def frames(self) -> np.ndarray:
        self._shrink()
        return self._frames[0] if self._frames else np.zeros((0, 0), np.float32)

    def _shrink(self) -> None:
        if not self._keys:
            return
        keys, frames = np.concatenate(self._keys), np.concatenate(self._frames)
        if len(keys) > self.max_frames:
            # Keys are continuous random floats: ties have probability zero.
            top = np.sort(np.argpartition(keys, self.max_frames)[: self.max_frames])
            keys, frames = keys[top], frames[top]
        self._keys, self._frames, self._held = [keys], [np.ascontiguousarray(frames, np.float32)], len(keys)


def _report_sample(sampler: FrameSampler, used: int, workdir: Path) -> None:
    """Says (and writes to ``kmeans_sample.json``) how many frames the k-means saw: the
    fraction asked for, or fewer when ``max_frames`` capped it. A cap on a fraction below 1
    is a warning (the fraction asked for was not used); with fraction 1, ``max_frames`` is
    the sample's size by design ("all frames, at most N") and the line is information."""
    report = {
        "frames_seen": sampler.seen, "frames_used": used, "share_used": used / max(sampler.seen, 1),
        "sample_fraction": sampler.fraction, "max_frames": sampler.max_frames, "capped": sampler.candidates > used,
    }  # fmt: skip
    (workdir / "kmeans_sample.json").write_text(json.dumps(report, indent=2) + "\n")
    line = f"k-means on {used:,} of {sampler.seen:,} frames ({100 * report['share_used']:.2f}%)"
    if report["capped"] and sampler.fraction < 1.0:
        logger.warning(
            "%s: kmeans.max_frames=%d capped the %g sample (%d frames drawn); raise it to use them all",
            line, sampler.max_frames, sampler.fraction, sampler.candidates,
        )
    else:
        logger.info("%s%s", line, f" (at most kmeans.max_frames={sampler.max_frames})" if report["capped"] else "")


KMEANS_BACKENDS: Registry[type] = Registry("k-means backend")


@KMEANS_BACKENDS.register("faiss")
class FaissKMeans:
    def __init__(self, centroids: np.ndarray):
        import faiss

        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self.index = faiss.IndexFlatL2(self.centroids.shape[1])
        self.index.add(self.centroids)

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> "FaissKMeans":
        return cls(centroids)

    @classmethod
    def fit(cls, frames: np.ndarray, cfg: KMeansConfig) -> "FaissKMeans":
        import faiss

        km = faiss.Kmeans(
            frames.shape[1],
            cfg.k,
            niter=cfg.niter,
            seed=cfg.seed,
            # Our sampler already chose the training frames; faiss must not subsample again.
            max_points_per_centroid=len(frames) // cfg.k + 1,
        )
        km.train(np.ascontiguousarray(frames, np.float32))
        return cls(km.centroids)

    def assign(self, feats: np.ndarray) -> np.ndarray:
        return self.index.search(np.ascontiguousarray(feats, np.float32), 1)[1][:, 0]


@KMEANS_BACKENDS.register("sklearn")
class SklearnKMeans:
    def __init__(self, model):
        self.model = model
        self.centroids = np.ascontiguousarray(model.cluster_centers_, np.float32)

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> "SklearnKMeans":
        from sklearn.cluster import MiniBatchKMeans

        centroids = np.ascontiguousarray(centroids, np.float32)
        # partial_fit sets up the fitted state predict() needs (thread count, input
        # width); its one mini-batch step may nudge near-duplicate centres, so the centres
        # are then pinned to exactly the given ones.
        model = MiniBatchKMeans(n_clusters=len(centroids), init=centroids, n_init=1)
        model.partial_fit(centroids)
        model.cluster_centers_ = centroids
        return cls(model)

    @classmethod
    def fit(cls, frames: np.ndarray, cfg: KMeansConfig) -> "SklearnKMeans":
        from sklearn.cluster import MiniBatchKMeans

        s = cfg.sklearn
        model = MiniBatchKMeans(
            n_clusters=cfg.k,
            init=s.init,
            max_iter=s.max_iter,
            batch_size=s.batch_size,
            tol=s.tol,
            max_no_improvement=s.max_no_improvement,
            n_init=s.n_init,
            reassignment_ratio=s.reassignment_ratio,
            random_state=cfg.seed,
            compute_labels=False,
        )
        model.fit(np.ascontiguousarray(frames, np.float32))
        return cls(model)

    def assign(self, feats: np.ndarray) -> np.ndarray:
        return self.model.predict(np.ascontiguousarray(feats, np.float32)).astype(np.int64)


def fit_kmeans(frames: np.ndarray, cfg: KMeansConfig):
    """Fits the configured backend on ``frames`` [n, dim]; needs at least ``k`` frames."""
    if len(frames) < cfg.k:
        raise ConfigError(
            f"only {len(frames)} frames were sampled for k={cfg.k} clusters; "
            "raise kmeans.sample_fraction or fit on more audio"
        )
    return KMEANS_BACKENDS.get(cfg.backend).fit(frames, cfg)


def to_numpy(feats: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    return np.ascontiguousarray(feats, np.float32)


@DISCRETIZERS.register("kmeans")
class KMeansQuantizer:
    """Frame features (fbank, MFCC, an SSL layer) -> nearest of ``k`` centroids."""

    CENTROIDS = "centroids.npy"
    codebooks = 1

    def __init__(self, features: FeatureExtractor, kmeans: FaissKMeans | SklearnKMeans):
        self.features = features
        self.kmeans = kmeans
        self.num_units = self.codebook_size = len(kmeans.centroids)
        self.frame_rate = features.frame_rate

    @classmethod
    def fit(
        cls,
        recipe: TokenizerRecipe,
        waveforms: Iterable[torch.Tensor],
        workdir: Path,
        dumped: Iterable[torch.Tensor] | None = None,
    ) -> "KMeansQuantizer":
        """Fits on the features of ``waveforms``, or on ``dumped`` features (a ``FeatureDump``)
        when given."""
        cfg = recipe.kmeans
        KMEANS_BACKENDS.get(cfg.backend)  # an unknown backend fails before hours of features
        features = build_features(cfg.features)
        if dumped is None:
            dumped = (feats for wavs in in_batches(waveforms) for feats in extract_batch(features, wavs))
        sampler = FrameSampler(cfg.sample_fraction, cfg.max_frames, cfg.seed)
        for feats in dumped:
            sampler.add(to_numpy(feats))
        frames = sampler.frames()
        _report_sample(sampler, len(frames), workdir)
        kmeans = fit_kmeans(frames, cfg)
        np.save(workdir / cls.CENTROIDS, kmeans.centroids)
        return cls(features, kmeans)

    @classmethod
    def load(cls, recipe: TokenizerRecipe, tokdir: Path) -> "KMeansQuantizer":
        cfg = recipe.kmeans
        features = build_features(cfg.features)
        path = tokdir / cls.CENTROIDS
        try:
            centroids = np.load(path)
        except (OSError, ValueError) as e:
            raise DataError(path, f"unreadable centroids: {e}") from None
        if centroids.shape != (cfg.k, features.dim):
            raise DataError(path, f"centroids have shape {centroids.shape}, the recipe needs ({cfg.k}, {features.dim})")
        return cls(features, KMEANS_BACKENDS.get(cfg.backend).from_centroids(centroids))

    def extract_features(self, wav: torch.Tensor) -> torch.Tensor:
        return self.features(wav)

    def extract_features_batch(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        return extract_batch(self.features, wavs)

    def assign(self, feats: torch.Tensor) -> np.ndarray:
        return self.kmeans.assign(to_numpy(feats))

    def state_files(self, tokdir: Path) -> dict[str, Path]:
        return {self.CENTROIDS: tokdir / self.CENTROIDS, **self.features.external_files()}
