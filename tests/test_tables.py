"""iivformer.tables: the terminal, Markdown and LaTeX results tables."""
import pytest

from iivformer import skeleton, tables

PAPER_HEADERS = ["Method", "Dir.", "Disc.", "Eat.", "Greet.", "Phone", "Photo", "Pose", "Purch.", "Sit", "SitD.",
                 "Smoke", "Wait", "WalkD.", "Walk", "WalkT.", "Avg"]


def _results(p1_values: dict, p2_values: dict = None) -> dict:
    """A results dict from {action: mm}, "mean" the unweighted mean over the actions given."""
    results = {}
    for protocol, values in (("p1", p1_values), ("p2", p2_values)):
        if values is not None:
            results[protocol] = dict(values, mean=sum(values.values()) / len(values))
    return results


def _every_action(start: float, step: float = 1.0) -> dict:
    return {action: start + step * index for index, action in enumerate(skeleton.ACTIONS)}


def _markdown_cells(line: str) -> list:
    """The cells of a Markdown table row, escaped pipes kept inside their cell."""
    assert line.startswith("|") and line.endswith("|")
    cells, current, index = [], "", 1
    while index < len(line) - 1:
        if line[index] == "\\" and line[index + 1] == "|":
            current, index = current + "\\|", index + 2
            continue
        if line[index] == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += line[index]
        index += 1
    return cells + [current.strip()]


def _latex_cells(line: str) -> list:
    assert line.endswith(r" \\")
    return [cell.strip() for cell in line[:-3].split(" & ")]


@pytest.fixture
def methods():
    """Three methods: a tie for the best Directions, one lacking Eating, distinct means."""
    first = _every_action(30.0)
    second = dict(_every_action(40.0, -1.0), Directions=30.0)  # ties `first` on Directions
    third = {action: value for action, value in _every_action(35.0, 0.5).items() if action != "Eating"}
    third["Eating"] = float("nan")  # evaluated but without a value: printed as missing too
    return {"Baseline": _results(first, first), "Ours (S1_5%)": _results(second, second),
            "Other": {"p1": dict(third, mean=20.0)}}


def _column(rows: list, header: str) -> list:
    return [row[PAPER_HEADERS.index(header)] for row in rows]


def test_action_headers_cover_every_action_in_order():
    assert list(tables.ACTION_HEADERS) == list(skeleton.ACTIONS)
    assert ["Method"] + list(tables.ACTION_HEADERS.values()) + ["Avg"] == PAPER_HEADERS


def test_paper_table_markdown_header_bold_and_missing(methods):
    lines = tables.paper_table(methods, fmt="markdown").strip().splitlines()
    assert _markdown_cells(lines[0]) == PAPER_HEADERS
    assert _markdown_cells(lines[1]) == ["---"] + ["---:"] * 16
    rows = [_markdown_cells(line) for line in lines[2:]]
    assert len(rows) == 3 and all(len(row) == len(PAPER_HEADERS) for row in rows)
    assert [row[0] for row in rows] == ["Baseline", "Ours (S1_5%)", "Other"]
    assert _column(rows, "Dir.") == ["**30.0**", "**30.0**", "35.0"]  # a tie: both bold
    assert _column(rows, "Eat.") == ["**32.0**", "38.0", "-"]  # the missing value is not a candidate
    assert _column(rows, "WalkT.") == ["44.0", "**26.0**", "42.0"]
    assert _column(rows, "Avg") == ["37.0", "32.3", "**20.0**"]


def test_paper_table_avg_is_the_mean_of_the_results(methods):
    rows = [_markdown_cells(line) for line in tables.paper_table(methods, fmt="markdown").strip().splitlines()[2:]]
    expected = [f"{results['p1']['mean']:.1f}" for results in methods.values()]
    assert [cell.strip("*") for cell in _column(rows, "Avg")] == expected


def test_paper_table_latex_layout_header_and_escaping(methods):
    latex = tables.paper_table(methods, protocol="p1", fmt="latex")
    lines = latex.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{l" + "r" * 16 + "}"
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule" and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert _latex_cells(lines[2]) == PAPER_HEADERS
    rows = [_latex_cells(line) for line in lines[4:-2]]
    assert [row[0] for row in rows] == ["Baseline", r"Ours (S1\_5\%)", "Other"]
    assert _column(rows, "Dir.") == [r"\textbf{30.0}", r"\textbf{30.0}", "35.0"]
    assert _column(rows, "Eat.") == [r"\textbf{32.0}", "38.0", "-"]
    assert r"\begin{table" not in latex


def test_paper_table_caption_and_options(methods):
    latex = tables.paper_table(methods, caption="Errors & more_than 5% (mm)")
    lines = latex.strip().splitlines()
    assert lines[0] == r"\begin{table*}" and lines[-1] == r"\end{table*}"
    assert r"\caption{Errors \& more\_than 5\% (mm)}" in lines
    markdown = tables.paper_table(methods, fmt="markdown", caption="P1 errors (mm)")
    assert markdown.endswith("\n\n*P1 errors (mm)*\n")
    plain = tables.paper_table(methods, fmt="markdown", bold_best=False)
    assert "**" not in plain
    p2_rows = tables.paper_table(methods, protocol="p2", fmt="markdown").strip().splitlines()[2:]
    assert set(_markdown_cells(p2_rows[2])[1:]) == {"-"}  # "Other" has no Protocol 2 results
    with pytest.raises(ValueError):
        tables.paper_table(methods, fmt="text")
    with pytest.raises(ValueError):
        tables.paper_table(methods, caption="two\nlines")


def test_bold_compares_values_as_printed():
    methods = {"a": _results({"Walking": 30.04}), "b": _results({"Walking": 29.96}), "c": _results({"Walking": 30.2})}
    rows = [_markdown_cells(line) for line in tables.paper_table(methods, fmt="markdown").strip().splitlines()[2:]]
    assert _column(rows, "Walk") == ["**30.0**", "**30.0**", "30.2"]
    assert _column(rows, "Sit") == ["-", "-", "-"]


def test_latex_escape_every_special_character():
    assert tables.latex_escape(r"a&b%c$d#e_f{g}h~i^j\k") == (
        r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k")


def test_markdown_rows_have_one_cell_per_column():
    results = _results({"Walking": 10.0, "Sitting": 20.0}, {"Walking": 5.0, "Sitting": 7.0})
    methods = {"plain": results, "with | pipe": results}
    for table, columns in ((tables.results_table(results, "markdown"), 3),
                           (tables.comparison_table(methods), 3),
                           (tables.paper_table(methods, fmt="markdown"), 17)):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert rows and all(len(_markdown_cells(row)) == columns for row in rows), table


def test_comparison_table_values_in_each_format(methods):
    markdown = tables.comparison_table(methods).strip().splitlines()
    assert markdown[0] == "| Method | P1 (mm) | P2 (mm) |" and markdown[1] == "|---|---:|---:|"
    assert markdown[2:] == ["| Baseline | 37.0 | 37.0 |", "| Ours (S1_5%) | 32.3 | 32.3 |", "| Other | 20.0 | - |"]
    latex = tables.comparison_table(methods, fmt="latex", decimals=2).strip().splitlines()
    assert latex[0] == r"\begin{tabular}{lrr}" and r"Ours (S1\_5\%) & 32.33 & 32.33 \\" in latex
    text = tables.comparison_table(methods, protocols=("p1",), fmt="text").strip().splitlines()
    assert [line.split() for line in text[2:]] == [["Baseline", "37.0"], ["Ours", "(S1_5%)", "32.3"], ["Other", "20.0"]]
    assert set(text[1]) == {"-"} and len({len(line) for line in text}) == 1
    with pytest.raises(ValueError):
        tables.comparison_table(methods, fmt="html")


def test_format_table_lists_actions_and_the_mean():
    results = {"p1": {"Walking": 10.0, "Sitting": 20.0, "mean": 15.0},
               "p2": {"Walking": 5.0, "Sitting": 7.0, "mean": 6.0}}
    lines = tables.format_table(results).splitlines()
    assert lines[0].split() == ["action", "P1", "(mm)", "P2", "(mm)"]
    assert [line.split() for line in lines[1:3]] == [["Walking", "10.00", "5.00"], ["Sitting", "20.00", "7.00"]]
    assert set(lines[3]) == {"-"}
    assert lines[-1].split() == ["mean", "15.00", "6.00"]


def test_results_table_caption():
    results = _results({"Walking": 10.0, "Sitting": 20.0}, {"Walking": 5.0, "Sitting": 7.0})
    latex = tables.results_table(results, "latex", caption="S9_S11, 50% of frames").strip().splitlines()
    assert latex[:3] == [r"\begin{table}", r"\centering", r"\caption{S9\_S11, 50\% of frames}"]
    assert latex[3] == r"\begin{tabular}{lrr}" and latex[-1] == r"\end{table}"
    assert tables.results_table(results, "latex").startswith(r"\begin{tabular}{lrr}")
    assert tables.results_table(results, "markdown", caption="x*y").endswith("| Mean | 15.0 | 6.0 |\n\n*x\\*y*\n")


def test_write_tables_writes_both_files_with_the_caption(tmp_path):
    results = _results({"Walking": 10.0, "Sitting": 20.0}, {"Walking": 5.0, "Sitting": 7.0})
    paths = tables.write_tables(results, tmp_path / "new" / "tables", stem="s9", caption="Per-action errors (mm)")
    assert [path.name for path in paths] == ["s9.tex", "s9.md"]
    assert paths[0].read_text() == tables.results_table(results, "latex", caption="Per-action errors (mm)")
    assert paths[1].read_text() == tables.results_table(results, "markdown", caption="Per-action errors (mm)")
    assert r"\caption{Per-action errors (mm)}" in paths[0].read_text()
    assert paths[1].read_text().endswith("*Per-action errors (mm)*\n")
    assert sorted(path.name for path in paths[0].parent.iterdir()) == ["s9.md", "s9.tex"]  # no temporary left


def test_settings_table_sets_a_run_beside_the_published_recipe():
    from iivformer.config import training_config

    lines = tables.settings_table(training_config("ci")).splitlines()
    assert lines[0] == "| setting | published | this run |"
    assert "| lr | 0.0004 | 0.004 |" in lines and "| model depth | 4 | 2 |" in lines and "| seed | 42 | 42 |" in lines


def test_metrics_table_shows_missing_values_as_a_dash():
    text = tables.metrics_table({"n_mpjpe": 12.345, "pck_150mm": 99.0, "auc": 70.0, "mpjve": None})
    assert "| N-MPJPE (scale-aligned) | 12.3 | mm |" in text and "| velocity error (MPJVE) | - | mm/frame |" in text
