"""vaejax: the VAE reconstruction term, MSE and BCE, made exact in JAX.

Likelihoods return nats per example with every constant; see DESIGN.md.
"""

from vaejax.elbo import ElboTerms, elbo, iwae_bound, reparameterize
from vaejax.equivalence import EquivalenceReport, GradientComparison, compare_gradients
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
