"""run.diagnostics logs what a step does (gradient norms of the source and target terms, the
discriminators' accuracy per domain) and leaves the update itself bit for bit unchanged."""

import copy

import pytest
import torch
import torch.nn.functional as F

from segda import step
from segda.labels import IGNORE_INDEX
from test_train_step import _batches, _cfg


def _two_steps(cfg, tiny_embedded):
    torch.manual_seed(0)
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    batches = _batches(tiny_embedded)
    logs = [step.train_step(state, *next(batches), cfg) for _ in range(2)]
    return state, logs


@pytest.mark.parametrize(("method", "levels"), [("advent", "multi"), ("output_adv", "single"),
                                                ("minent", "single"), ("source_only", "single")])
def test_diagnostics_leave_the_update_unchanged(method, levels, tiny_embedded):
    plain, plain_logs = _two_steps(_cfg(method, levels), tiny_embedded)
    diag, diag_logs = _two_steps(_cfg(method, levels, **{"run.diagnostics": True}), tiny_embedded)
    for a, b in zip(plain.seg.state_dict().values(), diag.seg.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for lvl in plain.discs:
        for a, b in zip(plain.discs[lvl].parameters(), diag.discs[lvl].parameters(), strict=True):
            assert torch.equal(a, b)
    for p_log, d_log in zip(plain_logs, diag_logs, strict=True):
        assert {k: v for k, v in d_log.items() if not k.startswith("diag_")}.keys() == p_log.keys()
        assert all(torch.equal(p_log[k], d_log[k]) for k in p_log)
    keys = set(diag_logs[0])
    assert "diag_grad_source" in keys
    assert ("diag_grad_target" in keys) == (method != "source_only")
    has_d = method in ("advent", "output_adv")
    expected_levels = ("aux", "main") if levels == "multi" else ("main",)
    for lvl in expected_levels:
        for dom in ("src", "tgt"):
            assert (f"diag_dacc_{lvl}_{dom}" in keys) == has_d


def test_gradient_norms_and_accuracy_match_a_direct_computation(tiny_embedded):
    cfg = _cfg("output_adv", "single", **{"run.diagnostics": True})
    torch.manual_seed(0)
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.train()
    seg0, disc0 = copy.deepcopy(state.seg), copy.deepcopy(state.discs["main"])
    src, tgt = next(_batches(tiny_embedded))
    logged = step.train_step(state, src, tgt, cfg)

    # The same first step written out directly: source CE (main head + lambda_seg_aux * aux,
    # bilinear upsampling with align_corners=True), then the adversarial term: BCE of
    # D(softmax(target)) against the source label 0, weighted by lambda_adv_main.
    params = [p for p in seg0.parameters() if p.requires_grad]
    size = src.image.shape[-2:]
    out = seg0(src.image)
    logits = F.interpolate(out.main, size=size, mode="bilinear", align_corners=True)
    ce = F.cross_entropy(logits, src.label, ignore_index=IGNORE_INDEX)
    if out.aux is not None:  # the small model has an aux head: its CE at lambda_seg_aux
        aux = F.interpolate(out.aux, size=size, mode="bilinear", align_corners=True)
        ce = ce + cfg.method.lambda_seg_aux * F.cross_entropy(aux, src.label, ignore_index=IGNORE_INDEX)
    g_src = torch.autograd.grad(ce, params, allow_unused=True)
    norm_src = torch.sqrt(sum((g.float() ** 2).sum() for g in g_src if g is not None))
    assert float(logged["diag_grad_source"]) == pytest.approx(float(norm_src), rel=1e-4)

    for p in disc0.parameters():
        p.requires_grad_(False)
    out_t = seg0(tgt.image)
    prob_t = F.softmax(F.interpolate(out_t.main, size=size, mode="bilinear", align_corners=True), 1)
    d_t = disc0(prob_t)
    adv = cfg.method.lambda_adv_main * F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
    g_tgt = torch.autograd.grad(adv, params, allow_unused=True)
    norm_tgt = torch.sqrt(sum((g.float() ** 2).sum() for g in g_tgt if g is not None))
    assert float(logged["diag_grad_target"]) == pytest.approx(float(norm_tgt), rel=1e-4)

    # Accuracy: the discriminator (not yet stepped) on the detached outputs it was trained on.
    prob_s = F.softmax(logits, 1)
    with torch.no_grad():
        acc_src = (disc0(prob_s) < 0).float().mean()
        acc_tgt = (disc0(prob_t) > 0).float().mean()
    assert float(logged["diag_dacc_main_src"]) == pytest.approx(float(acc_src))
    assert float(logged["diag_dacc_main_tgt"]) == pytest.approx(float(acc_tgt))


def test_plot_step_diagnostics_draws_accuracy_and_gradient_norms():
    from segda import viz

    history = [{"iteration": i, "seg_main": 1.0, "diag_grad_source": 2.0, "diag_grad_target": 0.01,
                "diag_dacc_main_src": 0.5 + i / 40, "diag_dacc_main_tgt": 0.6} for i in range(20)]
    fig = viz.plot_step_diagnostics(history, smooth=1)
    acc, grad = fig.axes
    assert [line.get_label() for line in acc.lines] == [
        "D main: source cells", "D main: target cells", "chance"]
    assert list(acc.lines[0].get_ydata()) == pytest.approx([0.5 + i / 40 for i in range(20)])
    assert grad.get_yscale() == "log" and len(grad.lines) == 2
    # the loss curves leave the diagnostics out
    assert [ax.get_title() for ax in viz.plot_loss_curves(history).axes] == ["seg_main"]
    with pytest.raises(ValueError, match="run.diagnostics"):
        viz.plot_step_diagnostics([{"iteration": 0, "seg_main": 1.0}])
