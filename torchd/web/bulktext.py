"""The per-task lines of `/metrics`, written here in the Prometheus text format (0.0.4);
everything else (the registry, the small metrics, the content type) is prometheus-client's.

Why by hand: at 10,000 tasks, with a duration histogram per task, a scrape is about
190,000 samples. Fed to prometheus-client the cheapest ways it offers (a custom Collector
yielding metric families built at scrape time with `add_metric` in bulk, 10 buckets
instead of 14, no `_created` samples), `generate_latest` took 1.0 s (14 buckets: 1.3 s;
collect alone 0.3 s) on this project's 2-core test VM: it builds a Sample with a labels
dict per line, then sorts and escapes each sample's labels and formats each value as it
writes. These lines, written from label text kept per task, take 55-65 ms for the same
samples (`python -m bench metrics` measures both; docs/benchmarks.md has the figures).
The tests parse the whole output with prometheus-client's parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate


def label_value(text: str) -> str:
    """A label's value as the text format writes it between double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def number(value: float) -> str:
    """A sample's value: integers as such, floats as Python writes them (which Prometheus
    reads)."""
    return str(value) if isinstance(value, int) else repr(float(value))


class TaskLines:
    """Writes per-task families; keeps each task's `task="..."` label text between scrapes
    (escaped once per task, not once per line)."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}

    def label(self, task: str) -> str:
        text = self._labels.get(task)
        if text is None:
            text = self._labels[task] = f'task="{label_value(task)}"'
        return text

    def gauge(self, name: str, help_text: str, values: Iterable[tuple[str, float]]) -> str:
        """One gauge family: a sample per (task, value)."""
        label = self.label
        return header(name, "gauge", help_text) + "".join(
            [f"{name}{{{label(task)}}} {number(value)}\n" for task, value in values])

    def info(self, name: str, help_text: str,
             values: Iterable[tuple[str, Sequence[tuple[str, str]]]]) -> str:
        """A gauge of value 1 per task, with its other labels: (task, ((label, value), ...))."""
        label = self.label
        return header(name, "gauge", help_text) + "".join(
            [f"{name}{{{label(task)}"
             + "".join([f',{key}="{label_value(value)}"' for key, value in labels])
             + "} 1\n" for task, labels in values])

    def counter(self, name: str, help_text: str,
                values: Iterable[tuple[tuple[str, str, str], int]], keys: tuple[str, str]
                ) -> str:
        """A counter family (`name` ends in _total) with the task and two more labels,
        `keys`, whose values need no escaping (enum values)."""
        label = self.label
        first, second = keys
        return header(name, "counter", help_text) + "".join(
            [f'{name}{{{label(task)},{first}="{a}",{second}="{b}"}} {count}\n'
             for (task, a, b), count in values])

    def histogram(self, name: str, help_text: str, bounds: Sequence[float],
                  values: Iterable[tuple[str, Sequence[int], float]]) -> str:
        """A histogram family per task: (task, count in each bucket, the last one above
        every bound, sum of the values)."""
        label = self.label
        les = [repr(float(bound)) for bound in bounds] + ["+Inf"]
        out = [header(name, "histogram", help_text)]
        for task, counts, total in values:
            tag = label(task)
            prefix = f'{name}_bucket{{{tag},le="'
            cumulative = list(accumulate(counts))
            out.extend([f'{prefix}{le}"}} {count}\n' for le, count in zip(les, cumulative,
                                                                            strict=True)])
            out.append(f"{name}_sum{{{tag}}} {total!r}\n{name}_count{{{tag}}} "
                       f"{cumulative[-1]}\n")
        return "".join(out)
