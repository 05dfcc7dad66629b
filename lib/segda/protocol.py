"""The embedded protocol beside the official recipe: every setting of an embedded run that
differs from the paper preset of its row, with the official value and the reason.

The paper presets (``presets/paper/*``) hold the official values (``official_facts.md``); the
embedded presets change some of them for a 0.5 M-parameter network on a CPU. A notebook prints
:func:`differences` of its config, so a learner sees which numbers are the papers' and which
are this benchmark's, and why.
"""

from __future__ import annotations

import html
import textwrap

import pandas as pd

from segda import config, rows

# Why the embedded protocol departs from the official value, per config key. A key changed by
# a run but missing here is listed with "set for this run" (an override, not the protocol).
WHY = {
    "model.name": "a 0.5 M-parameter network with DeepLab-v2's structure, so that a CPU trains it in minutes",
    "model.aspp_branches": "the small network's heads keep ADVENT's four-branch sum",
    "model.bn_mode": "batch norm frozen (eval mode), so that each loss's gain is its own: in training "
                     "mode batch norm adapts to the target by itself (the AdaBN row, notebook 01)",
    "model.init_checkpoint": "every row starts from one shipped source-only checkpoint (500 iterations)",
    "model.init_kind": "the shipped checkpoint is a whole segmenter, not ImageNet backbone weights",
    "data.dataset": "the embedded two-domain benchmark (GTA5 and Cityscapes cannot be downloaded here)",
    "data.source_size": "64x128 images: CPU minutes instead of GPU days",
    "data.target_size": "64x128 images: CPU minutes instead of GPU days",
    "data.batch_size": "8 images per domain per step: a CPU runs a batch of 8 small images faster "
                       "than 8 steps of one",
    "data.balance_shift": "the target's class balance a third of the way to the generator's full "
                          "shift; a larger label shift turns the output-space losses against the "
                          "target (docs/walk_experiments.md)",
    "model.multi_level": "every embedded row keeps the shipped checkpoint's two heads",
    "method.levels": "the embedded rows share the shipped checkpoint's two heads",
    "method.lambda_seg_aux": "the shipped checkpoint's auxiliary head keeps training on source labels "
                             "(weight 0.1, as the official multi-level loops)",
    "optim.optimizer": "Adam with poly decay: the official SGD recipe was not tuned for the small network",
    "optim.lr": "Adam's rate for the small network",
    "optim.head_lr_mult": "one rate for the whole small network",
    "optim.momentum": "Adam has no SGD momentum",
    "optim.weight_decay": "no weight decay over 200 iterations",
    "optim.param_groups": "each parameter once in the optimizer (the official group lists some twice)",
    "optim.lr_disc": "4x the official: at 1e-4 the discriminator needs about 60 of the 200 "
                     "iterations to leave chance (docs/embedded_benchmark.md)",
    "optim.max_iters": "200 iterations from the shipped checkpoint (500 for the oracle from scratch)",
    "optim.early_stop": "200 iterations from the shipped checkpoint (500 for the oracle from scratch)",
    "method.disc_ndf": "a quarter of the official discriminator's cost, which dominates CPU time",
    "method.lambda_adv_main": "10x the official: 200 Adam steps of a small network need a stronger "
                              "target term (the weight sweep in docs/embedded_benchmark.md)",
    "method.lambda_adv_aux": "10x the official, keeping the official aux / main ratio of 1/5",
    "method.lambda_ent_main": "10x the official, as the adversarial weights",
    "method.lambda_ent_aux": "10x the official, keeping the official aux / main ratio of 1/5",
    "method.lambda_cp": "chosen so that the class-ratio prior's term is on the scale of the entropy term",
    "run.checkpoint_every": "one checkpoint at the end of a short run",
    "run.keep_snapshots": "a short run keeps only its last checkpoint",
    "run.eval_every": "one evaluation at the end of a short run",
    "run.log_every": "a short run logs every 10 iterations",
}

# Keys the comparison leaves out: they say where files are or how a run is driven, not what
# it computes.
_IGNORED = ("description", "source", "data.root", "run.")
# Settings of the embedded generator alone: the real datasets have no such knob.
_NO_OFFICIAL = ("data.balance_shift",)


def _flat(cfg: config.TrainConfig) -> dict:
    out = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def official_preset(cfg: config.TrainConfig) -> str | None:
    """The paper preset of the row ``cfg`` trains (``paper/adaptsegnet_single`` for an
    AdaptSegNet single-level run); ``None`` when the row has none."""
    row = rows.ROWS.get(rows.row_of(cfg))
    if row is None or row.paper is None:
        return None
    name = f"paper/{row.paper}"
    return name if name in config.list_presets() else None


class Differences(pd.DataFrame):
    """:func:`differences`' table (index: setting; columns: this run, official, why), a
    DataFrame that shows every reason whole in a notebook.

    pandas cuts a cell at ``display.max_colwidth`` (50 characters) in both of a DataFrame's
    reprs, which would leave every reason half read. This table is drawn as HTML with the
    reasons wrapped and left-aligned, and as plain text as one entry per setting with its
    reason wrapped below it. A frame derived from it (a slice, a filter) is a plain DataFrame.
    """

    WIDTH = 96  # characters per line of the plain-text form

    def __repr__(self) -> str:
        return self.to_text()

    def to_text(self, width: int = WIDTH) -> str:
        """One entry per setting: ``setting: this run (official: value)``, then its reason
        wrapped at ``width`` characters, indented."""
        if self.empty:
            return "no setting differs from the official recipe"
        lines = []
        for setting, row in self.iterrows():
            lines.append(f"{setting}: {row['this run']} (official: {row['official']})")
            lines += textwrap.wrap(str(row["why"]), width, initial_indent="    ",
                                   subsequent_indent="    ")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        # Inline styles: a notebook viewer that sanitises HTML drops <style> blocks.
        cell = "text-align: left; vertical-align: top; padding: 2px 8px;"
        why = cell + " white-space: normal; min-width: 24em; max-width: 48em;"
        head = "".join(f'<th style="{cell}">{html.escape(h)}</th>'
                       for h in ("setting", "this run", "official", "why"))
        body = "".join(
            "<tr>"
            f'<td style="{cell}"><code>{html.escape(str(setting))}</code></td>'
            f'<td style="{cell}">{html.escape(str(row["this run"]))}</td>'
            f'<td style="{cell}">{html.escape(str(row["official"]))}</td>'
            f'<td style="{why}">{html.escape(str(row["why"]))}</td>'
            "</tr>"
            for setting, row in self.iterrows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def differences(cfg: config.TrainConfig, official: config.TrainConfig | None = None) -> Differences:
    """The settings of ``cfg`` that differ from the official recipe of its row (a
    :class:`Differences` table: setting, this run, official, why; each reason shown whole).
    ``official`` defaults to the paper preset of the row (:func:`official_preset`); keys that
    locate files or drive logging are left out."""
    if official is None:
        name = official_preset(cfg)
        if name is None:
            raise ValueError(f"row {rows.row_of(cfg)!r} has no paper preset to compare with")
        official = config.load(name)
    mine, theirs = _flat(cfg), _flat(official)
    table = []
    for key, value in mine.items():
        if key.startswith(_IGNORED) or theirs.get(key) == value:
            continue
        table.append({"setting": key, "this run": value,
                      "official": "-" if key in _NO_OFFICIAL else theirs.get(key),
                      "why": WHY.get(key, "set for this run")})
    frame = pd.DataFrame(table, columns=["setting", "this run", "official", "why"])
    return Differences(frame.set_index("setting"))
