"""The headline table for the terminal (rich)."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from volkd.experiment.aggregate import headline_display


def headline_rich(table: pd.DataFrame) -> Table:
    """A rich Table of the headline (projections, then the teacher and baseline rows)."""
    disp = headline_display(table)
    metric = table.attrs.get("metric", "f1_weighted")
    t = Table(title=f"{metric.replace('_', ' ')} on test partitions, mean ± sd over repeats; p: paired Wilcoxon",
              title_justify="left")
    kd = table.attrs.get("kd", "") or "KD"
    disp = disp.rename(columns={"p (Wilcoxon)": "p", "without KD": "no KD", f"with KD ({kd})": f"KD {kd}", "KD wins": "wins"})
    # the terminal shows the verdict's first words; the report has the full sentence
    disp["verdict"] = disp["verdict"].astype(str).str.split(" (", regex=False).str[0]
    last = len(disp.columns) - 1
    for i, col in enumerate(disp.columns):
        t.add_column(str(col), justify="left" if i in (0, last) else "right", no_wrap=0 < i < last)
    n_proj = int(table.attrs.get("n_projections", len(disp) - 2))
    for i, (_, row) in enumerate(disp.iterrows()):
        t.add_row(*[str(v) for v in row], end_section=(i == n_proj - 1))
    return t
