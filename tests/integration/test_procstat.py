"""Process start times from /proc: the daemon's launch instant."""

import subprocess
import sys
import time

TICK = 0.01  # /proc gives a process's start in 10 ms ticks, rounded down


def test_launch_instant_is_when_the_process_started() -> None:
    before = time.time()
    printed = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.3); "
         "from torchd.system.procstat import launch_instant; "
         "print(launch_instant(), launch_instant(window=0.1), time.time())"],
        capture_output=True, text=True, check=True).stdout
    launched, past_window, after = map(float, printed.split())
    assert before - 2 * TICK <= launched <= after - 0.3  # it slept 0.3 s after starting
    # A process older than the window (an embedding program) gets "now".
    assert launched + 0.3 <= past_window <= after
