"""vaejax: the VAE reconstruction term, MSE and BCE, made exact in JAX.

Every likelihood returns nats per example with every constant, summed over the trailing
``event_ndims`` axes of the data (give ``event_ndims=3`` for [B, H, W, C] images; it is
required for data of rank > 2). bfloat16 and float16 inputs are computed and returned in
float32; float64 stays float64. Under ``jit`` invalid values give NaN instead of an
error; :func:`checked` turns that NaN into an error.

Public API (``vaejax.<name>``), by group:

Likelihoods (:mod:`vaejax.likelihoods`), log p(x | decoder output) in nats per example:

    gaussian_log_likelihood
    gaussian_log_likelihood_from_log_sigma
    gaussian_log_likelihood_optimal_sigma
    bernoulli_log_likelihood
    continuous_bernoulli_log_likelihood
    continuous_bernoulli_log_normalizer
    continuous_bernoulli_mean
    checked

Loss views and converters (:mod:`vaejax.likelihoods`):

    sse
    mse
    bce
    optimal_sigma
    beta_from_sigma
    sigma_from_beta
    nats_to_bits_per_dim

KL divergences (:mod:`vaejax.kl`):

    kl_standard_normal
    kl_diagonal_gaussians
    diagonal_gaussian_log_density
    kl_monte_carlo

ELBO and IWAE (:mod:`vaejax.elbo`):

    ElboTerms
    elbo
    iwae_bound
    reparameterize

Gradient estimators for the encoder (:mod:`vaejax.estimators`):

    GradientEstimate
    GradientSNR
    reparameterized_elbo
    stl_elbo
    reparameterized_iwae
    dreg_iwae
    gradient_snr

Gradient equivalence of -log N and MSE / SSE (:mod:`vaejax.equivalence`):

    EquivalenceReport
    GradientComparison
    compare_gradients

Modules not re-exported here: :mod:`vaejax.linear_gaussian` (the exact linear-Gaussian
VAE), :mod:`vaejax.heads` (the likelihood-head registry), :mod:`vaejax.models` (Flax
networks) and the training stack (:mod:`vaejax.trainer`, :mod:`vaejax.config`, ...), which
needs the ``[train]`` extra.

To add a module: import its names below and list them, in a group, both here and in
``__all__`` (tests/test_public_api.py checks that the two lists agree).
"""

from vaejax.elbo import ElboTerms, elbo, iwae_bound, reparameterize
from vaejax.equivalence import EquivalenceReport, GradientComparison, compare_gradients
from vaejax.estimators import (
    GradientEstimate,
    GradientSNR,
    dreg_iwae,
    gradient_snr,
    reparameterized_elbo,
    reparameterized_iwae,
    stl_elbo,
)
from vaejax.kl import (
    diagonal_gaussian_log_density,
    kl_diagonal_gaussians,
    kl_monte_carlo,
    kl_standard_normal,
)
from vaejax.likelihoods import (
    bce,
    bernoulli_log_likelihood,
    beta_from_sigma,
    checked,
    continuous_bernoulli_log_likelihood,
    continuous_bernoulli_log_normalizer,
    continuous_bernoulli_mean,
    gaussian_log_likelihood,
    gaussian_log_likelihood_from_log_sigma,
    gaussian_log_likelihood_optimal_sigma,
    mse,
    nats_to_bits_per_dim,
    optimal_sigma,
    sigma_from_beta,
    sse,
)

__version__ = "0.1.0"

__all__ = [
    # Likelihoods.
    "gaussian_log_likelihood",
    "gaussian_log_likelihood_from_log_sigma",
    "gaussian_log_likelihood_optimal_sigma",
    "bernoulli_log_likelihood",
    "continuous_bernoulli_log_likelihood",
    "continuous_bernoulli_log_normalizer",
    "continuous_bernoulli_mean",
    "checked",
    # Loss views and converters.
    "sse",
    "mse",
    "bce",
    "optimal_sigma",
    "beta_from_sigma",
    "sigma_from_beta",
    "nats_to_bits_per_dim",
    # KL divergences.
    "kl_standard_normal",
    "kl_diagonal_gaussians",
    "diagonal_gaussian_log_density",
    "kl_monte_carlo",
    # ELBO and IWAE.
    "ElboTerms",
    "elbo",
    "iwae_bound",
    "reparameterize",
    # Gradient estimators.
    "GradientEstimate",
    "GradientSNR",
    "reparameterized_elbo",
    "stl_elbo",
    "reparameterized_iwae",
    "dreg_iwae",
    "gradient_snr",
    # Gradient equivalence.
    "EquivalenceReport",
    "GradientComparison",
    "compare_gradients",
]
