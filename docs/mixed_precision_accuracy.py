"""Accuracy of the log-likelihoods on bfloat16 / float16 inputs (README, "Mixed precision").

    .venv/bin/python docs/mixed_precision_accuracy.py

64 examples of D = 784: x and the Gaussian mean uniform in [0, 1], sigma = 0.1; logits
N(0, 3^2). For each input dtype: the output dtype, and the largest relative error against
float32 on the same (already rounded) inputs, and against float32 on the original inputs
(what is left is the rounding of the inputs themselves).
"""

import warnings

import jax.numpy as jnp
import numpy as np

from vaejax import likelihoods as lik

warnings.simplefilter("ignore")  # the grey-level Bernoulli warning: expected here
rng = np.random.default_rng(0)
B, D = 64, 784
x = rng.uniform(size=(B, D)).astype(np.float32)
mean = rng.uniform(size=(B, D)).astype(np.float32)
logits = (3.0 * rng.normal(size=(B, D))).astype(np.float32)
cases = {
    "gaussian": (lambda x, p: lik.gaussian_log_likelihood(x, p, 0.1, event_ndims=1), mean),
    "bernoulli": (lambda x, p: lik.bernoulli_log_likelihood(x, p, event_ndims=1), logits),
    "continuous_bernoulli": (
        lambda x, p: lik.continuous_bernoulli_log_likelihood(x, p, event_ndims=1), logits),
}


def relative(got, reference) -> float:
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(got - reference) / np.abs(reference)))


print(f"{'likelihood':<22}{'input':<10}{'output':<10}{'vs f32 same inputs':>20}"
      f"{'vs f32 original':>18}")
for name, (fn, param) in cases.items():
    exact = fn(jnp.asarray(x), jnp.asarray(param))
    for dtype in (jnp.bfloat16, jnp.float16):
        x_low, p_low = jnp.asarray(x).astype(dtype), jnp.asarray(param).astype(dtype)
        got = fn(x_low, p_low)
        same = fn(x_low.astype(jnp.float32), p_low.astype(jnp.float32))
        print(f"{name:<22}{jnp.dtype(dtype).name:<10}{got.dtype.name:<10}"
              f"{relative(got, same):>20.2e}{relative(got, exact):>18.2e}")
