"""The engine (vaejax.trainer): population == separate runs, blocks, hooks, checkpoints and
resumption in fit, schedules, uniform sampling with subsets, masked latent sizes, wake-sleep,
the in-graph non-finite guard, and no retracing.

Runs are tiny (smoke config: hidden 16, latent 2) on 'synthetic' (D = 16, 900 training
examples, 18 batches of 50 per epoch). References are independent computations: a member
of a population against a population of one, one block against many, a resumed fit
against an uninterrupted one, an optax schedule against two runs with the rates set by hand.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_close, make_config, member

from vaejax import config as config_lib
from vaejax import trainer as trainer_lib
from vaejax.checkpoints import Checkpointer

STEPS = 900 // 50  # steps per epoch on 'synthetic' at the smoke batch size


@pytest.fixture(scope="module", autouse=True)
def _cache(compilation_cache):
    yield


def _build(synthetic, **overrides):
    config = make_config(data__dataset="synthetic", **overrides)
    return trainer_lib.build(config, synthetic)


def _run(trainer, members, data, stop, state=None, blocks=1):
    """Trains from the state's step to ``stop`` in ``blocks`` calls of the jitted run."""
    state = trainer.jit.init(members) if state is None else state
    edges = np.linspace(int(state.step[0]), stop, blocks + 1).astype(int)
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        state, block = trainer.jit.run(state, data, members, jnp.int32(start), jnp.int32(stop))
        assert np.all(np.asarray(block.first_bad_step) < 0)
    return state


# --------------------------------------------------------------------------- population


POPULATIONS = {
    "sigma_seed": dict(population__sigma=(0.05, 0.1, 0.3), population__seed=(0, 1, 2)),
    "learning_rate": dict(population__sigma=(0.05, 0.1, 0.3), population__seed=(0, 1, 2),
                          population__learning_rate=(1e-3, 3e-3, 1e-2)),
    "beta_learning_rate": dict(population__beta=(0.5, 1.0, 2.0), population__seed=(2, 0, 1),
                               population__learning_rate=(1e-2, 1e-3, 3e-3)),
}


def _single(overrides, m):
    """Overrides of a population of one equal to member m (config.seed stays: it seeds
    the data)."""
    single = {}
    for name, values in overrides.items():
        field = name.removeprefix("population__")
        key = {"sigma": "model__sigma", "beta": "train__beta",
               "learning_rate": "train__learning_rate"}.get(field, name)
        single[key] = (values[m],) if field == "seed" else values[m]
    return single


@pytest.mark.parametrize("case", sorted(POPULATIONS))
def test_population_member_equals_separate_run(synthetic, case):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, **POPULATIONS[case])
    population = _run(trainer, members, data, 3 * STEPS)
    assert population.step.tolist() == [3 * STEPS] * 3
    for m in range(3):
        single_trainer, single_members = _build(synthetic, **_single(POPULATIONS[case], m))
        assert single_trainer == trainer  # same static set-up: the same compiled programs
        single = _run(single_trainer, single_members, data, 3 * STEPS)
        assert single.step.shape == (1,)
        assert_trees_close(member(population.params, m), member(single.params, 0), rtol=2e-6,
                           label=f"{case} member {m}: ")
        assert_trees_close(member(population.opt_state, m), member(single.opt_state, 0),
                           rtol=2e-5, label=f"{case} member {m} opt_state: ")
    kernels = np.asarray(population.params["params"]["decoder"]["out"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1], rtol=1e-3)  # not vacuous
    assert not np.allclose(kernels[1], kernels[2], rtol=1e-3)


def test_member_seed_defaults_to_the_run_seed(synthetic):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, population__sigma=(0.05, 0.1, 0.3),
                              population__seed=(7, 0, 3))
    population = _run(trainer, members, data, STEPS)
    plain_trainer, plain_members = _build(synthetic)
    plain = _run(plain_trainer, plain_members, data, STEPS)
    assert_trees_close(member(population.params, 1), member(plain.params, 0), rtol=2e-6)


def test_blocks_of_any_length_give_the_same_run_and_trace_once(synthetic):
    """One block, blocks across epoch boundaries and uneven blocks: bit-identical states,
    from ONE compilation (start and stop are traced)."""
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, population__sigma=(0.05, 0.1, 0.3))
    traces = []
    original = trainer.run

    @functools.wraps(original)
    def counted(*args):
        traces.append(1)  # runs only while tracing
        return original(*args)

    run = jax.jit(counted, donate_argnums=(0,))
    states = []
    for edges in ([0, 2 * STEPS], [0, 5, STEPS + 7, 2 * STEPS], [0, STEPS, 2 * STEPS]):
        state = trainer.jit.init(members)
        for start, stop in zip(edges[:-1], edges[1:], strict=True):
            state, _ = run(state, data, members, jnp.int32(start), jnp.int32(stop))
        states.append(state)
    assert len(traces) == 1
    for state in states[1:]:
        assert_trees_close(state, states[0], rtol=0)


def test_epoch_batches_are_the_permutations_of_the_data_seed(synthetic):
    """Every example once per epoch (the remainder dropped), in the order of
    permutation(fold_in(key(seed), epoch)): a probe records each step's batch."""
    trainer, members = _build(synthetic, train__batch_size=100, seed=4)
    data = jnp.asarray(np.arange(900, dtype=np.float32)[:, None] * np.ones((1, 16)) / 900)
    seen = []
    order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(4), 1), 900))
    for t in range(9, 18):  # epoch 1
        batch = trainer._step_batch(data, jnp.int32(t), trainer._epoch_order(data,
                                                                             jnp.int32(t)),
                                    members)
        seen.append(np.round(np.asarray(batch[:, 0]) * 900).astype(int))
    seen = np.concatenate(seen)
    np.testing.assert_array_equal(seen, order[:900])
    assert len(set(seen.tolist())) == 900


# --------------------------------------------------------------------------- schedules


def test_decay_schedule_equals_changing_the_rate_by_hand(synthetic):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, train__decay_epochs=(1,), train__decay_factor=0.1)
    assert trainer.decay_steps == (STEPS,)
    scheduled = _run(trainer, members, data, 2 * STEPS)
    plain, _ = _build(synthetic)
    by_hand = _run(plain, members, data, STEPS)
    by_hand = _run(plain, members.replace(learning_rate=members.learning_rate * 0.1), data,
                   2 * STEPS, state=by_hand)  # steps STEPS .. 2 STEPS - 1 at the lower rate
    assert_trees_close(scheduled.params, by_hand.params, rtol=0)
    assert_trees_close(scheduled.opt_state, by_hand.opt_state, rtol=0)


def test_optimizer_steps_equal_optax_reference(synthetic):
    """The engine's update is optax's: -lr * direction, for adam, adagrad and sgd."""
    batch = jnp.asarray(synthetic.train[:50])
    for name, reference in (("adam", optax.adam), ("sgd", optax.sgd),
                            ("adagrad", lambda lr: optax.adagrad(lr, eps=1e-8))):
        trainer, members = _build(synthetic, train__optimizer=name, train__learning_rate=3e-3)
        state = trainer.jit.init(members)
        one = jax.tree.map(lambda leaf: leaf[0], state)
        member0 = jax.tree.map(lambda leaf: leaf[0], members)
        new, _ = jax.jit(trainer.member_step)(one, batch, member0)
        key = jax.random.fold_in(jax.random.key(member0.seed), 0)
        grads, _ = jax.grad(trainer.member_loss, has_aux=True)(one.params, batch, key, member0)
        tx = reference(3e-3)
        updates, _ = tx.update(grads, tx.init(one.params), one.params)
        assert_trees_close(new.params, optax.apply_updates(one.params, updates), rtol=1e-6,
                           label=f"{name}: ")


# --------------------------------------------------------------------------- fit


def test_fit_hooks_checkpoints_and_resume_equal_an_uninterrupted_fit(synthetic, tmp_path):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, population__sigma=(0.1, 0.3))

    def record(ctx):
        return [{"step": ctx.step, "epoch": ctx.epoch,
                 "loss": float(np.mean(ctx.block.loss))}]

    hooks = [trainer_lib.Hook(record, every_steps=STEPS)]
    full = trainer_lib.fit(trainer, trainer.jit.init(members), data, members,
                           num_steps=4 * STEPS, hooks=hooks, progress=False)
    assert [r["step"] for r in full.history] == [STEPS, 2 * STEPS, 3 * STEPS, 4 * STEPS]

    with Checkpointer(tmp_path / "ckpt", keep=2) as checkpoints:
        first = trainer_lib.fit(trainer, trainer.jit.init(members), data, members,
                                num_steps=2 * STEPS, hooks=hooks, checkpoints=checkpoints,
                                checkpoint_every_steps=STEPS, progress=False)
        assert first.resumed_from is None and checkpoints.all_steps() == [STEPS, 2 * STEPS]
    with Checkpointer(tmp_path / "ckpt", keep=2) as checkpoints:
        second = trainer_lib.fit(trainer, trainer.jit.init(members), data, members,
                                 num_steps=4 * STEPS, hooks=hooks, checkpoints=checkpoints,
                                 checkpoint_every_steps=STEPS, progress=False)
    assert second.resumed_from == 2 * STEPS
    assert second.history == full.history  # the first two records came from the checkpoint
    assert_trees_close(second.state, full.state, rtol=0)
    with Checkpointer(tmp_path / "ckpt", keep=2) as checkpoints:  # finished: nothing to do
        third = trainer_lib.fit(trainer, trainer.jit.init(members), data, members,
                                num_steps=4 * STEPS, hooks=hooks, checkpoints=checkpoints,
                                progress=False)
    assert third.block_steps == [] and third.history == full.history


def test_fit_starts_at_the_state_step_and_hooks_can_stop_it(synthetic):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic)
    state = _run(trainer, members, data, 5)
    calls = []

    def at_start(ctx):
        calls.append(ctx.step)
        return [{"step": ctx.step}]

    def stop_after_two_epochs(ctx):
        if ctx.step >= 2 * STEPS:
            ctx.stop()

    result = trainer_lib.fit(trainer, state, data, members, num_steps=10 * STEPS,
                             hooks=[trainer_lib.Hook(at_start, at_steps=(5,), at_end=False),
                                    trainer_lib.Hook(stop_after_two_epochs, every_steps=STEPS)],
                             progress=False)
    assert calls == [5] and result.history == [{"step": 5}]
    assert result.step == 2 * STEPS and int(result.state.step[0]) == 2 * STEPS
    assert result.block_steps[0] == STEPS - 5  # the first block ends at the next epoch


# --------------------------------------------------------------------------- non-finite


def test_non_finite_loss_names_member_step_and_term(synthetic):
    """Adam's first step moves every parameter by about the rate: 1e30 overflows member 2."""
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, population__learning_rate=(1e-3, 1e-3, 1e30),
                              population__sigma=(0.1, 0.2, 0.3))
    with pytest.raises(trainer_lib.NonFiniteLossError) as error:
        trainer_lib.fit(trainer, trainer.jit.init(members), data, members, num_steps=STEPS,
                        progress=False, desc="diverging")
    message = str(error.value)
    assert error.value.member == 2 and 2 <= error.value.step <= STEPS
    assert "diverging: non-finite loss at step" in message and "member 2 (sigma=0.3" in message
    assert "no checkpoint had been written yet" in message
    assert error.value.term in trainer_lib.TERMS
    # "ignore": the diverged member goes on as NaN, the others are untouched by it.
    result = trainer_lib.fit(trainer, trainer.jit.init(members), data, members,
                             num_steps=STEPS, progress=False, non_finite="ignore")
    kernel = np.asarray(result.state.params["params"]["decoder"]["out"]["kernel"])
    assert np.all(np.isfinite(kernel[:2])) and not np.all(np.isfinite(kernel[2]))


def test_check_finite_reports_the_earliest_step_and_first_term():
    members = trainer_lib.make_members(latent=2, num_train=10, sigma=[0.1, 0.2, 0.3])
    block = trainer_lib.BlockMetrics(
        loss=np.zeros(3), recon=np.zeros(3), kl=np.zeros(3), weight_decay=np.zeros(3),
        first_bad_step=np.array([-1, 40, 12], np.int32),
        first_bad_term=np.array([0, 1, 0], np.int32))
    with pytest.raises(trainer_lib.NonFiniteLossError) as error:
        trainer_lib.check_finite(block, members, steps_per_epoch=10, kept=10)
    assert (error.value.member, error.value.step, error.value.term) == (2, 13, "recon")
    assert "epoch 2" in str(error.value) and "checkpoint (step 10) is kept" in str(error.value)
    trainer_lib.check_finite(block.replace(first_bad_step=np.full(3, -1, np.int32)), members,
                             steps_per_epoch=10, kept=None)


def test_in_graph_guard_finds_the_first_bad_step_and_term(synthetic, monkeypatch):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, population__sigma=(0.1, 0.2))
    original = trainer_lib.Trainer.member_loss

    def poisoned(self, params, batch, key, member):  # member 1's recon is NaN from step 7
        loss, metrics = original(self, params, batch, key, member)
        bad = (member.sigma > 0.15) & (key_step[0] >= 7)
        nan = jnp.where(bad, jnp.nan, 0.0)
        return loss + nan, metrics.replace(loss=metrics.loss + nan, recon=metrics.recon + nan)

    key_step = [None]
    original_step = trainer_lib.Trainer.member_step

    def member_step(self, state, batch, member):
        key_step[0] = state.step
        return original_step(self, state, batch, member)

    monkeypatch.setattr(trainer_lib.Trainer, "member_loss", poisoned)
    monkeypatch.setattr(trainer_lib.Trainer, "member_step", member_step)
    fresh = dataclasses.replace(trainer)  # a new trainer: new jitted functions
    _, block = fresh.jit.run(fresh.jit.init(members), data, members, jnp.int32(0),
                             jnp.int32(STEPS))
    assert np.asarray(block.first_bad_step).tolist() == [-1, 7]
    assert trainer_lib.TERMS[int(block.first_bad_term[1])] == "recon"


# --------------------------------------------------------------------------- members


def test_uniform_sampling_with_subsets_draws_only_from_each_members_subset(synthetic):
    trainer, members = _build(synthetic, train__sampling="uniform")
    trainer = dataclasses.replace(trainer, subsets=True)
    members = trainer_lib.make_members(latent=2, num_train=[10, 900], seed=[0, 0])
    data = jnp.asarray(np.arange(900, dtype=np.float32)[:, None] * np.ones((1, 16)) / 900)
    batches = np.stack([np.asarray(trainer._step_batch(data, jnp.int32(t), None, members))
                        for t in range(20)])  # [T, P, B, D]
    index = np.round(batches[..., 0] * 900).astype(int)
    assert index[:, 0].max() < 10 and index[:, 1].max() > 10
    # The same uniform draws u: member 0 takes floor(10 u), member 1 floor(900 u).
    assert np.all(np.abs(index[:, 0] / 10 - index[:, 1] / 900) < 0.1 + 1 / 900)
    with pytest.raises(ValueError, match="sampling='uniform'"):
        dataclasses.replace(trainer, sampling="epochs")


def test_masked_member_is_the_smaller_model_and_its_padding_stays_zero(synthetic):
    data = jnp.asarray(synthetic.train)
    trainer, _ = _build(synthetic, model__latent=4)
    trainer = dataclasses.replace(trainer, mask_latents=True)
    members = trainer_lib.make_members(latent=[2, 4], num_train=900, seed=[3, 3])
    state = _run(trainer, members, data, STEPS)
    encoder = state.params["params"]["encoder"]
    for name in ("mean", "log_var"):
        kernel = np.asarray(encoder[name]["kernel"])
        assert np.all(kernel[0][:, 2:] == 0) and np.any(kernel[1][:, 2:] != 0)
    hidden = np.asarray(state.params["params"]["decoder"]["hidden"]["kernel"])
    assert np.all(hidden[0][2:] == 0) and np.any(hidden[0][:2] != 0)

    # Members of one seed start alike where their latent sizes agree.
    np.testing.assert_array_equal(np.asarray(encoder["mean"]["kernel"])[:, :, :2][0] != 0,
                                  np.ones_like(np.asarray(encoder["mean"]["kernel"])[0][:, :2],
                                               bool))


def test_wake_sleep_objective_trains_each_network_on_its_phase(synthetic):
    data = jnp.asarray(synthetic.train)
    trainer, members = _build(synthetic, model__likelihood="bernoulli",
                              train__objective="wake_sleep")
    state = trainer.jit.init(members)
    after = _run(trainer, members, data, STEPS, state=jax.tree.map(jnp.copy, state))
    for network in ("encoder", "decoder"):
        before_k = np.asarray(state.params["params"][network]["hidden"]["kernel"])
        after_k = np.asarray(after.params["params"][network]["hidden"]["kernel"])
        assert not np.allclose(before_k, after_k)
    with pytest.raises(ValueError, match="no sampler"):
        _build(synthetic, model__likelihood="gaussian_optimal", train__objective="wake_sleep")


def test_make_members_and_build_name_the_bad_field(synthetic):
    with pytest.raises(ValueError, match="`sigma`"):
        trainer_lib.make_members(latent=2, num_train=10, sigma=[0.1, -1.0])
    with pytest.raises(ValueError, match="length P=3"):
        trainer_lib.make_members(latent=2, num_train=10, sigma=[0.1, 0.2, 0.3], seed=[1, 2])
    with pytest.raises(ValueError, match="train.batch_size"):
        _build(synthetic, train__batch_size=901)
    config = make_config(data__dataset="synthetic", population__latent=(1, 2))
    trainer, members = trainer_lib.build(config, synthetic)
    assert trainer.mask_latents and members.latent.tolist() == [1, 2]
    config_lib.validate(config)
