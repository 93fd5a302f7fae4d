"""Tables and plots of several runs' results, for benchmarks and reports."""


def markdown_table(rows, columns):
    """A Markdown table of `rows` (dicts); `columns` is [(key, header, format)]."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("—" if value is None else format(value, fmt) if fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pareto_plot(rows, x_key, y_key, label_key, path, x_label, y_label, title):
    """A PNG scatter of `rows` (y on a log scale) with each point labelled. Needs matplotlib."""
    try:
        import matplotlib  # an optional extra (.[bench]), imported only to draw
    except ImportError:
        raise ImportError("the plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for row in rows:
        axes.scatter(row[x_key], row[y_key], s=36)
        axes.annotate(row[label_key], (row[x_key], row[y_key]), textcoords="offset points", xytext=(5, 4),
                      fontsize=8)
    axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
