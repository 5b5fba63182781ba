"""Output lines: stamps in the log file, and the rate-limited copy on stdout."""

from __future__ import annotations

from torchd.process.output import MAX_LINE, OutputEcho, stamp_lines


def test_stamps_start_each_line_across_chunks() -> None:
    first, at_start = stamp_lines(b"one\ntw", b"T1 ", True)
    second, at_start = stamp_lines(b"o\nthree\n", b"T2 ", at_start)
    assert (first + second, at_start) == (b"T1 one\nT1 two\nT2 three\n", True)
    assert stamp_lines(b"", b"T ", True) == (b"", True)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_echo_withholds_past_the_rate_and_says_how_many() -> None:
    written: list[bytes] = []
    clock = Clock()
    echo = OutputEcho(written.append, journal=True, clock_time=clock, clock_mono=clock)
    stream = echo.stream("t", "r1", 1, False)  # 1 line/s: bursts of 10
    stream.feed(b"".join(b"%d\n" % n for n in range(15)))
    clock.now = 2.0  # two more lines allowed
    stream.feed(b"15\n16\n17\n")
    stream.close()
    out = b"".join(written).decode().splitlines()
    assert out[:10] == [f"<6>t[r1]: {n}" for n in range(10)]
    assert out[10:] == ["<6>t[r1]: torchd: 5 line(s) not shown here (log.stdout_rate=1/s); "
                        "the task log has them", "<6>t[r1]: 15", "<6>t[r1]: 16",
                        "<6>t[r1]: torchd: 1 line(s) not shown here (log.stdout_rate=1/s); "
                        "the task log has them"]


def test_a_partial_line_waits_for_its_end_but_not_forever() -> None:
    written: list[bytes] = []
    echo = OutputEcho(written.append, journal=True, clock_time=Clock(), clock_mono=Clock())
    stream = echo.stream("t", "r", 100, True)
    stream.feed(b"par")
    assert written == []
    stream.feed(b"tial\n" + b"x" * (MAX_LINE + 1))
    assert b"".join(written) == (b"<3>t[r]: partial\n<3>t[r]: " + b"x" * MAX_LINE
                                 + b" [cut]\n")
