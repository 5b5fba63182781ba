"""The file watcher with real files and inotify."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from torchd.daemon.watcher import FileWatcher


def test_a_write_in_progress_is_not_read_until_the_file_is_closed(tmp_path: Path) -> None:
    """Half a file written in place (still open) is not reloaded; the reload comes once,
    after the writer closes it, and sees it whole. A rename into place is seen too."""
    target = tmp_path / "tasks.yaml"
    target.write_text("old\n")
    seen: list[str] = []

    async def body() -> None:
        changed = asyncio.Event()

        def on_change() -> None:
            seen.append(target.read_text())
            changed.set()

        watcher = FileWatcher(target, on_change)
        pokes: list[bool] = []
        original = watcher._poke

        def counting_poke(complete: bool) -> None:
            pokes.append(complete)
            original(complete)

        watcher._poke = counting_poke  # type: ignore[method-assign]
        watcher.start()
        try:
            with target.open("w") as writer:
                writer.write("first half\n")
                writer.flush()
                async with asyncio.timeout(5):
                    while not pokes:  # the watcher has seen the partial write
                        await asyncio.sleep(0.005)
                assert pokes == [False] * len(pokes)
                writer.write("second half\n")
            async with asyncio.timeout(5):
                await changed.wait()
            changed.clear()
            staged = tmp_path / "tasks.yaml.new"
            staged.write_text("renamed\n")
            os.replace(staged, target)
            async with asyncio.timeout(5):
                await changed.wait()
        finally:
            watcher.stop()

    asyncio.run(body())
    assert seen == ["first half\nsecond half\n", "renamed\n"]
