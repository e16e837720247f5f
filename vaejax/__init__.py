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
    laplace_log_likelihood
    laplace_log_likelihood_from_log_scale
    laplace_log_likelihood_optimal_scale
    logistic_log_likelihood
    logistic_log_likelihood_from_log_scale
    beta_log_likelihood
    huber_log_likelihood
    huber_log_normalizer
    checked

Likelihoods of k-level discrete data (:mod:`vaejax.discretized`), exact: bits/dim without
dequantisation:

    discretized_gaussian_log_likelihood
    discretized_gaussian_log_likelihood_from_log_scale
    discretized_logistic_log_likelihood
    discretized_logistic_log_likelihood_from_log_scale
    discretized_logistic_mixture_log_likelihood
    categorical_log_likelihood
    discretized_mean
    discretized_logistic_mixture_mean
    categorical_mean
    quantize
    to_levels

Loss views and converters (:mod:`vaejax.likelihoods`):

    sse
    mse
    bce
    mae
    sae
    huber
    optimal_sigma
    optimal_laplace_scale
    soft_clip_log_scale
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

Gradient equivalence of -log N and MSE / SSE, -log Laplace and MAE / SAE
(:mod:`vaejax.equivalence`):

    EquivalenceReport
    GradientComparison
    compare_gradients
    LaplaceEquivalenceReport
    compare_laplace_gradients
    compare_loss_gradients

Modules not re-exported here: :mod:`vaejax.linear_gaussian` (the exact linear-Gaussian
VAE), :mod:`vaejax.heads` (the likelihood-head registry), :mod:`vaejax.models` (Flax
networks) and the training stack (:mod:`vaejax.trainer`, :mod:`vaejax.config`, ...), which
needs the ``[train]`` extra.

To add a module: import its names below and list them, in a group, both here and in
``__all__`` (tests/test_public_api.py checks that the two lists agree).
"""

from vaejax.discretized import (
    categorical_log_likelihood,
    categorical_mean,
    discretized_gaussian_log_likelihood,
    discretized_gaussian_log_likelihood_from_log_scale,
    discretized_logistic_log_likelihood,
    discretized_logistic_log_likelihood_from_log_scale,
    discretized_logistic_mixture_log_likelihood,
    discretized_logistic_mixture_mean,
    discretized_mean,
    quantize,
    to_levels,
)
from vaejax.elbo import ElboTerms, elbo, iwae_bound, reparameterize
from vaejax.equivalence import (
    EquivalenceReport,
    GradientComparison,
    LaplaceEquivalenceReport,
    compare_gradients,
    compare_laplace_gradients,
    compare_loss_gradients,
)
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
    beta_log_likelihood,
    checked,
    continuous_bernoulli_log_likelihood,
    continuous_bernoulli_log_normalizer,
    continuous_bernoulli_mean,
    gaussian_log_likelihood,
    gaussian_log_likelihood_from_log_sigma,
    gaussian_log_likelihood_optimal_sigma,
    huber,
    huber_log_likelihood,
    huber_log_normalizer,
    laplace_log_likelihood,
    laplace_log_likelihood_from_log_scale,
    laplace_log_likelihood_optimal_scale,
    logistic_log_likelihood,
    logistic_log_likelihood_from_log_scale,
    mae,
    mse,
    nats_to_bits_per_dim,
    optimal_laplace_scale,
    optimal_sigma,
    sae,
    sigma_from_beta,
    soft_clip_log_scale,
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
    "laplace_log_likelihood",
    "laplace_log_likelihood_from_log_scale",
    "laplace_log_likelihood_optimal_scale",
    "logistic_log_likelihood",
    "logistic_log_likelihood_from_log_scale",
    "beta_log_likelihood",
    "huber_log_likelihood",
    "huber_log_normalizer",
    "checked",
    # Discrete data.
    "discretized_gaussian_log_likelihood",
    "discretized_gaussian_log_likelihood_from_log_scale",
    "discretized_logistic_log_likelihood",
    "discretized_logistic_log_likelihood_from_log_scale",
    "discretized_logistic_mixture_log_likelihood",
    "categorical_log_likelihood",
    "discretized_mean",
    "discretized_logistic_mixture_mean",
    "categorical_mean",
    "quantize",
    "to_levels",
    # Loss views and converters.
    "sse",
    "mse",
    "bce",
    "mae",
    "sae",
    "huber",
    "optimal_sigma",
    "optimal_laplace_scale",
    "soft_clip_log_scale",
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
    "LaplaceEquivalenceReport",
    "compare_laplace_gradients",
    "compare_loss_gradients",
]
