"""The PyTorch peer: the same AEVB MLP VAE, loss and Adam as vaejax, for the benchmarks.

Model (AEVB appendix C, MNIST): encoder D -> H (tanh) -> (mean, log-variance) of Z each;
decoder Z -> H (tanh) -> D Bernoulli logits. Loss per batch: mean over examples of
``BCE_with_logits(logits, x).sum(D) + KL(q(z|x) || N(0, I))`` with one reparameterised
sample (L = 1) and the closed-form KL, exactly :meth:`vaejax.trainer.Trainer.member_loss`
for ``likelihood="bernoulli"``, ``beta=1``, ``weight_decay=0``. Adam with PyTorch's
defaults, which are optax's (b1 0.9, b2 0.999, eps 1e-8 outside the square root).
:func:`from_flax` copies a vaejax parameter tree in (Flax kernels are [in, out], PyTorch
weights [out, in]) so both sides start from the same weights.

Also the gradient-equivalence sweep written with ``torch.func`` (vmap + grad), the peer
of :func:`vaejax.equivalence.compare_gradients`. This module imports torch: load it only
where torch is installed (``pip install .[bench]``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class MlpVae(nn.Module):
    """AEVB's MLP VAE with a Bernoulli decoder."""

    def __init__(self, num_dims: int, hidden: int, latent: int):
        super().__init__()
        self.encoder_hidden = nn.Linear(num_dims, hidden)
        self.encoder_mean = nn.Linear(hidden, latent)
        self.encoder_log_var = nn.Linear(hidden, latent)
        self.decoder_hidden = nn.Linear(latent, hidden)
        self.decoder_out = nn.Linear(hidden, num_dims)

    def loss(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Batch-mean negative ELBO of x [B, D] with standard-normal noise eps [B, Z]."""
        h = torch.tanh(self.encoder_hidden(x))
        mean, log_var = self.encoder_mean(h), self.encoder_log_var(h)
        z = mean + torch.exp(0.5 * log_var) * eps
        logits = self.decoder_out(torch.tanh(self.decoder_hidden(z)))
        recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = -0.5 * (1.0 + log_var - mean.square() - log_var.exp()).sum(-1)
        return -(recon - kl).mean()


def from_flax(params, num_dims: int, hidden: int, latent: int) -> MlpVae:
    """An :class:`MlpVae` holding the weights of a vaejax ``VAE`` parameter tree."""
    model = MlpVae(num_dims, hidden, latent)
    tree = params["params"]
    pairs = {
        model.encoder_hidden: tree["encoder"]["hidden"],
        model.encoder_mean: tree["encoder"]["mean"],
        model.encoder_log_var: tree["encoder"]["log_var"],
        model.decoder_hidden: tree["decoder"]["hidden"],
        model.decoder_out: tree["decoder"]["out"],
    }
    with torch.no_grad():
        for layer, leaf in pairs.items():
            layer.weight.copy_(torch.from_numpy(np.asarray(leaf["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(leaf["bias"]).copy()))
    return model


class TorchTrainer:
    """Adam on :class:`MlpVae`; ``epoch(data)`` runs every full batch of a shuffled epoch.

    ``compile=True`` wraps the loss (forward and, through AOTAutograd, backward) and the
    optimiser step in ``torch.compile`` (default inductor backend).
    """

    def __init__(self, model: MlpVae, batch_size: int, *, learning_rate: float = 1e-3,
                 compile: bool = False, seed: int = 0):
        self.model, self.batch_size = model, batch_size
        self.latent = model.encoder_mean.out_features
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self._loss = torch.compile(model.loss) if compile else model.loss
        self._update = torch.compile(self.optimizer.step) if compile else self.optimizer.step

    def step(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(x.shape[0], self.latent, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=False)
        loss = self._loss(x, eps)
        loss.backward()
        self._update()
        return loss.detach()

    def epoch(self, data: torch.Tensor) -> torch.Tensor:
        """One pass over ``data`` [N, D] in a random order (full batches): the losses."""
        count = data.shape[0] // self.batch_size
        order = torch.randperm(data.shape[0], generator=self.generator)[: count * self.batch_size]
        batches = data[order].view(count, self.batch_size, -1)
        return torch.stack([self.step(batch) for batch in batches])


# --------------------------------------------------------------------------- equivalence


class MlpDecoder(nn.Module):
    """vaejax's ``Decoder`` with a Gaussian head: Z -> H (tanh) -> D mean."""

    def __init__(self, latent: int, hidden: int, num_dims: int):
        super().__init__()
        self.hidden = nn.Linear(latent, hidden)
        self.out = nn.Linear(hidden, num_dims)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(z)))


class LinearDecoder(nn.Module):
    """mean = z @ W, W [Z, D] (the decoder of the README's tour)."""

    def __init__(self, weight: np.ndarray):
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(np.array(weight, dtype=np.float32)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight


def decoder_from_flax(params, latent: int, hidden: int, num_dims: int) -> MlpDecoder:
    """An :class:`MlpDecoder` with the weights of a vaejax ``Decoder`` parameter tree."""
    model = MlpDecoder(latent, hidden, num_dims)
    tree = params["params"]
    with torch.no_grad():
        for layer, leaf in ((model.hidden, tree["hidden"]), (model.out, tree["out"])):
            layer.weight.copy_(torch.from_numpy(np.asarray(leaf["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(leaf["bias"]).copy()))
    return model


def compare_gradients(model: nn.Module, latents: torch.Tensor, x: torch.Tensor,
                      sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
    """The computation of :func:`vaejax.equivalence.compare_gradients` with torch.func.

    grad(-mean_b log N(x; f(z), sigma^2 I)) for every sigma [S] and latent sample [L, B, Z]
    (vmap over both, as vaejax does), the reference gradients of MSE, SSE and SSE/2 per
    sample, and per (sigma, sample) the ratio of norms, cosine and relative error against
    ``factor * grad(reference)`` over all parameters. Returns {name: [S, L]} tensors.
    """
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters()}
    num_dims = x.shape[-1]

    def mean_of(p, z):
        return functional_call(model, p, (z,))

    def nll(p, z, sigma):
        sse = (x - mean_of(p, z)).square().sum(-1)
        log_n = -num_dims * _HALF_LOG_2PI - num_dims * torch.log(sigma) - sse / (2 * sigma**2)
        return -log_n.mean()

    references = {
        "mse": (lambda p, z: (x - mean_of(p, z)).square().mean(-1).mean(),
                lambda s: num_dims / (2 * s**2)),
        "sse": (lambda p, z: (x - mean_of(p, z)).square().sum(-1).mean(),
                lambda s: 1 / (2 * s**2)),
        "sse_half": (lambda p, z: 0.5 * (x - mean_of(p, z)).square().sum(-1).mean(),
                     lambda s: 1 / s**2),
    }
    ref_grads = {name: vmap(grad(loss), in_dims=(None, 0))(params, latents)
                 for name, (loss, _) in references.items()}

    def per_sigma(sigma):
        nll_grads = vmap(grad(nll), in_dims=(None, 0, None))(params, latents, sigma)  # [L, ...]
        out = {}
        for name, (_, factor_fn) in references.items():
            factor = factor_fn(sigma)
            dot = nll_sq = ref_sq = residual_sq = 0.0
            for key, g_nll in nll_grads.items():
                g_ref = ref_grads[name][key]
                dims = tuple(range(1, g_nll.ndim))
                dot = dot + (g_nll * g_ref).sum(dims)
                nll_sq = nll_sq + g_nll.square().sum(dims)
                ref_sq = ref_sq + g_ref.square().sum(dims)
                residual_sq = residual_sq + (g_nll - factor * g_ref).square().sum(dims)
            nll_norm, ref_norm = nll_sq.sqrt(), ref_sq.sqrt()
            out[f"{name}_ratio"] = nll_norm / ref_norm
            out[f"{name}_cosine"] = dot / (nll_norm * ref_norm)
            out[f"{name}_relative_error"] = residual_sq.sqrt() / nll_norm
        return out

    return vmap(per_sigma)(sigmas)
