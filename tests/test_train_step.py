"""Every method x level trains a few steps; gradients go only where they should."""

import itertools

import pytest
import torch

from segda import config, methods, step
from segda.data import synthetic

CASES = [
    ("source_only", "single"), ("source_only", "multi"),
    ("source_only_tgt_bn", "single"),
    ("feature_adv", "single"), ("feature_adv", "multi"),
    ("output_adv", "single"), ("output_adv", "multi"),
    ("minent", "single"), ("minent", "multi"),
    ("advent", "single"), ("advent", "multi"),
]


def _cfg(method, levels, **extra):
    overrides = {
        "method.name": method, "method.levels": levels,
        "method.lambda_adv_main": 0.01, "method.lambda_adv_aux": 0.002,
        "method.lambda_ent_main": 0.01, "method.lambda_ent_aux": 0.002,
        "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.param_groups": "unique",
        "optim.max_iters": 10, "optim.early_stop": 10, "method.disc_ndf": 8,
        "run.device": "cpu", "run.progress": False,
        "model.bn_mode": "train",  # the official setting: batch norm sees every batch
    }
    overrides.update(extra)
    return config.load("embedded/source_only", overrides)


def _batches(cfg_s, n=2):
    src = synthetic.SyntheticStreetScenes("source", "train", cfg_s)
    tgt = synthetic.SyntheticStreetScenes("target", "train", cfg_s)
    for k in itertools.count():
        idx = [(k * n + j) % len(src) for j in range(n)]
        s = [src[i] for i in idx]
        t = [tgt[i] for i in idx]
        yield (
            methods.Batch(torch.stack([x["image"] for x in s]), torch.stack([x["label"] for x in s])),
            methods.Batch(torch.stack([x["image"] for x in t])),
        )


@pytest.mark.parametrize(("method", "levels"), CASES)
def test_method_trains_a_few_steps(method, levels, tiny_embedded):
    torch.manual_seed(0)
    cfg = _cfg(method, levels)
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    before = {k: v.clone() for k, v in state.seg.state_dict().items()}
    d_before = {lvl: [p.clone() for p in d.parameters()] for lvl, d in state.discs.items()}
    batches = _batches(tiny_embedded)
    for _ in range(3):
        src, tgt = next(batches)
        logged = step.train_step(state, src, tgt, cfg)
        assert all(torch.isfinite(v) for v in logged.values()), logged
    expected = methods.METHODS[method]
    assert "seg_main" in logged
    if expected.target_term == "entropy":
        assert {f"ent_{lvl}" for lvl in methods.level_names(levels)} <= set(logged)
    if expected.has_discriminator:
        assert set(state.discs) == set(methods.level_names(levels))
        assert {f"adv_{lvl}" for lvl in methods.level_names(levels)} <= set(logged)
        for lvl, d in state.discs.items():
            assert any(not torch.equal(a, b) for a, b in zip(d_before[lvl], d.parameters()))
            assert all(p.requires_grad for p in d.parameters())  # unfrozen after the step
    else:
        assert state.discs == {}
    changed = [k for k, v in state.seg.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("layer6.") for k in changed)
    assert any(k.startswith("layer1.") for k in changed)
    assert state.iteration == 3


def test_source_only_never_touches_target_and_control_only_moves_bn_stats(tiny_embedded):
    torch.manual_seed(0)
    cfg_a = _cfg("source_only", "single")
    cfg_b = _cfg("source_only_tgt_bn", "single")
    a = step.build_state(cfg_a, torch.device("cpu"))
    b = step.build_state(cfg_b, torch.device("cpu"))
    b.seg.load_state_dict(a.seg.state_dict())
    a.seg.train()
    b.seg.train()
    src, tgt = next(_batches(tiny_embedded))
    step.train_step(a, src, tgt, cfg_a)
    step.train_step(b, src, tgt, cfg_b)
    sa, sb = a.seg.state_dict(), b.seg.state_dict()
    for k in sa:
        if "running" in k or "num_batches" in k:
            continue
        torch.testing.assert_close(sa[k], sb[k], msg=f"{k} differs: the control must add no loss")
    assert not torch.equal(sa["bn1.running_mean"], sb["bn1.running_mean"])


@pytest.mark.parametrize("method", ["output_adv", "advent", "feature_adv"])
def test_discriminators_get_gradients_only_in_their_own_step(method, tiny_embedded, monkeypatch):
    cfg = _cfg(method, "multi")
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    seen = {}
    original = methods.discriminator_losses

    def spy(method_, mcfg, discs, inputs, domain, **kwargs):
        if domain == "src":
            seen["disc_grads_before"] = [p.grad for d in discs.values() for p in d.parameters()]
            seen["seg_grads_before"] = [
                None if p.grad is None else p.grad.clone() for p in state.seg.parameters()
            ]
        return original(method_, mcfg, discs, inputs, domain, **kwargs)

    monkeypatch.setattr(methods, "discriminator_losses", spy)
    step_seen = {}
    seg_opt_step = state.opt_seg.step

    def spy_step(*a, **k):
        step_seen["seg_grads_at_step"] = [
            None if p.grad is None else p.grad.clone() for p in state.seg.parameters()
        ]
        step_seen["disc_grads_at_step"] = [
            p.grad for d in state.discs.values() for p in d.parameters()
        ]
        return seg_opt_step(*a, **k)

    monkeypatch.setattr(state.opt_seg, "step", spy_step)
    src, tgt = next(_batches(tiny_embedded))
    step.train_step(state, src, tgt, cfg)
    # No segmenter loss reached the discriminators' parameters ...
    assert all(g is None for g in seen["disc_grads_before"])
    # ... the discriminator losses did ...
    assert all(g is not None for g in step_seen["disc_grads_at_step"])
    # ... and left the segmenter's gradients exactly as they were (inputs were detached).
    for before, at_step in zip(seen["seg_grads_before"], step_seen["seg_grads_at_step"]):
        if before is None:
            assert at_step is None
        else:
            assert torch.equal(before, at_step)


def test_adversarial_gradient_reaches_segmenter_through_frozen_discriminator(tiny_embedded):
    """With the segmentation loss switched off, only the adversarial term moves the heads."""
    cfg = _cfg("advent", "single", **{"method.lambda_seg_main": 0.0, "method.lambda_seg_aux": 0.0})
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    src, tgt = next(_batches(tiny_embedded))
    head = state.seg.layer6.conv2d_list[0].weight
    before = head.clone()
    step.train_step(state, src, tgt, cfg)
    assert not torch.equal(before, head)


def test_class_ratio_prior_term_is_logged(tiny_embedded):
    cfg = _cfg("minent", "multi", **{"method.lambda_cp": 0.01})
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    src, tgt = next(_batches(tiny_embedded))
    prior = torch.as_tensor(synthetic.source_class_prior(tiny_embedded), dtype=torch.float32)
    logged = step.train_step(state, src, tgt, cfg, source_prior=prior)
    assert "cp_main" in logged and torch.isfinite(logged["cp_main"])


@pytest.mark.parametrize("method", ["feature_adv", "output_adv", "advent"])
def test_each_written_out_adversarial_term_is_what_its_discriminator_sees(method, tiny_embedded):
    """A row's own target term (softmax, self-information or features written out) equals the
    generic term built from its DiscInput, which the discriminators' own step uses: the two
    cannot drift apart. Gradients into the segmenter are compared too."""
    torch.manual_seed(0)
    cfg = _cfg(method, "multi")
    state = step.build_state(cfg, torch.device("cpu"))
    row = methods.get(method)
    src, _ = next(_batches(tiny_embedded))
    grads = []
    for term in (row.target_loss, methods.adversarial_terms):
        state.seg.zero_grad(set_to_none=True)
        out = state.seg(src.image).upsampled(tuple(src.image.shape[-2:]))
        terms = term(row, cfg.method, out, state.discs)
        sum(terms.values()).backward()
        grads.append((terms, [p.grad.clone() for p in state.seg.parameters() if p.grad is not None]))
    (own, own_grads), (generic, generic_grads) = grads
    assert own.keys() == generic.keys() == {"adv_aux", "adv_main"}
    assert all(torch.equal(own[k], generic[k]) for k in own)
    assert own_grads and all(torch.equal(a, b) for a, b in zip(own_grads, generic_grads, strict=True))


def test_an_aux_head_at_weight_zero_still_decays_under_sgd_as_in_the_official_loop(tiny_embedded):
    """AdaptSegNet single-level builds both heads with --lambda-seg 0: the aux head's gradient is
    zero, not absent, so SGD's first step moves it by the weight decay alone,
    p <- p - lr_head * wd * p (momentum buffer = d on the first step); the main head and the
    backbone move by their gradients as usual."""
    lr, wd, mult = 2.5e-4, 5e-4, 10.0
    cfg = _cfg("output_adv", "single", **{
        "method.lambda_seg_aux": 0.0, "optim.optimizer": "sgd", "optim.lr": lr,
        "optim.weight_decay": wd, "optim.momentum": 0.9, "optim.head_lr_mult": mult})
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    src, tgt = next(_batches(tiny_embedded))
    aux = state.seg.layer5.conv2d_list[0].weight
    before = aux.detach().clone()
    logged = step.train_step(state, src, tgt, cfg)
    assert float(logged["seg_aux"]) == 0.0
    # float32 rounding of p - lr * wd * p: a few units in the last place
    assert torch.allclose(aux.detach(), before * (1 - lr * mult * wd), rtol=3e-7, atol=0)
    assert not torch.equal(aux.detach(), before)
