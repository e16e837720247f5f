"""The public API: `vaejax.__all__`, its docstrings, and what importing the likelihoods costs.

References: the names `vaejax` exported before `__all__` existed (listed here), the package
docstring's own list, and `sys.modules` of a fresh interpreter.
"""

from __future__ import annotations

import inspect
import pydoc
import re
import subprocess
import sys

import pytest

import vaejax
from vaejax import kl, likelihoods

ELBO_MODULE = sys.modules["vaejax.elbo"]  # `vaejax.elbo` is the function, which shadows it

# Every name the package exported before it had an __all__: none may disappear.
PREVIOUSLY_EXPORTED = {
    "ElboTerms", "elbo", "iwae_bound", "reparameterize",
    "EquivalenceReport", "GradientComparison", "compare_gradients",
    "diagonal_gaussian_log_density", "kl_diagonal_gaussians", "kl_monte_carlo",
    "kl_standard_normal",
    "bce", "bernoulli_log_likelihood", "beta_from_sigma", "continuous_bernoulli_log_likelihood",
    "continuous_bernoulli_log_normalizer", "continuous_bernoulli_mean",
    "gaussian_log_likelihood", "gaussian_log_likelihood_from_log_sigma",
    "gaussian_log_likelihood_optimal_sigma", "mse", "nats_to_bits_per_dim", "optimal_sigma",
    "sigma_from_beta", "sse",
}
# A section header of a Google docstring and the indented lines under it.
SECTION = re.compile(r"^\s*(Args|Returns):\s*\n((?:[ \t]+\S.*\n?|[ \t]*\n)*)", re.M)
SHAPE = re.compile(r"\[[^\]\n]*\]")  # "[B]", "[...]", "[..., *event]", "[]"
HEAVY_MODULES = ("orbax", "tensorboardX", "matplotlib", "sklearn", "ml_collections")


def _public_functions():
    return [name for name in vaejax.__all__ if not inspect.isclass(getattr(vaejax, name))]


def test_all_lists_exactly_the_reexported_names_without_losing_any():
    assert len(vaejax.__all__) == len(set(vaejax.__all__)), "duplicates in __all__"
    assert PREVIOUSLY_EXPORTED <= set(vaejax.__all__)
    for name in vaejax.__all__:
        assert hasattr(vaejax, name), name
    # Re-exported means: defined in a vaejax submodule, not in the package itself.
    for name in vaejax.__all__:
        module = getattr(getattr(vaejax, name), "__module__", "")
        assert module.startswith("vaejax.") and module != "vaejax", (name, module)


def test_package_docstring_lists_every_public_name_one_a_line():
    listed = re.findall(r"^    ([A-Za-z_][A-Za-z0-9_]*)$", vaejax.__doc__, re.M)
    assert listed == vaejax.__all__
    for group in ("Likelihoods", "Loss views and converters", "KL divergences",
                  "ELBO and IWAE", "equivalence"):
        assert group in vaejax.__doc__, group
    assert ".md" not in vaejax.__doc__  # self-contained: no pointer to a side document
    # help(vaejax) renders the docstring and the public names.
    text = pydoc.render_doc(vaejax, renderer=pydoc.plaintext)
    assert "gaussian_log_likelihood" in text and "ELBO and IWAE" in text


@pytest.mark.parametrize("name", vaejax.__all__)
def test_every_public_name_has_a_docstring(name):
    doc = inspect.getdoc(getattr(vaejax, name))
    assert doc and len(doc.strip()) > 20, name


@pytest.mark.parametrize("name", _public_functions())
def test_every_public_function_states_a_shape_in_args_or_returns(name):
    doc = inspect.getdoc(getattr(vaejax, name)) + "\n"
    sections = {header: body for header, body in SECTION.findall(doc)}
    assert sections, f"{name}: no Args or Returns section"
    assert any(SHAPE.search(body) for body in sections.values()), (name, sections)


MODULE_FUNCTIONS = [
    (module.__name__, name)
    for module in (likelihoods, kl, ELBO_MODULE)
    for name, obj in vars(module).items()
    if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__
    and name != "checked"
]


@pytest.mark.parametrize("module,name", MODULE_FUNCTIONS)
def test_every_function_says_what_happens_under_jit_and_its_result_dtype(module, name):
    doc = inspect.getdoc(getattr(sys.modules[module], name))
    assert "Under jit:" in " ".join(doc.split()), name
    returns = doc.split("Returns:", 1)[1]
    # The result dtype: float32 (float64 ...) everywhere, the posterior's own for z.
    assert "float32" in returns or (name == "reparameterize" and "dtype" in returns), returns


def test_importing_the_likelihoods_pulls_in_no_heavy_dependency():
    # A fresh interpreter: what `import vaejax.likelihoods` (and so the package) loads.
    code = (
        "import sys, vaejax.likelihoods\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY_MODULES)!r})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "", result.stdout
