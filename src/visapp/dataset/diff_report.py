"""A dataset diff (`visapp.dataset.diff`) -> the readable account `visapp diff` prints: samples, box changes,
class counts, box sizes, then the changed samples (at most `_LISTED` of each; --json has them all)."""

from __future__ import annotations

from collections.abc import Sequence

from visapp.dataset.diff import DatasetDiff, SampleChange, headline

_LISTED = 10  # ids shown per list in the human report; --json has them all


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items) - _LISTED} more; --json lists all)" if len(items) > _LISTED else "")


def _change_lines(change: SampleChange) -> list[str]:
    lines = []
    for box in change.changed:
        kinds = []
        if box.moved:
            kinds.append(f"moved {box.centre_shift:g} px")
        if box.resized:
            kinds.append(
                f"resized {box.before.width:g}x{box.before.height:g} -> {box.after.width:g}x{box.after.height:g}"
            )
        if box.class_changed:
            kinds.append(f"class {box.before.name} -> {box.after.name}")
        lines.append(f"    {box.before.text()} -> {box.after.text()}: {', '.join(kinds)} (IoU {box.iou:.3f})")
    lines += [f"    box added {box.text()}" for box in change.added]
    lines += [f"    box removed {box.text()}" for box in change.removed]
    return lines


def format_diff(diff: DatasetDiff) -> str:
    """A readable account of a diff: samples, box changes, class counts, box sizes, then the changed samples."""
    numbers = headline(diff)
    lines = [
        f"samples  {diff.samples_before} -> {diff.samples_after}: added {numbers['added']}, removed "
        f"{numbers['removed']}, renamed {numbers['renamed']}, image replaced {numbers['replaced']}, relabelled "
        f"{numbers['relabelled']}, unchanged {numbers['unchanged']}",
        f"boxes    {numbers['boxes_before']} -> {numbers['boxes_after']}; in samples of both versions: moved "
        f"{numbers['boxes_moved']}, resized {numbers['boxes_resized']}, class changed "
        f"{numbers['boxes_class_changed']}, added {numbers['boxes_added']}, removed {numbers['boxes_removed']}",
        "",
    ]
    table = [("class", "before", "after", "delta")]
    table += [(c.name, str(c.before), str(c.after), f"{c.delta:+d}") for c in diff.class_counts]
    lines += _table(table)
    lines.append(
        f"class drift: total variation {diff.class_total_variation:.3f}, Jensen-Shannon {diff.class_jensen_shannon:.3f}"
    )
    lines.append("")
    table = [("box (px)", "before p25/p50/p75", "after p25/p50/p75", "KS")]
    for drift in diff.box_sizes:
        table.append((drift.measure, _triple(drift.before), _triple(drift.after), f"{drift.ks:.3f}"))
    lines += _table(table)
    for title, items in (
        ("added", diff.added),
        ("removed", diff.removed),
        ("renamed", [f"{a} -> {b}" for a, b in diff.renamed]),
        ("image replaced", diff.replaced),
    ):
        if items:
            lines.append(f"{title}: {_listed(items)}")
    if diff.relabelled:
        lines.append("relabelled:")
        for change in diff.relabelled[:_LISTED]:
            name = (
                change.id_after if change.id_before == change.id_after else f"{change.id_before} -> {change.id_after}"
            )
            lines.append(f"  {name}")
            lines += _change_lines(change)
        if len(diff.relabelled) > _LISTED:
            lines.append(f"  ... ({len(diff.relabelled) - _LISTED} more; --json lists all)")
    return "\n".join(lines)


def _triple(values: tuple[float, float, float] | None) -> str:
    return "/".join(f"{value:g}" for value in values) if values else "-"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
