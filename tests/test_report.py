"""Benchmark reports: Markdown tables and the Pareto plot."""
from tfpref.evaluation.report import markdown_table, pareto_plot

ROWS = [{"label": "mle", "misalignment": 0.01, "nll": 1.20},
        {"label": "conditional", "misalignment": 0.002, "nll": 1.23, "extra": None}]


def test_markdown_table_formats_and_marks_missing_values():
    table = markdown_table(ROWS, [("label", "objective", None), ("misalignment", "misalignment", ".3f"),
                                  ("extra", "extra", ".1f")])
    assert table.splitlines() == ["| objective | misalignment | extra |", "|---|---|---|",
                                  "| mle | 0.010 | — |", "| conditional | 0.002 | — |"]


def test_pareto_plot_writes_a_png(tmp_path):
    path = pareto_plot(ROWS, "nll", "misalignment", "label", str(tmp_path / "p.png"), "loss", "misalignment", "t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
