"""segda.protocol: the embedded run's settings beside the official recipe, each reason whole."""

import pandas as pd

from segda import config, protocol


def _table():
    return protocol.differences(config.load("embedded/advent"))


def test_every_reason_shows_whole_in_both_reprs():
    table = _table()
    assert isinstance(table, pd.DataFrame)
    html, text = table._repr_html_(), repr(table)
    assert max(len(why) for why in table["why"]) > 50  # what pandas would cut
    for why in table["why"]:
        assert why.replace("'", "&#x27;") in html
        # The text form wraps a reason over lines: its words come back in order.
        assert " ".join(why.split()) in " ".join(text.split())
    assert "..." not in html and "..." not in text


def test_the_text_form_names_each_setting_with_its_official_value():
    table = _table()
    text = repr(table)
    assert "method.lambda_adv_main: 0.01 (official: 0.001)" in text
    assert max(len(line) for line in text.splitlines() if line.startswith("    ")) <= 100


def test_a_slice_is_a_plain_dataframe_and_the_table_keeps_its_columns():
    table = _table()
    assert list(table.columns) == ["this run", "official", "why"]
    assert type(table.loc[["optim.lr"]]) is pd.DataFrame
    assert table.loc["optim.lr", "official"] == 0.00025


def test_no_difference_says_so():
    cfg = config.load("embedded/advent")
    assert repr(protocol.differences(cfg, official=cfg)) == \
        "no setting differs from the official recipe"
