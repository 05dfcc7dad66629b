"""The embedded experiment's bookkeeping: the results table and paired variants."""

import math

import pandas as pd
import pytest
import yaml

from segda import experiments

TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 2, "optim.early_stop": 2, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 4, "method.disc_ndf": 8}


def _runs(rows):
    return pd.DataFrame([{"run": f"seed{s}/{key}", "seed": s, "target_miou": t, "source_miou": 80.0}
                         for key, s, t in rows])


def test_summarize_pairs_gains_per_seed_and_lists_variants_last():
    df = _runs([
        ("source_only", 0, 40.0), ("source_only", 1, 50.0),
        ("source_only_tgt_bn", 0, 60.0), ("source_only_tgt_bn", 1, 56.0),
        ("advent", 0, 63.0), ("advent", 1, 57.0),
        ("output_adv_single@lam0.001", 0, 61.0), ("output_adv_single@lam0.001", 1, 55.0),
    ])
    table = experiments.summarize(df)
    assert list(table.index) == ["source-only", "source-only + target BN (control)", "AdvEnt",
                                 "output_adv_single@lam0.001"]
    advent = table.loc["AdvEnt"]
    assert advent["target mIoU"] == pytest.approx(60.0)
    assert advent["std"] == pytest.approx(math.sqrt(18.0))  # (63-60)^2 + (57-60)^2, ddof 1
    # paired: seed 0 63-40 = 23, seed 1 57-50 = 7 -> 15; vs control: 3 and 1 -> 2
    assert advent["gain vs source-only"] == pytest.approx(15.0)
    assert advent["gain vs BN control"] == pytest.approx(2.0)
    variant = table.loc["output_adv_single@lam0.001"]
    assert variant["gain vs BN control"] == pytest.approx(0.0)  # 61-60, 55-56
    text = experiments.format_table(table)
    assert "| AdvEnt | 60.0 +/- 4.2 | 80.0 | +15.0 | +2.0 | 2 |" in text


def test_run_variant_warm_starts_from_the_seeds_pretrained_checkpoint(tmp_path):
    over = {**TINY, "method.lambda_adv_main": 0.123}
    result = experiments.run_variant(tmp_path, 5, "output_adv_single", "lam", over, pretrain_overrides=TINY)
    saved = yaml.safe_load((tmp_path / "seed5" / "lam" / "config.yaml").read_text())
    assert saved["model"]["init_checkpoint"] == str(tmp_path / "seed5" / "source_pretrain" / "last.pth")
    assert saved["method"]["lambda_adv_main"] == 0.123 and saved["run"]["seed"] == 5
    assert result.state.iteration == 2
    with pytest.raises(ValueError, match="advent"):
        experiments.run_variant(tmp_path, 5, "advent", "advent", TINY, pretrain_overrides=TINY)
