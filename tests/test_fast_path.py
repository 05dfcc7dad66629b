"""The fast path computes the reference iteration: same losses, gradients and update.

Reference mode: fp32, eager, the official masked cross-entropy, the reference optimizers.
Every comparison starts from identical weights and inputs and runs one training step.
"""

import copy
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from segda import config, fastpath, methods, models, optim, step, train
from segda.data import synthetic

BASE = {
    "method.name": "advent", "method.levels": "multi",
    "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
    # The official optimizers: SGD over the duplicated listing for the segmenter, Adam for D.
    "optim.optimizer": "sgd", "optim.param_groups": "official", "optim.lr": 1e-2,
    "optim.max_iters": 10, "optim.early_stop": 10, "method.disc_ndf": 8,
    "run.device": "cpu", "run.progress": False,
    "model.bn_mode": "train",  # the official training-mode batch norm (the embedded walk freezes it)
}
REFERENCE = {"run.ce_impl": "masked"}
FAST_FP32 = {"run.ce_impl": "ignore_index", "run.channels_last": True, "run.optim_impl": "foreach"}


@pytest.fixture(scope="module")
def batch():
    # The batch the bounds below were measured on: the embedded target's `global` shift
    # (the default before the `beyond_statistics` one); the bounds are about rounding, not data.
    scfg = synthetic.SyntheticConfig(height=32, width=64, **synthetic.SHIFTS["global"])
    src = [synthetic.SyntheticStreetScenes("source", "train", scfg)[i] for i in range(2)]
    tgt = [synthetic.SyntheticStreetScenes("target", "train", scfg)[i] for i in range(2)]
    return (torch.stack([x["image"] for x in src]), torch.stack([x["label"] for x in src]),
            torch.stack([x["image"] for x in tgt]))


def one_step(overrides, batch, term_norms=False):
    """Losses, gradients (just before the optimizer steps) and updates of one step.

    ``term_norms`` (eager only) also records the norm of the discriminators' gradient from the
    source term and from the target term separately.
    """
    cfg = config.load("embedded/source_only", {**BASE, **overrides})
    torch.manual_seed(0)
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    seg_params = [p for p in state.seg.parameters() if p.requires_grad]
    disc_params = [p for d in state.discs.values() for p in d.parameters()]
    before = [p.detach().clone() for p in seg_params + disc_params]
    grads, norms = {}, {}
    opt_step = state.opt_seg.step
    disc_losses = methods.discriminator_losses

    def disc_losses_spy(method, mcfg, discs, inputs, domain, **kwargs):
        terms = disc_losses(method, mcfg, discs, inputs, domain, **kwargs)
        g = torch.autograd.grad(sum(terms.values()), disc_params, retain_graph=True)
        norms[domain] = float(torch.cat([x.flatten() for x in g]).norm())
        return terms

    def spy(*args, **kwargs):
        grads["seg"] = torch.cat([p.grad.flatten() for p in seg_params])
        grads["disc"] = torch.cat([p.grad.flatten() for p in disc_params]) if disc_params else None
        return opt_step(*args, **kwargs)

    state.opt_seg.step = spy
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    src_img, label, tgt_img = batch
    if term_norms:
        methods.discriminator_losses = disc_losses_spy
    try:
        logged = step.train_step(
            state, methods.Batch(src_img.contiguous(memory_format=fmt), label),
            methods.Batch(tgt_img.contiguous(memory_format=fmt)), cfg,
        )
    finally:
        methods.discriminator_losses = disc_losses
    after = [p.detach() for p in seg_params + disc_params]
    delta = [a - b for a, b in zip(after, before)]
    n = len(seg_params)
    return {
        "losses": {k: float(v) for k, v in logged.items()},
        "seg_grad": grads["seg"], "disc_grad": grads["disc"],
        "seg_update": torch.cat([d.flatten() for d in delta[:n]]),
        "disc_update": torch.cat([d.flatten() for d in delta[n:]]) if disc_params else None,
        "disc_term_norms": norms,
        "state": state,
    }


def rel(a, b):
    return float((a - b).norm() / b.norm())


def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


@pytest.fixture(scope="module")
def reference(batch):
    return one_step(REFERENCE, batch, term_norms=True)


def assert_fp32_equivalent(fast, ref, lr_disc=1e-4):
    assert fast["losses"].keys() == ref["losses"].keys()
    for k, v in ref["losses"].items():
        assert abs(fast["losses"][k] - v) <= 1e-5 * abs(v), (k, fast["losses"][k], v)
    assert rel(fast["seg_grad"], ref["seg_grad"]) <= 1e-5
    assert rel(fast["seg_update"], ref["seg_update"]) <= 1e-5
    if ref["disc_update"] is not None:
        # The discriminators' gradient is the sum of a source and a target term that nearly
        # cancel at initialisation (the domains are not told apart yet; here each term's norm
        # is ~50x the sum's), so rounding is measured against the terms' size, not the sum's.
        terms = sum(ref["disc_term_norms"].values())
        assert float((fast["disc_grad"] - ref["disc_grad"]).norm()) <= 1e-5 * terms
        # Adam's first step is lr * g / (|g| + eps) per component, whose slope in g is at most
        # 1 / eps: components with a near-zero gradient amplify its rounding differences that
        # much, and no more (plus one float32 rounding of the parameters, all below 0.1 here).
        eps = 1e-8
        bound = lr_disc * (fast["disc_grad"] - ref["disc_grad"]).abs() / eps + 1e-8
        assert bool(((fast["disc_update"] - ref["disc_update"]).abs() <= bound).all())


# ---------------------------------------------------------------------------- optimizers


def _fake_grads(model, step):
    g = torch.Generator().manual_seed(step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) if p.requires_grad else None


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_listing_sgd_steps_duplicates_like_the_reference_loop(impl):
    torch.manual_seed(0)
    a = models.build_segmenter("small")
    b = models.build_segmenter("small")
    b.load_state_dict(a.state_dict())
    ocfg = config.OptimConfig(param_groups="official")
    ref = optim.build_segmenter_optimizer(a, ocfg)
    fast = fastpath.fast_optimizer(optim.build_segmenter_optimizer(b, ocfg), impl)
    assert isinstance(fast, fastpath.ListingSGD)
    listed = [id(p) for g in fast.param_groups for p in g["params"]]
    assert len(listed) > len(set(listed))  # the official listing repeats backbone tensors
    for i in range(3):  # the first step starts fresh buffers; later ones reuse them
        for m in (a, b):
            _fake_grads(m, i)
        ref.step()
        fast.step()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            if impl == "foreach":  # the same per-tensor kernels on CPU: bitwise
                assert torch.equal(pa, pb), (i, name)
            else:
                torch.testing.assert_close(pb, pa, rtol=1e-6, atol=1e-7, msg=name)
    # The state dicts are interchangeable: the reference optimizer continues the fast one.
    ref.load_state_dict(copy.deepcopy(fast.state_dict()))  # no shared buffers
    a.load_state_dict(b.state_dict())
    for m in (a, b):
        _fake_grads(m, 9)
    ref.step()
    fast.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-6, atol=1e-7)


def test_listing_sgd_differs_from_stepping_each_tensor_once():
    """The fast optimizer keeps the duplicated listing's effect (about 3x for most tensors)."""
    torch.manual_seed(0)
    a = models.build_segmenter("small")
    b = models.build_segmenter("small")
    b.load_state_dict(a.state_dict())
    official = fastpath.fast_optimizer(
        optim.build_segmenter_optimizer(a, config.OptimConfig(param_groups="official")), "foreach")
    unique = fastpath.fast_optimizer(
        optim.build_segmenter_optimizer(b, config.OptimConfig(param_groups="unique")), "foreach")
    start = a.layer2[0].conv1.weight.detach().clone()
    for m in (a, b):
        _fake_grads(m, 0)
    official.step()
    unique.step()
    with torch.no_grad():
        ratio = (a.layer2[0].conv1.weight - start).norm() / (b.layer2[0].conv1.weight - start).norm()
    assert 2.5 < float(ratio) < 3.5


def test_adam_over_a_duplicated_listing_keeps_the_reference_optimizer():
    seg = models.build_segmenter("small")
    dup = optim.build_segmenter_optimizer(seg, config.OptimConfig(optimizer="adam"))
    assert fastpath.fast_optimizer(dup, "fused") is dup
    uniq = optim.build_segmenter_optimizer(
        seg, config.OptimConfig(optimizer="adam", param_groups="unique"))
    fast = fastpath.fast_optimizer(uniq, "foreach")
    assert fast is not uniq and fast.defaults["foreach"] is True
    assert [g["lr_mult"] for g in fast.param_groups] == [g["lr_mult"] for g in uniq.param_groups]


# ---------------------------------------------------------------------- the training step


@pytest.mark.parametrize("switch", [
    {"run.ce_impl": "ignore_index"}, {"run.channels_last": True},
    {"run.optim_impl": "foreach"}, {"run.optim_impl": "fused"},
])
def test_each_fp32_switch_alone_matches_reference(switch, batch, reference):
    assert_fp32_equivalent(one_step(switch, batch), reference)


@pytest.mark.parametrize(("method", "levels"), [
    ("source_only", "multi"), ("feature_adv", "single"), ("output_adv", "single"),
    ("output_adv", "multi"), ("minent", "multi"), ("source_only_tgt_bn", "single"),
])
def test_fp32_fast_mode_matches_reference_for_every_method(method, levels, batch):
    which = {"method.name": method, "method.levels": levels}
    ref = one_step({**REFERENCE, **which}, batch, term_norms=True)
    assert_fp32_equivalent(one_step({**FAST_FP32, "run.optim_impl": "fused", **which}, batch), ref)


def test_fp32_fast_mode_with_compiled_stages_matches_reference(batch, reference):
    """The compiled stages (traced by dynamo and AOT autograd; the ``aot_eager`` backend keeps
    this test fast, inductor's code generation is checked by the GPU benchmark and the opt-in
    test below) compute the reference step; the modules keep their state-dict keys."""
    torch.compiler.reset()
    fast = one_step({**FAST_FP32, "run.compile": "default", "run.compile_backend": "aot_eager"},
                    batch)
    assert_fp32_equivalent(fast, reference)
    keys = set(fast["state"].seg.state_dict())
    assert keys == set(reference["state"].seg.state_dict())
    assert not any("_orig_mod" in k for k in keys)
    torch.compiler.reset()


@pytest.mark.skipif(os.environ.get("SEGDA_INDUCTOR_TESTS") != "1",
                    reason="inductor's C++ compilation takes minutes on CPU; set SEGDA_INDUCTOR_TESTS=1")
@pytest.mark.parametrize("scope", ["step", "modules"])
def test_inductor_compiled_step_matches_reference(scope, batch, reference):
    torch.compiler.reset()
    fast = one_step({**FAST_FP32, "run.compile": "default", "run.compile_scope": scope}, batch)
    assert_fp32_equivalent(fast, reference)
    torch.compiler.reset()


def test_bf16_autocast_stays_within_bf16_rounding(batch, reference):
    """bf16 keeps 8 significant bits (relative rounding 2**-9 = 0.2% per stored value): every
    convolution output, and every gradient flowing back through one, is rounded that much.
    Losses are means over many pixels, so their errors average out (measured: 2e-4 relative;
    bound 1e-2). Gradients accumulate the rounding through the layers and, for the
    discriminators, partly cancel between the source and target terms (at initialisation the
    discriminator cannot tell the domains apart, so its gradient is a small difference of two
    terms each ~50x larger); measured cosines to the fp32 gradient: 0.9997 (segmenter) and
    0.96-0.99 (discriminators), 0.9989 for the segmenter's update. For scale, the fp32 step on
    the mirrored batch has cosines 0.96, 0.49 and 0.90 to this one, and a segmenter gradient
    12x further away: bf16 moves the step far less than the choice of batch does.
    """
    other = one_step({**REFERENCE}, (batch[0].flip(-1), batch[1].flip(-1), batch[2].flip(-1)))
    for name, fast_over in (("bf16", {"run.amp": True}),
                            ("bf16 fast", {**FAST_FP32, "run.amp": True})):
        fast = one_step(fast_over, batch)
        for k, v in reference["losses"].items():
            assert abs(fast["losses"][k] - v) <= 1e-2 * abs(v), (name, k)
        assert cos(fast["seg_grad"], reference["seg_grad"]) >= 0.99, name
        assert cos(fast["seg_update"], reference["seg_update"]) >= 0.99, name
        assert cos(fast["disc_grad"], reference["disc_grad"]) >= 0.9, name
        # ... and far closer than another batch's fp32 step.
        assert rel(fast["seg_grad"], reference["seg_grad"]) < 0.2 * rel(
            other["seg_grad"], reference["seg_grad"])


def test_cuda_graphs_switch_is_a_no_op_with_a_message_on_cpu(batch, reference):
    with pytest.warns(UserWarning, match="cuda_graphs has no effect on cpu"):
        fast = one_step({"run.cuda_graphs": True}, batch)
    assert_fp32_equivalent(fast, reference)
    assert not fast["state"].stages.cuda_graphs


def test_unknown_switch_values_are_rejected():
    for key, bad in (("run.optim_impl", "apex"), ("run.compile", "fast"),
                     ("run.compile_scope", "all"), ("run.compile_backend", "tvm")):
        with pytest.raises(config.ConfigError, match=key):
            config.load(None, {key: bad})


def test_fast_mode_fit_resumes_exactly(tmp_path):
    over = {**BASE, **FAST_FP32, "run.optim_impl": "fused", "optim.early_stop": 4,
            "run.checkpoint_every": 2, "run.log_every": 1, "run.eval_max_images": 2}
    cfg = config.load("embedded/advent", over)
    from segda.data import registry

    data = registry.build_datasets(cfg.data, cfg.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no switch warns on CPU
        straight = train.fit(cfg, tmp_path / "a", data=data)
    train.fit(cfg, tmp_path / "b", data=data, stop_at=2)
    resumed = train.fit(cfg, tmp_path / "b", data=data)
    a, b = straight.seg.state_dict(), resumed.seg.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.state.history == resumed.state.history
