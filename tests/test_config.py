"""Strict configuration: presets load, unknown keys and wrong types are errors."""

import pytest

from segda import config, methods


def test_every_preset_loads_and_validates():
    names = config.list_presets()
    assert "paper/advent" in names and "embedded/source_pretrain" in names
    for name in names:
        cfg = config.load(name)
        assert isinstance(cfg, config.TrainConfig)


def test_paper_presets_carry_the_official_values():
    adv = config.load("paper/advent")
    assert (adv.optim.lr, adv.optim.momentum, adv.optim.weight_decay) == (2.5e-4, 0.9, 5e-4)
    # train_advent loops over range(EARLY_STOP + 1): 120,001 updates, the last saved as
    # model_120000; train_minent loops over range(EARLY_STOP) (official_facts 3.3, 3.4).
    assert (adv.optim.max_iters, adv.optim.early_stop) == (250000, 120001)
    assert (adv.optim.lr_disc, adv.optim.disc_betas) == (1e-4, (0.9, 0.99))
    assert (adv.method.lambda_adv_main, adv.method.lambda_adv_aux) == (0.001, 0.0002)
    assert adv.model.aspp_branches == 4 and adv.model.bn_mode == "train"
    assert adv.optim.param_groups == "official" and adv.optim.head_lr_mult == 10.0
    asn = config.load("paper/adaptsegnet_multi")
    assert asn.model.aspp_branches == 2 and asn.optim.early_stop == 150000
    assert asn.data.source_size == (1280, 720) and asn.data.target_size == (1024, 512)
    minent = config.load("paper/minent")
    assert (minent.method.lambda_ent_main, minent.method.lambda_ent_aux) == (0.001, 0.0002)
    assert minent.optim.early_stop == 120000


def test_overrides_dotted_and_nested():
    cfg = config.load("embedded/advent", {"optim.lr": 1e-3, "run": {"seed": 3}})
    assert cfg.optim.lr == 1e-3 and cfg.run.seed == 3
    assert cfg.optim.max_iters == 200  # untouched preset value


def test_int_accepted_for_float_but_not_the_reverse():
    assert config.load(None, {"optim.lr": 1}).optim.lr == 1.0
    with pytest.raises(config.ConfigError, match="optim.max_iters"):
        config.load(None, {"optim.max_iters": 1.5})


def test_unknown_key_names_the_key():
    with pytest.raises(config.ConfigError, match="'optim.learning_rate'"):
        config.load(None, {"optim.learning_rate": 0.1})
    with pytest.raises(config.ConfigError, match="'modle'"):
        config.load(None, {"modle": {"name": "small"}})


def test_wrong_type_names_the_key():
    with pytest.raises(config.ConfigError, match="'model.multi_level'"):
        config.load(None, {"model.multi_level": "yes"})
    with pytest.raises(config.ConfigError, match="'data.source_size'"):
        config.load(None, {"data.source_size": [1, 2, 3]})


def test_invalid_choice_and_inconsistent_levels():
    with pytest.raises(config.ConfigError, match="'model.bn_mode'"):
        config.load(None, {"model.bn_mode": "sometimes"})
    with pytest.raises(config.ConfigError, match="method.name"):
        methods.get(config.load(None, {"method.name": "dann"}).method.name)
    with pytest.raises(config.ConfigError, match="multi_level"):
        config.load(None, {"method.levels": "multi", "model.multi_level": False})


def test_yaml_round_trip_and_duplicate_keys(tmp_path):
    cfg = config.load("paper/adaptsegnet_multi")
    assert config.from_dict(config.parse_yaml(cfg.to_yaml())) == cfg
    path = tmp_path / "dup.yaml"
    path.write_text("optim:\n  lr: 0.1\noptim:\n  lr: 0.2\n")
    with pytest.raises(config.ConfigError, match="duplicate key 'optim'"):
        config.load(path)


def test_unknown_preset_lists_available():
    with pytest.raises(config.ConfigError, match="paper/advent"):
        config.load("paper/does_not_exist")


def test_missing_dataset_names_path_and_preparation_command(tmp_path):
    from segda.data import registry

    cfg = config.load("paper/advent", {"data.root": str(tmp_path / "nowhere")})
    with pytest.raises(Exception, match=r"nowhere/GTA5.*data_scripts/prepare_gta5.py"):
        _ = registry.build_datasets(cfg.data, cfg.model).train_source  # built when read
