"""Each method notebook writes out its method's update in one cell built from library pieces;
that cell, run on a batch and a fresh model, must change the weights exactly as
``segda.step.train_step`` does on the same batch and weights."""

import json
from pathlib import Path

import pytest
import torch

import segda
import segda.losses
import segda.methods
import segda.notebook
import segda.optim
import segda.repro
import segda.step
from segda.data import registry

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MARK = "# The update of one iteration, written out"
CASES = [
    ("02_feature_adversarial", "embedded/feature_adv"),
    ("03_output_space_single", "embedded/output_adv_single"),
    ("04_output_space_multi", "embedded/output_adv_multi"),
    ("05_minent", "embedded/minent"),
    ("06_advent", "embedded/advent"),
]


def _cells(notebook: str) -> tuple[str, str]:
    """The notebook's setup cell (the one before the update) and its update cell."""
    cells = [c for c in json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    k = next(i for i, s in enumerate(sources) if s.startswith(MARK))
    return sources[k - 1], sources[k]


@pytest.mark.parametrize(("notebook", "preset"), CASES)
def test_written_out_update_equals_train_step(notebook, preset):
    setup, update = _cells(notebook)
    cfg = segda.notebook.notebook_config(preset, max_iters=4, device="cpu", image_size=[64, 32],
                                         batch_size=2)
    ns = {"segda": segda, "torch": torch, "cfg": cfg, "method": segda.methods.get(cfg.method.name),
          "data": registry.build_datasets(cfg.data, cfg.model)}
    exec(setup, ns)  # noqa: S102 - the notebook's own cells
    state, reference = ns["state"], ns["reference"]
    before = [p.clone() for p in state.seg.parameters()]
    exec(update, ns)  # noqa: S102
    segda.step.train_step(reference, ns["src"], ns["tgt"], cfg)
    assert any(not torch.equal(a, b) for a, b in zip(before, state.seg.parameters()))
    pairs = [(state.seg, reference.seg), *((state.discs[k], reference.discs[k]) for k in state.discs)]
    assert len(pairs) == 1 + len(reference.discs)
    for mine, theirs in pairs:
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), f"{notebook}: {name} differs from train_step's"
