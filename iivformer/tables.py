"""Every results table of the workbench, as text: terminal, Markdown and LaTeX.

A results dict is ``{"p1": {action: mm, ..., "mean": mm}, "p2": {...}}`` (a protocol may be
missing; "mean" is the unweighted mean over the actions). A method is a name mapped to one.

- :func:`format_table`: the plain text table the command line prints, one row per action.
- :func:`results_table`: one evaluation per action, as a booktabs LaTeX tabular or Markdown.
- :func:`comparison_table`: one row per method with its mean over actions per protocol.
- :func:`paper_table`: the per-action layout of Human3.6M papers, methods as rows, the 15
  actions and their average as columns, the best value of each column in bold.
- :func:`write_tables`: :func:`results_table` written to ``<stem>.tex`` and ``<stem>.md``.

All but :func:`write_tables` only return strings.
"""
import math
import re
from pathlib import Path

from iivformer import skeleton
from iivformer.files import write_text

# Column headers of the per-action tables in Human3.6M papers, keyed by skeleton.ACTIONS.
ACTION_HEADERS = {
    "Directions": "Dir.", "Discussion": "Disc.", "Eating": "Eat.", "Greeting": "Greet.",
    "Phoning": "Phone", "Photo": "Photo", "Posing": "Pose", "Purchases": "Purch.",
    "Sitting": "Sit", "SittingDown": "SitD.", "Smoking": "Smoke", "Waiting": "Wait",
    "WalkDog": "WalkD.", "Walking": "Walk", "WalkTogether": "WalkT.",
}
FORMATS = ("latex", "markdown", "text")
MISSING = "-"  # the cell of a value a method does not have

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_LATEX_PATTERN = re.compile("|".join(re.escape(character) for character in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """`text` with the LaTeX special characters & % $ # _ { } ~ ^ \\ written as literals."""
    return _LATEX_PATTERN.sub(lambda match: _LATEX_SPECIAL[match.group()], str(text))


def markdown_escape(text: str) -> str:
    """`text` safe inside a Markdown table cell: its pipes escaped."""
    return str(text).replace("|", r"\|")


def actions_then_mean(results: dict) -> list:
    """The actions of the first protocol in `results`, in their order, then "mean"."""
    first = results[next(iter(results))]
    return [action for action in first if action != "mean"] + ["mean"]


def _check_format(fmt: str, allowed=FORMATS) -> None:
    if fmt not in allowed:
        raise ValueError(f"fmt must be one of {', '.join(map(repr, allowed))}, not {fmt!r}")


def _check_caption(caption) -> None:
    if caption is not None and "\n" in caption:
        raise ValueError(f"a caption is one line, not {caption!r}")


def _value_or_none(value):
    """A finite number as float, anything else (absent, None, NaN) as None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _number(value, decimals: int) -> str:
    """`value` with `decimals` decimals, or MISSING when there is no finite value."""
    value = _value_or_none(value)
    return MISSING if value is None else f"{value:.{decimals}f}"


def _markdown_lines(header: list, rows: list) -> list:
    """A pipe table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _latex_row(cells: list) -> str:
    return " & ".join(cells) + r" \\"


def _latex_tabular(header: list, rows: list, last_row_apart: bool = False) -> list:
    """Booktabs tabular lines: `l` then `r` columns; a rule before the last row if asked."""
    body = [_latex_row(row) for row in rows]
    if last_row_apart:
        body.insert(len(body) - 1, r"\midrule")
    return [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", _latex_row(header), r"\midrule",
            *body, r"\bottomrule", r"\end{tabular}"]


def _latex_float(tabular: list, caption, environment: str = "table") -> str:
    """The tabular alone, or inside a floating `environment` with its caption above it."""
    if caption is None:
        return "\n".join(tabular) + "\n"
    return "\n".join([rf"\begin{{{environment}}}", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
                      *tabular, rf"\end{{{environment}}}"]) + "\n"


def _markdown_with_caption(lines: list, caption) -> str:
    """The table lines, then the caption in italics (its * and _ taken literally) after a blank line."""
    if caption is not None:
        lines = lines + ["", "*" + re.sub(r"([\\*_])", r"\\\1", caption) + "*"]
    return "\n".join(lines) + "\n"


def format_table(results: dict) -> str:
    """A text table in millimetres: one row per action and a last row with the mean over actions."""
    protocols = list(results)
    actions = [a for a in results[protocols[0]] if a != "mean"]
    width = max(len(a) for a in actions + ["action"]) + 2
    lines = ["action".ljust(width) + "".join(f"{p.upper() + ' (mm)':>10}" for p in protocols)]
    for action in actions + ["mean"]:
        lines.append(action.ljust(width) + "".join(f"{results[p][action]:10.2f}" for p in protocols))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def results_table(results: dict, fmt: str = "latex", decimals: int = 1, caption: str = None) -> str:
    """One evaluation per action as a booktabs LaTeX tabular or a Markdown table, the mean last.

    With `caption`, LaTeX gets a ``table`` environment with ``\\caption``, Markdown an italic
    line under the table."""
    _check_format(fmt, ("latex", "markdown"))
    _check_caption(caption)
    protocols = list(results)
    header = ["Action"] + [f"{protocol.upper()} (mm)" for protocol in protocols]
    names = [action if action != "mean" else "Mean" for action in actions_then_mean(results)]
    values = [[_number(results[p].get(action), decimals) for p in protocols] for action in actions_then_mean(results)]
    if fmt == "markdown":
        rows = [[markdown_escape(name)] + cells for name, cells in zip(names, values)]
        return _markdown_with_caption(_markdown_lines(header, rows), caption)
    rows = [[latex_escape(name)] + cells for name, cells in zip(names, values)]
    return _latex_float(_latex_tabular(header, rows, last_row_apart=True), caption)


def _text_lines(header: list, rows: list) -> list:
    """Aligned plain-text columns: the first left, the others right."""
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    lines = ["  ".join([cells[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])
             for cells in [header] + rows]
    return lines[:1] + ["-" * len(lines[0])] + lines[1:]


def comparison_table(methods: dict, protocols=("p1", "p2"), fmt: str = "markdown", decimals: int = 1) -> str:
    """Methods {name: results} as rows, each with its mean over actions (mm) per protocol."""
    _check_format(fmt)
    header = ["Method"] + [f"{protocol.upper()} (mm)" for protocol in protocols]
    means = [[_number(results.get(p, {}).get("mean"), decimals) for p in protocols] for results in methods.values()]
    if fmt == "text":
        return "\n".join(_text_lines(header, [[name] + cells for name, cells in zip(methods, means)])) + "\n"
    if fmt == "markdown":
        rows = [[markdown_escape(name)] + cells for name, cells in zip(methods, means)]
        return "\n".join(_markdown_lines(header, rows)) + "\n"
    rows = [[latex_escape(name)] + cells for name, cells in zip(methods, means)]
    return "\n".join(_latex_tabular(header, rows)) + "\n"


def _best_columns(values: list, decimals: int) -> list:
    """For each column of `values` (rows of floats or None), the set of rows holding its lowest
    value as printed (rounded to `decimals`), so values that print alike are all best."""
    best = []
    for column in zip(*values):
        present = {row: round(value, decimals) for row, value in enumerate(column) if value is not None}
        lowest = min(present.values(), default=None)
        best.append({row for row, value in present.items() if value == lowest})
    return best


def paper_table(methods: dict, protocol: str = "p1", fmt: str = "latex", decimals: int = 1, caption: str = None,
                bold_best: bool = True) -> str:
    """The per-action table of Human3.6M papers for one protocol: methods {name: results} as rows,
    the 15 actions (abbreviated, in the order of skeleton.ACTIONS) and ``Avg`` (the results'
    "mean") as columns. A value a method lacks prints as ``-``; with `bold_best`, the lowest value
    of each column is bold (every one of them on a tie). LaTeX: a booktabs tabular, inside a
    ``table*`` with ``\\caption`` when `caption` is given; Markdown: a pipe table, `caption` as an
    italic line under it."""
    _check_format(fmt, ("latex", "markdown"))
    _check_caption(caption)
    columns = list(skeleton.ACTIONS) + ["mean"]
    header = ["Method"] + [ACTION_HEADERS[action] for action in skeleton.ACTIONS] + ["Avg"]
    values = []
    for results in methods.values():
        per_action = results.get(protocol, {})
        values.append([_value_or_none(per_action.get(column)) for column in columns])
    best = _best_columns(values, decimals) if bold_best else [set()] * len(columns)
    bold = (lambda text: rf"\textbf{{{text}}}") if fmt == "latex" else (lambda text: f"**{text}**")
    escape = latex_escape if fmt == "latex" else markdown_escape
    rows = []
    for row, (name, row_values) in enumerate(zip(methods, values)):
        cells = [_number(value, decimals) for value in row_values]
        rows.append([escape(name)] + [bold(cell) if row in best[column] else cell for column, cell in enumerate(cells)])
    if fmt == "markdown":
        return _markdown_with_caption(_markdown_lines(header, rows), caption)
    return _latex_float(_latex_tabular(header, rows), caption, environment="table*")


def write_tables(results: dict, folder, stem: str = "results_per_action", caption: str = None) -> list:
    """Write :func:`results_table` as <folder>/<stem>.tex and <stem>.md (the folder is created);
    returns the two paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.tex", folder / f"{stem}.md"]
    for path, fmt in zip(paths, ("latex", "markdown")):
        write_text(path, results_table(results, fmt, caption=caption))
    return paths


def settings_table(run) -> str:
    """A Markdown table of a TrainConfig's main settings beside the published recipe's."""
    from iivformer.config import TrainConfig

    published = TrainConfig()
    rows = [(name, getattr(published, name), getattr(run, name)) for name in ("epochs", "batch_size", "lr", "seed")]
    rows += [(f"model {name}", getattr(published.model, name), getattr(run.model, name))
             for name in ("embed_dim_ratio", "depth", "num_heads")]
    lines = ["| setting | published | this run |", "|---|---:|---:|"]
    return "\n".join(lines + [f"| {name} | {before} | {now} |" for name, before, now in rows]) + "\n"


def metrics_table(values: dict, decimals: int = 1) -> str:
    """A Markdown table of :meth:`Evaluation.other_metrics` with units."""
    labels = {"n_mpjpe": ("N-MPJPE (scale-aligned)", "mm"), "pck_150mm": ("PCK at 150 mm", "%"),
              "auc": ("AUC of PCK, 0-150 mm", "%"), "mpjve": ("velocity error (MPJVE)", "mm/frame")}
    lines = ["| metric | value | unit |", "|---|---:|---|"]
    for name, (label, unit) in labels.items():
        value = values.get(name)
        lines.append(f"| {label} | {MISSING if value is None else f'{value:.{decimals}f}'} | {unit} |")
    return "\n".join(lines) + "\n"


def subsets_table(subsets: dict, protocol: str = "p1", decimals: int = 1) -> str:
    """A Markdown table of :func:`iivformer.subsets.evaluate_subsets`'s "subsets": one row per subset
    of views, the model's and triangulation's mean error (mm) under `protocol`."""
    lines = [f"| views | model {protocol.upper()} (mm) | triangulation {protocol.upper()} (mm) |", "|---|---:|---:|"]
    for name, entry in subsets.items():
        cells = [f"{entry[m][protocol]:.{decimals}f}" if m in entry else MISSING for m in ("model", "triangulation")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
