"""Fréchet distance between two Gaussians fitted to feature sets (FVD, FID and the like).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

All statistics are float64: with 400-d features, float32 covariances lose the digits that the difference
of large traces above needs. Covariances are unbiased (divided by N - 1), as TF-GAN's
frechet_classifier_distance (the original FVD code's) and pytorch-fid compute them.

tr((S1 S2)^(1/2)) is computed in the symmetric form tr((A S2 A)^(1/2)) with A = S1^(1/2), the one TF-GAN
uses, rather than scipy.linalg.sqrtm of the product. Why: S1 S2 is not symmetric, and with fewer samples
than dimensions (the usual case: 400-d I3D features of a few hundred clips) both covariances are singular,
so sqrtm of their product is ill-conditioned and can come back complex or non-finite, which is why
sqrtm-based code adds an offset to the diagonals and retries, biasing the result. A S2 A is symmetric
positive semi-definite and has the same eigenvalues as S1 S2 (eig(XY) = eig(YX) with X = A, Y = A S2),
so the trace is the sum of the square roots of its eigenvalues, which eigh computes stably for singular
matrices too; tiny negative eigenvalues from rounding are clipped to 0. No offset, no complex parts.
"""
from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D], both float64, of features [N, D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as FID/FVD report it."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    dims = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu2.shape != (dims,) or sigma1.shape != (dims, dims) or sigma2.shape != (dims, dims):
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}; "
                         f"covariances {sigma1.shape}, {sigma2.shape}")
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    covariance_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # The true distance is >= 0; identical sets can land a rounding error below it.
    return max(mean_term + covariance_term, 0.0)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) of symmetric PSD matrices, as tr((A sigma2 A)^(1/2)) with A = sigma1^(1/2)."""
    root1 = psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    inner = (inner + inner.T) / 2  # exactly symmetric, as eigvalsh assumes
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0.0, None)).sum())


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a symmetric PSD matrix (rounding's negative eigenvalues taken as 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
