"""vaejax: the VAE reconstruction term, MSE and BCE, made exact in JAX.

Likelihoods return nats per example with every constant; see DESIGN.md.
"""

from vaejax.elbo import ElboTerms
from vaejax.elbo import elbo
from vaejax.elbo import iwae_bound
from vaejax.elbo import reparameterize
from vaejax.equivalence import EquivalenceReport
from vaejax.equivalence import GradientComparison
from vaejax.equivalence import compare_gradients
from vaejax.kl import diagonal_gaussian_log_density
from vaejax.kl import kl_diagonal_gaussians
from vaejax.kl import kl_monte_carlo
from vaejax.kl import kl_standard_normal
from vaejax.likelihoods import bce
from vaejax.likelihoods import bernoulli_log_likelihood
from vaejax.likelihoods import beta_from_sigma
from vaejax.likelihoods import continuous_bernoulli_log_likelihood
from vaejax.likelihoods import continuous_bernoulli_log_normalizer
from vaejax.likelihoods import continuous_bernoulli_mean
from vaejax.likelihoods import gaussian_log_likelihood
from vaejax.likelihoods import gaussian_log_likelihood_from_log_sigma
from vaejax.likelihoods import gaussian_log_likelihood_optimal_sigma
from vaejax.likelihoods import mse
from vaejax.likelihoods import nats_to_bits_per_dim
from vaejax.likelihoods import optimal_sigma
from vaejax.likelihoods import sigma_from_beta
from vaejax.likelihoods import sse

__version__ = "0.1.0"
