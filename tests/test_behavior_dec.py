"""DEC: recovers well-separated clusters, is deterministic with a seed, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from ethoscribe.behavior.dec import DEC, target_distribution
from ethoscribe.errors import InputError


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=1200, n_features=12, centers=5, cluster_std=1.0, random_state=3)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _ = blobs
    return DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=15, finetune_epochs=5, seed=0).fit(X)


def test_recovers_separated_clusters(blobs, fitted):
    X, y = blobs
    assert adjusted_rand_score(y, fitted.labels_) > 0.9
    assert adjusted_rand_score(y, fitted.predict(X)) > 0.9
    assert fitted.cluster_centers_.shape == (5, 5)
    assert fitted.transform(X).shape == (len(X), 5)


def test_proba_rows_sum_to_one(blobs, fitted):
    q = fitted.predict_proba(blobs[0][:50])
    assert q.shape == (50, 5)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    assert np.array_equal(q.argmax(1), fitted.predict(blobs[0][:50]))


def test_deterministic_with_seed(blobs, fitted):
    X, _ = blobs
    again = DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=15, finetune_epochs=5, seed=0).fit(X)
    assert np.array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.cluster_centers_, fitted.cluster_centers_)
    other = DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=15, finetune_epochs=5, seed=1).fit(X)
    assert not np.array_equal(other.cluster_centers_, fitted.cluster_centers_)


def test_save_load_round_trip(tmp_path, blobs, fitted):
    X, _ = blobs
    path = fitted.save(tmp_path / "dec.pt")
    loaded = DEC.load(path)
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), rtol=1e-6)
    assert loaded.get_params() == {**fitted.get_params(), "hidden": tuple(fitted.hidden)}


def test_bad_input_is_a_clear_error(fitted):
    with pytest.raises(InputError, match="NaN"):
        DEC(n_clusters=2).fit(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(InputError, match="at least n_clusters"):
        DEC(n_clusters=10).fit(np.zeros((3, 2)))
    with pytest.raises(InputError, match="features"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(InputError):
        DEC.load("/nonexistent/dec.pt")


def test_target_distribution_sharpens():
    q = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    p = target_distribution(q)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 0] > q[0, 0] and p[1, 1] > q[1, 1]


def test_temporal_self_training_on_sequences(blobs):
    X, y = blobs
    order = np.argsort(y, kind="stable")  # runs of one cluster, as behaviour bouts
    Xs, ys = X[order], y[order]
    seq = np.repeat([0, 1], len(ys) // 2)
    m = DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=15, finetune_epochs=5, temporal_window=9, seed=0)
    m.fit(Xs, sequences=seq)
    assert adjusted_rand_score(ys, m.labels_) > 0.9
    with pytest.raises(InputError, match="one id per row"):
        DEC(n_clusters=5, temporal_window=3).fit(Xs, sequences=seq[:10])


def test_large_inputs_fit_on_a_strided_subsample(blobs):
    X, y = blobs
    m = DEC(n_clusters=5, hidden=(32,), latent=5, pretrain_epochs=10, finetune_epochs=2, max_fit_samples=400, seed=0).fit(X)
    assert m.history_["stride"] == 3 and m.history_["n_samples"] == 400
    assert m.labels_.shape == (len(X),) and adjusted_rand_score(y, m.labels_) > 0.9


def test_default_initialises_by_kmeans_on_the_codes(blobs):
    """The default clusters the autoencoder's codes (original DEC), not the raw inputs as the k-means baseline does."""
    X, _ = blobs
    m = DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=5, finetune_epochs=0, seed=0).fit(X)
    km = KMeans(n_clusters=5, n_init=10, random_state=0).fit(m.transform(X))
    np.testing.assert_allclose(m.cluster_centers_, km.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_input_initialisation_and_plain_dec(blobs):
    X, y = blobs
    m = DEC(n_clusters=5, hidden=(64, 32), latent=5, pretrain_epochs=15, finetune_epochs=3, init="input",
            reconstruction_weight=0.0, seed=0).fit(X)
    assert adjusted_rand_score(y, m.labels_) > 0.8
    with pytest.raises(ValueError, match="init"):
        DEC(n_clusters=5, init="random", pretrain_epochs=1).fit(X)
