"""The structured fields of a log line about a task's fire or run: what a JSON log line
(`daemon.log_format: json`) carries beside its message. Every such log call passes
`extra=run_fields(...)`; the formatter reads the fields back from the record by FIELDS.

A field is set only where it applies (a fire that never ran has no run id); the record's
attribute is then absent, and the JSON line leaves it out."""

from __future__ import annotations

FIELDS = ("task", "run_id", "fire_id", "outcome", "duration_s", "host")


def run_fields(task: str, *, run_id: str | None = None, fire_id: str | None = None,
               outcome: str | None = None, duration: float | None = None,
               host: str | None = None) -> dict[str, object]:
    """The `extra=` of a log call about `task`: its run, its fire, how the run ended and
    how long it took (seconds), and the cluster host it concerns."""
    fields: dict[str, object] = {"task": task}
    if run_id is not None:
        fields["run_id"] = run_id
    if fire_id is not None:
        fields["fire_id"] = fire_id
    if outcome is not None:
        fields["outcome"] = outcome
    if duration is not None:
        fields["duration_s"] = round(duration, 3)
    if host is not None:
        fields["host"] = host
    return fields
