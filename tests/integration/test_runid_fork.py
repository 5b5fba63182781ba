"""Run ids across fork(): a child process draws its own (the pure checks are in
tests/unit/test_runid.py)."""

import os
import re

from torchd.core.runid import new_run_id


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, new_run_id().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    in_child = os.read(read_end, 64).decode()
    os.close(read_end)
    assert re.fullmatch(r"[0-9a-f]{12}", in_child)
    assert in_child != new_run_id()
