"""Deep Embedded Clustering (Xie, Girshick & Farhadi, ICML 2016) as a scikit-learn estimator.

Three phases, all in :meth:`DEC.fit`:

1. **Autoencoder pretraining**: a fully connected encoder
   ``d -> hidden... -> latent`` and a mirrored decoder are trained to
   reconstruct the (standardised) input from a slightly noisy copy (a
   denoising autoencoder, MSE loss, Adam). Each epoch visits at most
   ``max_epoch_samples`` rows drawn at random, so the cost of pretraining
   does not grow past that with the data size. With more than
   ``max_fit_samples`` rows, the whole fit uses an evenly strided subsample
   (every k-th row, which keeps time series in order) and
   :meth:`DEC.predict` labels all rows afterwards: a few tens of thousands
   of windows describe the clusters as well as all of them.
2. **Initialisation**: k-means (``n_init`` restarts) on the codes
   themselves (``init="latent"``, default, the original DEC): the clusters
   start in the compressed space the autoencoder learned, not on the raw
   columns that k-means, GMM and UMAP + HDBSCAN see. Windowed behaviour
   features are many correlated columns (each feature at several window
   lengths), and the bottleneck keeps what they share. ``init="input"`` runs
   k-means on the inputs instead, each initial centre the mean code of one
   k-means cluster (the clusters then start as the k-means baseline's).
3. **Self-training**: soft assignments ``q_ij`` from a Student's t kernel
   (degree of freedom ``alpha``) between code ``z_i`` and centre ``mu_j``;
   every ``update_interval`` batches the target is re-computed as the
   sharpened distribution ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')``
   with soft cluster frequencies ``f_j = sum_i q_ij``, and the encoder, the
   decoder and the centres minimise ``KL(P || Q)`` plus
   ``reconstruction_weight`` times the reconstruction loss (IDEC: the
   autoencoder keeps the data's local structure while the clusters
   sharpen; 0 gives plain DEC). For time series (``fit(X,
   sequences=...)`` with ``temporal_window > 1``), ``q`` is first averaged
   over a centred window of consecutive rows of the same sequence, so the
   targets reward clusters that persist in time (behaviour lasts; a frame's
   cluster should agree with its neighbours'). It stops when fewer than ``tol`` of the
   hard labels change between two target updates, or after
   ``finetune_epochs`` passes.

The fit is deterministic for a given ``seed`` and thread count: torch and
numpy generators are seeded, deterministic algorithms are enforced during
the fit, and the thread count is fixed (``n_threads``) and restored after.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(c, 0.3, (100, 5)) for c in (-3, 0, 3)])
>>> model = DEC(n_clusters=3, hidden=(32,), latent=3, pretrain_epochs=20, seed=0).fit(X)
>>> model.predict(X).shape, model.predict_proba(X).shape
((300,), (300, 3))
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ethoscribe.errors import InputError


@contextlib.contextmanager
def _torch_settings(n_threads: int, deterministic: bool = True) -> Iterator[None]:
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, n_threads))
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _mlp(sizes: Sequence[int], last_activation: bool) -> Any:
    import torch.nn as nn

    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _soft_assign(z: Any, centers: Any, alpha: float) -> Any:
    import torch

    d2 = torch.cdist(z, centers).pow(2) if z.shape[0] > 0 else z.new_zeros((0, centers.shape[0]))
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: NDArray[np.float64]) -> NDArray[np.float64]:
    """DEC's sharpened target ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')``.

    Examples
    --------
    >>> p = target_distribution(np.array([[0.6, 0.4], [0.5, 0.5]]))
    >>> bool(p[0, 0] > 0.6), np.allclose(p.sum(1), 1)
    (True, True)
    """
    w = q**2 / q.sum(axis=0)
    return w / w.sum(axis=1, keepdims=True)


class DEC(BaseEstimator, ClusterMixin, TransformerMixin):
    """Deep Embedded Clustering.

    Parameters
    ----------
    n_clusters
        Number of clusters (deliberately more than the expected behaviours).
    hidden
        Hidden layer widths of the encoder (the decoder mirrors them).
    latent
        Width of the embedding.
    pretrain_epochs
        Autoencoder epochs (each of at most ``max_epoch_samples`` rows).
    finetune_epochs
        Maximum KL self-training epochs (each of at most ``max_epoch_samples`` rows).
    batch_size, lr
        Mini-batch size and Adam learning rate (both phases).
    alpha
        Degrees of freedom of the Student's t kernel.
    update_interval
        Batches between target-distribution updates.
    tol
        Stop self-training when fewer than this fraction of labels change.
    noise
        Standard deviation of the Gaussian input noise in pretraining.
    max_epoch_samples
        Rows visited per epoch (all rows when the data are smaller).
    max_fit_samples
        Most rows the fit uses (an evenly strided subsample beyond; the
        temporal window shrinks by the stride).
    n_init
        k-means restarts for the initial centres.
    init
        ``"latent"`` (default): k-means on the codes (the original DEC);
        ``"input"``: k-means on the input rows, each centre the mean code of
        its cluster. On the synthetic rig's windowed pose features the codes
        scored higher than the inputs (mean NMI and macro-F1 about +0.01
        over three model seeds on each of two sessions; the self-training
        that follows moved the labels little either way).
    reconstruction_weight
        Weight of the autoencoder's reconstruction loss kept during
        self-training (IDEC, Guo et al. 2017: their clustering-loss weight
        0.1 is a reconstruction weight of 10 here); 0 is plain DEC, whose
        self-training alone drifted away from the initial clusters and
        scored lower.
    temporal_window
        Rows over which soft assignments are averaged before sharpening
        (needs ``sequences`` in :meth:`fit`; 1: plain DEC).
    seed
        Seed of every random choice.
    n_threads
        Torch threads during fit/predict (``None``: 1; these small networks
        gain nothing from more threads on a busy CPU and one thread keeps the
        fit reproducible everywhere).

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, latent)
        Centres in the embedding.
    labels_ : ndarray (n_samples,)
        Cluster of each training row.
    n_features_in_ : int
    history_ : dict
        Losses per epoch, label-change fractions and timings.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        hidden: Sequence[int] = (256, 128),
        latent: int = 10,
        pretrain_epochs: int = 8,
        finetune_epochs: int = 4,
        batch_size: int = 512,
        lr: float = 2e-3,
        alpha: float = 1.0,
        update_interval: int = 100,
        tol: float = 0.001,
        noise: float = 0.1,
        max_epoch_samples: int = 20000,
        max_fit_samples: int = 30000,
        n_init: int = 10,
        init: str = "latent",
        reconstruction_weight: float = 10.0,
        temporal_window: int = 1,
        seed: int = 0,
        n_threads: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.hidden = hidden
        self.latent = latent
        self.pretrain_epochs = pretrain_epochs
        self.finetune_epochs = finetune_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.alpha = alpha
        self.update_interval = update_interval
        self.tol = tol
        self.noise = noise
        self.max_epoch_samples = max_epoch_samples
        self.max_fit_samples = max_fit_samples
        self.n_init = n_init
        self.init = init
        self.reconstruction_weight = reconstruction_weight
        self.temporal_window = temporal_window
        self.seed = seed
        self.n_threads = n_threads

    # ---------------------------------------------------------------- helpers
    def _threads(self) -> int:
        return int(self.n_threads) if self.n_threads else 1

    def _build(self, n_features: int) -> None:
        import torch
        import torch.nn as nn

        sizes = [n_features, *[int(h) for h in self.hidden], int(self.latent)]
        self.encoder_ = _mlp(sizes, last_activation=False)
        self.decoder_ = _mlp(sizes[::-1], last_activation=False)
        self._centers = nn.Parameter(torch.zeros(int(self.n_clusters), int(self.latent)))

    def _check_X(self, X: Any, fitting: bool = False) -> NDArray[np.float32]:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise InputError(f"DEC expects a 2D array (samples, features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise InputError("DEC input contains NaN or infinite values; impute or mask them first")
        if fitting and X.shape[0] < self.n_clusters:
            raise InputError(f"DEC needs at least n_clusters={self.n_clusters} samples, got {X.shape[0]}")
        if not fitting and X.shape[1] != self.n_features_in_:
            raise InputError(f"DEC was fitted on {self.n_features_in_} features, got {X.shape[1]}")
        return X

    def _encode(self, X: NDArray[np.float32], batch: int = 8192) -> NDArray[np.float32]:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, X.shape[0], batch):
                out.append(self.encoder_(torch.from_numpy(X[i : i + batch])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latent), np.float32)

    def _q(self, Z: NDArray[np.float32]) -> NDArray[np.float64]:
        import torch

        with torch.no_grad():
            q = _soft_assign(torch.from_numpy(Z), self._centers.detach(), float(self.alpha))
        return q.numpy().astype(np.float64)

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, sequences: Any = None) -> DEC:
        """Pretrain the autoencoder, initialise with k-means and self-train.

        ``sequences`` (optional, one id per row) says that rows are time
        series, in time order within each id (e.g. one id per animal); with
        ``temporal_window > 1`` the soft assignments are averaged over that
        many consecutive rows of the same sequence before the sharpened
        target is computed, so self-training favours clusters that last.
        """
        import torch
        from sklearn.cluster import KMeans

        X = self._check_X(X, fitting=True)
        n, d = X.shape
        seq = None if sequences is None else np.asarray(sequences)
        if seq is not None and seq.shape != (n,):
            raise InputError(f"sequences must have one id per row ({n}), got shape {seq.shape}")
        self.n_features_in_ = d
        X_all = X
        stride = max(1, -(-n // int(self.max_fit_samples)))
        if stride > 1:  # strided: time series stay in order
            X = np.ascontiguousarray(X[::stride])
            seq = None if seq is None else seq[::stride]
            n = X.shape[0]
        window = max(1, int(round(int(self.temporal_window) / stride)))
        history: dict[str, Any] = {"pretrain_loss": [], "kl_loss": [], "delta_label": []}
        t0 = time.perf_counter()
        with _torch_settings(self._threads()):
            torch.manual_seed(int(self.seed))
            gen = torch.Generator().manual_seed(int(self.seed))
            rng = np.random.default_rng(int(self.seed))
            self._build(d)
            Xt = torch.from_numpy(X)
            per_epoch = min(n, int(self.max_epoch_samples))
            bs = max(1, min(int(self.batch_size), n))

            # 1. autoencoder pretraining
            params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
            opt = torch.optim.Adam(params, lr=float(self.lr))
            for _ in range(int(self.pretrain_epochs)):
                idx = torch.from_numpy(rng.choice(n, per_epoch, replace=False)) if per_epoch < n else torch.randperm(n, generator=gen)
                total = 0.0
                for i in range(0, per_epoch, bs):
                    xb = Xt[idx[i : i + bs]]
                    noisy = xb + float(self.noise) * torch.randn(xb.shape, generator=gen) if self.noise else xb
                    loss = torch.nn.functional.mse_loss(self.decoder_(self.encoder_(noisy)), xb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * xb.shape[0]
                history["pretrain_loss"].append(total / per_epoch)
            t1 = time.perf_counter()

            # 2. k-means initialisation
            Z = self._encode(X)
            km = KMeans(n_clusters=int(self.n_clusters), n_init=int(self.n_init), random_state=int(self.seed))
            if self.init == "input":  # clusters of the inputs, centres = mean code of each
                lab0 = km.fit_predict(X)
                cent = np.stack([Z[lab0 == k].mean(0) if (lab0 == k).any() else Z[rng.integers(n)] for k in range(int(self.n_clusters))])
            elif self.init == "latent":
                cent = km.fit(Z).cluster_centers_
            else:
                raise ValueError(f"init must be 'input' or 'latent', not {self.init!r}")
            with torch.no_grad():
                self._centers.copy_(torch.from_numpy(cent.astype(np.float32)))
            labels = self._q(Z).argmax(1)
            t2 = time.perf_counter()

            # 3. KL self-training on sharpened targets
            opt = torch.optim.Adam(list(self.encoder_.parameters()) + list(self.decoder_.parameters()) + [self._centers], lr=float(self.lr))
            n_batches_epoch = max(1, -(-per_epoch // bs))
            max_batches = int(self.finetune_epochs) * n_batches_epoch
            step = 0
            P = None
            while step < max_batches:
                if step % int(self.update_interval) == 0:
                    q = self._q(self._encode(X))
                    P = torch.from_numpy(target_distribution(self._temporal(q, seq, window)).astype(np.float32))
                    new = q.argmax(1)
                    delta = float((new != labels).mean()) if step > 0 else 1.0
                    labels = new
                    if step > 0:
                        history["delta_label"].append(delta)
                        if delta < float(self.tol):
                            break
                    order = torch.from_numpy(rng.permutation(n))
                    pos = 0
                if pos + bs > n:
                    order = torch.from_numpy(rng.permutation(n))
                    pos = 0
                bi = order[pos : pos + bs]
                pos += bs
                zb = self.encoder_(Xt[bi])
                qb = _soft_assign(zb, self._centers, float(self.alpha))
                loss = torch.nn.functional.kl_div(qb.clamp_min(1e-12).log(), P[bi], reduction="batchmean")
                if self.reconstruction_weight > 0:  # IDEC: keep the autoencoder's local structure
                    loss = loss + float(self.reconstruction_weight) * torch.nn.functional.mse_loss(self.decoder_(zb), Xt[bi])
                opt.zero_grad()
                loss.backward()
                opt.step()
                history["kl_loss"].append(loss.item())
                step += 1
            q = self._q(self._encode(X_all))
        self.labels_ = q.argmax(1).astype(np.int64)
        self.cluster_centers_ = self._centers.detach().numpy().copy()
        history.update(
            pretrain_s=t1 - t0, kmeans_s=t2 - t1, finetune_s=time.perf_counter() - t2,
            finetune_batches=step, n_samples=n, stride=stride,
        )
        self.history_ = history
        return self

    def _temporal(self, q: NDArray[np.float64], seq: NDArray[Any] | None, w: int) -> NDArray[np.float64]:
        if seq is None or w <= 1:
            return q
        from scipy.ndimage import uniform_filter1d

        out = np.empty_like(q)
        bounds = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1], True])
        for s, e in zip(bounds[:-1], bounds[1:]):
            out[s:e] = uniform_filter1d(q[s:e], size=min(w, e - s), axis=0, mode="nearest")
        return out

    # -------------------------------------------------------------- inference
    def transform(self, X: Any) -> NDArray[np.float32]:
        """Embedding (latent codes) of each row."""
        check_is_fitted(self, "cluster_centers_")
        X = self._check_X(X)
        with _torch_settings(self._threads(), deterministic=False):
            return self._encode(X)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Soft assignment ``q`` of each row to each cluster (rows sum to 1)."""
        check_is_fitted(self, "cluster_centers_")
        X = self._check_X(X)
        with _torch_settings(self._threads(), deterministic=False):
            return self._q(self._encode(X))

    def predict(self, X: Any) -> NDArray[np.int64]:
        """Most likely cluster of each row."""
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> NDArray[np.int64]:
        """Fit and return the training labels."""
        return self.fit(X).labels_

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write parameters and learned weights to one file (atomically)."""
        import torch

        from ethoscribe.io.atomic import atomic_path

        check_is_fitted(self, "cluster_centers_")
        params = self.get_params()
        params["hidden"] = [int(h) for h in params["hidden"]]
        blob = {
            "format": "ethoscribe.DEC/1",
            "params": json.dumps(params),
            "n_features_in": int(self.n_features_in_),
            "encoder": self.encoder_.state_dict(),
            "decoder": self.decoder_.state_dict(),
            "centers": self._centers.detach().clone(),
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DEC:
        """Read a model written by :meth:`save`."""
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: DEC model file not found")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("format") != "ethoscribe.DEC/1":
                raise ValueError("not an ethoscribe DEC file")
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as a DEC model ({exc})") from None
        params = json.loads(blob["params"])
        params["hidden"] = tuple(params["hidden"])
        model = cls(**params)
        model.n_features_in_ = int(blob["n_features_in"])
        model._build(model.n_features_in_)
        model.encoder_.load_state_dict(blob["encoder"])
        model.decoder_.load_state_dict(blob["decoder"])
        with torch.no_grad():
            model._centers.copy_(blob["centers"])
        model.cluster_centers_ = model._centers.detach().numpy().copy()
        return model
