"""A new method is one row plus its loss or hook, written outside the package (the worked
examples of docs/architecture.md), and every method's step keeps float64 as float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from segda import config, losses, methods, step, train
from segda.data import registry

TINY = {
    "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
    "optim.max_iters": 2, "optim.early_stop": 2, "method.disc_ndf": 8, "run.device": "cpu",
    "run.progress": False, "run.eval_max_images": 2,
}


# --- 1. a new target loss: MaxSquare (Chen et al., ICCV 2019), -sum(p^2) / 2 per pixel -------
def max_square_terms(method, cfg, out, discs):
    prob = F.softmax(losses.upcast(out.main), dim=1)
    return {"maxsq_main": cfg.lambda_ent_main * -(prob**2).sum(1).mean() / 2}


# --- 2. a new discriminator input: the per-pixel entropy map (one channel) -------------------
def entropy_channel(logits):
    prob = F.softmax(losses.upcast(logits), dim=1)
    return losses.weighted_self_information(prob).sum(1, keepdim=True)


ENTROPY_MAP = methods.DiscInput(
    "entropy_map", "output", tap=lambda out, level: out.logits(level), view=entropy_channel,
    channels=lambda seg, num_classes, level: 1,
)


# --- 3. a source-batch transform: FDA-style low-frequency amplitude swap (Yang & Soatto 2020) -
def low_frequency_swap(src, tgt, beta=0.1):
    """Source images with the target's amplitude spectrum in a centred low-frequency square."""
    fs, ft = torch.fft.fft2(src.image), torch.fft.fft2(tgt.image)
    amp, phase = fs.abs(), fs.angle()
    h, w = src.image.shape[-2:]
    b = max(1, int(min(h, w) * beta))
    mask = torch.zeros(h, w, dtype=torch.bool)
    for rows in (slice(0, b), slice(h - b, h)):
        for cols in (slice(0, b), slice(w - b, w)):
            mask[rows, cols] = True
    amp = torch.where(mask, ft.abs(), amp)
    image = torch.fft.ifft2(torch.polar(amp, phase)).real
    return methods.Batch(image=image.to(src.image.dtype), label=src.label)


NEW_METHODS = [
    methods.Method("maxsquare", "max_square", paper="Chen et al., ICCV 2019",
                   target_loss=max_square_terms),
    methods.Method("advent_entropy_map", "adversarial", ENTROPY_MAP, "entropy-map discriminator",
                   methods.adversarial_terms),
    methods.Method("fda_minent", "entropy", paper="FDA-style source transform + MinEnt",
                   target_loss=methods.minent_terms, source_transform=low_frequency_swap),
]


@pytest.fixture
def registered(monkeypatch):
    for m in NEW_METHODS:
        monkeypatch.setitem(methods.METHODS, m.name, m)
    return {m.name: m for m in NEW_METHODS}


@pytest.mark.parametrize("name", [m.name for m in NEW_METHODS])
def test_a_new_method_is_a_row_and_trains_two_steps(name, registered, tiny_embedded):
    cfg = config.load("embedded/minent", {**TINY, "method.name": name})
    data = registry.build_datasets(cfg.data, cfg.model)
    torch.manual_seed(0)
    result = train.fit(cfg, None, data=data)
    assert result.state.iteration == 2
    logged = result.state.history[-1]
    assert all(math.isfinite(v) for v in logged.values())
    if name == "maxsquare":
        assert "maxsq_main" in logged and logged["maxsq_main"] < 0
    if name == "advent_entropy_map":
        assert {"adv_main", "disc_main_src", "disc_main_tgt"} <= set(logged)
        assert result.state.discs["main"][0].in_channels == 1  # built from the row's channels
    if name == "fda_minent":
        assert "ent_main" in logged


def test_register_refuses_a_name_twice_and_get_names_the_choices():
    with pytest.raises(ValueError, match="exists"):
        methods.register(methods.Method("advent", "entropy", target_loss=methods.minent_terms))
    with pytest.raises(config.ConfigError, match="'method.name'.*advent"):
        methods.get("dann")


def test_low_frequency_swap_keeps_the_phase_and_takes_the_target_amplitude():
    """The hook's own contract, checked by hand-made spectra."""
    g = torch.Generator().manual_seed(0)
    src = methods.Batch(torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64), None)
    tgt = methods.Batch(torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64), None)
    out = torch.fft.fft2(low_frequency_swap(src, tgt, beta=0.25).image)
    ref_s, ref_t = torch.fft.fft2(src.image), torch.fft.fft2(tgt.image)
    torch.testing.assert_close(out.abs()[..., :4, :4], ref_t.abs()[..., :4, :4])
    torch.testing.assert_close(out.abs()[..., 6:10, 6:10], ref_s.abs()[..., 6:10, 6:10])


CASES = [(m, lv) for m in ("source_only", "source_only_tgt_bn", "minent", "feature_adv",
                           "output_adv", "advent") for lv in ("single", "multi")
         if not (m == "source_only_tgt_bn" and lv == "multi")]


@pytest.mark.parametrize(("method", "levels"), CASES)
def test_one_step_in_float64_stays_float64(method, levels, tiny_embedded):
    """Losses upcast only from half precisions: a float64 step runs and logs float64 values."""
    cfg = config.load("embedded/minent", {**TINY, "method.name": method, "method.levels": levels,
                                          "method.lambda_cp": 0.01})
    torch.manual_seed(0)
    state = step.build_state(cfg, torch.device("cpu"))
    state.seg.double().train()
    for d in state.discs.values():
        d.double()
    g = torch.Generator().manual_seed(0)
    src = methods.Batch(torch.randn(2, 3, 32, 64, generator=g, dtype=torch.float64),
                        torch.randint(0, 19, (2, 32, 64), generator=g))
    tgt = methods.Batch(torch.randn(2, 3, 32, 64, generator=g, dtype=torch.float64))
    prior = torch.full((19,), 1 / 19, dtype=torch.float64)
    logged = step.train_step(state, src, tgt, cfg, source_prior=prior)
    assert all(v.dtype == torch.float64 and torch.isfinite(v) for v in logged.values()), logged
    assert all(p.dtype == torch.float64 for p in state.seg.parameters())
