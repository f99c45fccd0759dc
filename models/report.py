"""The evaluation report: Markdown with a confusion matrix (PNG + CSV) and accuracy vs frames observed (PNG)."""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import ConfigError


def write_report(result: dict, out: Path) -> Path:
    """Write ``out/report.md`` and its figures from an :func:`~dcrn.models.evaluate.evaluate` result."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the report's figures need matplotlib: pip install matplotlib") from None

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = result["classes"]
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{result['model']}`",
        f"- data: `{result['data']}`",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, name in [
        ("top1", "clip top-1"),
        ("top5", "clip top-5"),
        ("num_clips", "clips"),
        ("per_frame_accuracy", "stream per-frame accuracy"),
        ("mean_delay_s", "stream mean detection delay (s)"),
        ("median_delay_s", "stream median detection delay (s)"),
        ("num_changes", "stream action changes"),
        ("num_stream_frames", "stream frames"),
    ]:
        if result.get(key) is not None:
            lines.append(f"| {name} | {result[key]} |")
    if "baseline" in result:
        lines.append(f"| order-agnostic baseline top-1 | {result['baseline']['top1']} |")
    lines.append("")
    if "baseline" in result:
        lines += [f"Baseline: {result['baseline']['method']}.", ""]
    if result.get("confusion"):
        confusion = result["confusion"]
        with open(out / "confusion.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for name, row in zip(classes, confusion, strict=True):
                writer.writerow([name, *row])
        fig, ax = plt.subplots(figsize=(1 + 0.55 * len(classes), 0.8 + 0.5 * len(classes)))
        ax.imshow(confusion, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        peak = max(max(row) for row in confusion) or 1
        for i, row in enumerate(confusion):
            for j, value in enumerate(row):
                if value:
                    color = "white" if value > peak / 2 else "black"
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=color)
        fig.tight_layout()
        fig.savefig(out / "confusion.png", dpi=100)
        plt.close(fig)
        lines += ["## Confusion matrix", "", "![confusion matrix](confusion.png)", "", "(also `confusion.csv`)", ""]
        lines += ["## Per class", "", "| class | precision | recall | clips |", "|---|---|---|---|"]
        for name, row in result["per_class"].items():
            lines.append(f"| {name} | {row['precision']} | {row['recall']} | {row['support']} |")
        lines.append("")
    if result.get("wrong") is not None and result.get("num_clips"):
        wrong = result["wrong"]
        lines += [f"## Clips it got wrong ({len(wrong)} of {result['num_clips']})", ""]
        if wrong:
            lines += ["| clip | true | predicted | p(predicted) | p(true) |", "|---|---|---|---|---|"]
            for w in wrong:
                lines.append(f"| `{w['clip']}` | {w['label']} | {w['predicted']} | {w['score']} | {w['label_score']} |")
        else:
            lines.append("None.")
        lines.append("")
    if result.get("accuracy_by_frames"):
        curve = result["accuracy_by_frames"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(curve) + 1), curve, label="DCRN")
        if "baseline" in result:
            ax.axhline(result["baseline"]["top1"], color="grey", linestyle="--", label="order-agnostic baseline")
        ax.set_xlabel("frames observed")
        ax.set_ylabel("clip accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_frames.png", dpi=100)
        plt.close(fig)
        marks = [t for t in (1, 4, 8, 16, 32, 48, 64) if t <= len(curve)]
        lines += ["## Accuracy vs frames observed", "", "![accuracy vs frames](accuracy_vs_frames.png)", ""]
        lines += ["| frames | " + " | ".join(str(t) for t in marks) + " |", "|---" * (len(marks) + 1) + "|"]
        lines += ["| accuracy | " + " | ".join(str(curve[t - 1]) for t in marks) + " |", ""]
    if result.get("streams"):
        lines += ["## Streams", "", "| stream | frames | per-frame accuracy | changes | mean delay (s) |"]
        lines.append("|---|---|---|---|---|")
        for s in result["streams"]:
            row = [s["stream"], s["frames"], s["per_frame_accuracy"], s["changes"], s["mean_delay_s"]]
            lines.append("| " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
