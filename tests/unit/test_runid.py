import re

from torchd.core.runid import new_run_id


def test_run_ids_are_twelve_hex_digits_and_differ() -> None:
    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{12}", run_id) for run_id in ids)
