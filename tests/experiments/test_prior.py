"""The prior-estimate study's EM (experiments/prior.py): it finds the shares pixels came at."""

import numpy as np
import pytest

from backend.errors import UserError
from experiments.prior import estimate_shares


def bayes_posteriors(prior: np.ndarray, shares: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Pixels drawn with class ``shares`` from three unit Gaussians (means 0, 2, 4), and the
    exact posteriors of a classifier that believes the classes come at ``prior``."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(len(shares), size=n, p=shares)
    x = rng.normal(2.0 * classes, 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - 2.0 * np.arange(len(shares))[None]) ** 2)
    joint = likelihood * prior
    return joint / joint.sum(axis=1, keepdims=True)


def test_em_recovers_the_shares_the_pixels_came_at():
    trained = np.array([1 / 3, 1 / 3, 1 / 3])  # SIAL's annotator: every class alike
    truth = np.array([0.6, 0.3, 0.1])
    posteriors = bayes_posteriors(trained, truth, 200_000)
    estimate = estimate_shares(posteriors, trained)
    assert np.abs(estimate - truth).max() < 0.01
    assert np.abs(posteriors.mean(axis=0) - truth).max() > 0.05  # the plain mean is biased to `trained`


def test_estimation_refuses_an_empty_sample():
    with pytest.raises(UserError, match="N × classes"):
        estimate_shares(np.zeros((0, 3)), np.full(3, 1 / 3))
