"""Files in the state dir are replaced whole or not at all."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path


def test_a_short_write_never_replaces_a_file(tmp_path: Path) -> None:
    """`rewrite` on a full filesystem: RLIMIT_FSIZE makes a write short, as a disk
    filling up does; the old file stays whole."""
    script = ("import os, resource, signal, sys\n"
              "from pathlib import Path\n"
              "from torchd.store.statedir import FileModes, rewrite\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
              "try:\n"
              "    rewrite(Path(sys.argv[1]), b'x' * 10000, FileModes(), durable=True)\n"
              "except OSError as exc:\n"
              "    print(exc.errno)\n")
    path = tmp_path / "paused.json"
    path.write_text('{"all": true}')
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                            text=True, timeout=30, check=True)
    assert result.stdout.strip() == str(errno.EFBIG)
    assert path.read_text() == '{"all": true}'
    assert not (tmp_path / "paused.tmp").exists()
