"""One run of an HTTP task: a request made on the daemon's event loop with the aiohttp
client (no process), its exchange written to the task log, its end handed back as a
process run's is (process.runner).

The run's life is a command's: started, stopped by `kill` (its request cancelled: outcome
killed), by its timeout (`http.timeout` from its start: outcome timeout), or ended by the
response: ok when the status is one of `expect_status` and the body matches
`expect_body`, failed otherwise or when no response came (the reason says which).

`${NAME}` in the URL, headers and body is replaced just before the request (see
core.envsubst); what is logged is the template, and any substituted value a server sends
back, or an error message quotes, is masked.

Many HTTP runs due at once begin START_SLICE per pass of the event loop (HttpClient.begin),
so that a thousand of them do not hold the loop in one long pass while a command's fire
is due; the session's connection limits bound what is in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchd.core.envsubst import Masker, Unresolved, substitute
from torchd.core.model import RunOutcome, RunState
from torchd.core.timefmt import iso_utc
from torchd.process.output import EchoStream, stamp_lines
from torchd.process.runner import LaunchRequest, Run, StartError
from torchd.store.tasklog import TaskLog

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("torchd.runner")

START_SLICE = 32  # HTTP runs begun in one pass of the event loop
CONNECTIONS = 256  # open at once across every host
CONNECTIONS_PER_HOST = 64  # to one host (a thousand checks of one service queue here)
MATCH_BYTES = 1 << 20  # expect_body is searched in this much of the body at least
READ_CHUNK = 65536
TORCHD_PREFIX = "TORCHD_"  # the run's own variables, no secrets: never masked


@dataclass(slots=True, kw_only=True)
class HttpStarted:
    """An HTTP run about to begin, its request resolved (the counterpart of Spawned)."""

    request: LaunchRequest
    url: str  # with every ${NAME} replaced
    headers: dict[str, str]
    body: bytes | None
    masker: Masker
    started: float
    started_mono: float


def prepare(request: LaunchRequest, *, clock_time: Callable[[], float],
            clock_mono: Callable[[], float]) -> HttpStarted:
    """The request with `${NAME}` replaced from the run's environment; StartError (the
    request is not made) when a name has no value or the URL does not parse."""
    call = request.http
    assert call is not None  # noqa: S101 - an HTTP task's request
    env = request.env
    used: dict[str, str] = {}
    try:
        url = substitute(call.url, env, "url", used)
        headers = {name: substitute(value, env, f"header {name}", used)
                   for name, value in call.headers}
        body = None if call.body is None else substitute(call.body, env, "body", used)
    except Unresolved as exc:
        raise StartError(str(exc)) from None
    masker = Masker(value for name, value in used.items()
                    if not name.startswith(TORCHD_PREFIX))
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in url):
        raise StartError("url: not a valid URL once ${NAME}s are replaced (no host, or a "
                         "value put in holds a space or a line break)")
    if any("\r" in value or "\n" in value for value in headers.values()):
        raise StartError("headers: a substituted value holds a line break")
    return HttpStarted(request=request, url=url, headers=headers,
                       body=None if body is None else body.encode(), masker=masker,
                       started=clock_time(), started_mono=clock_mono())


class HttpClient:
    """The one client session of every HTTP run: made at the first run (on the loop),
    closed at shutdown; and the queue of runs waiting to begin."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._waiting: deque[HttpRunHandle] = deque()
        self._draining: asyncio.Handle | None = None

    @staticmethod
    def warm() -> None:
        """Load the client now (a config with HTTP tasks was applied): importing aiohttp
        takes a few hundred milliseconds of CPU, which must not fall on a fire."""
        import aiohttp  # noqa: F401, PLC0415 - loaded only by daemons that have HTTP tasks

    def session(self) -> aiohttp.ClientSession:
        import aiohttp  # noqa: PLC0415 - loaded only by daemons that have HTTP tasks

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS,
                                             limit_per_host=CONNECTIONS_PER_HOST)
            # No timeout of the session's own: each run's is its own (see HttpRunHandle).
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar())  # no run sees another's cookies
        return self._session

    def begin(self, handle: HttpRunHandle) -> None:
        """Begin the run in one of the next passes of the loop, START_SLICE a pass."""
        self._waiting.append(handle)
        if self._draining is None:
            self._draining = asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._draining = None
        for _ in range(min(START_SLICE, len(self._waiting))):
            self._waiting.popleft().begin()
        if self._waiting:
            self._draining = asyncio.get_running_loop().call_soon(self._drain)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpRunHandle:
    """Owns one HTTP run from its fire to its end (the counterpart of RunHandle)."""

    def __init__(self, run: Run, started: HttpStarted, *, client: HttpClient,
                 open_log: Callable[[], TaskLog], clock_time: Callable[[], float],
                 clock_mono: Callable[[], float], on_begin: Callable[[Run], None],
                 on_exit: Callable[[Run], None], echo: EchoStream | None = None,
                 stamped: bool = False) -> None:
        self.run = run
        self._started = started
        self._client = client
        self._open_log = open_log  # opened as it begins: a file open is no fire's work
        self._log: TaskLog | None = None
        self._time = clock_time
        self._mono = clock_mono
        self._on_begin = on_begin
        self._on_exit = on_exit
        self._echo = echo
        self._stamped = stamped
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._begun = False
        client.begin(self)

    # ----- the run ---------------------------------------------------------------------
    def begin(self) -> None:
        """Write the log header and send the request (unless it was stopped meanwhile)."""
        run, request = self.run, self.run.request
        if run.state is not RunState.RUNNING:
            return  # stopped while it waited to begin: it ended there
        call = request.http
        assert call is not None  # noqa: S101 - an HTTP run
        self._start_log()
        self._write(f"> {call.method} {call.url}\n".encode())
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(call.timeout, self._time_out)
        self._task = loop.create_task(self._perform())
        self._on_begin(run)

    async def _perform(self) -> None:
        import aiohttp  # noqa: PLC0415 - loaded only by daemons that have HTTP tasks

        started, run = self._started, self.run
        call = run.request.http
        assert call is not None  # noqa: S101 - an HTTP run
        try:
            async with self._client.session().request(
                    call.method, started.url, headers=started.headers, data=started.body,
                    ssl=call.tls_verify) as response:
                run.http_status = response.status
                self._write_head(response)
                kept, more = await self._read_body(response.content, call.max_log_bytes)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        except aiohttp.ClientSSLError as exc:
            self._end(RunOutcome.FAILED, f"TLS: {self._described(exc)}")
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._end(RunOutcome.FAILED, f"connection error: {self._described(exc)}")
            return
        except Exception as exc:  # one run's failure must never reach the loop
            log.exception("task %s run %s: the request failed unexpectedly", run.task,
                          run.run_id)
            self._end(RunOutcome.FAILED, f"internal error: {self._described(exc)}")
            return
        shown = kept[:call.max_log_bytes]
        self._write(shown + (b"" if not shown or shown.endswith(b"\n") else b"\n"))
        left = more + len(kept) - len(shown)
        if left:
            self._write(f"[... {left} more bytes not kept]\n".encode())
        self._end(*self._verdict(kept))

    async def _read_body(self, content: aiohttp.StreamReader, cap: int) -> tuple[bytes, int]:
        """The body's first max(cap, MATCH_BYTES) bytes, masked, and how many came after."""
        keep = max(cap, MATCH_BYTES)
        parts: list[bytes] = []
        kept = more = 0
        async for chunk in content.iter_chunked(READ_CHUNK):
            room = keep - kept
            if room > 0:
                parts.append(chunk[:room])
                kept += min(room, len(chunk))
            more += max(0, len(chunk) - max(room, 0))
        return self._started.masker.data(b"".join(parts)), more

    def _write_head(self, response: aiohttp.ClientResponse) -> None:
        version = f"HTTP/{response.version.major}.{response.version.minor}" \
            if response.version else "HTTP"
        lines = [f"< {version} {response.status} {response.reason or ''}".rstrip()]
        lines += [f"< {name.decode('latin-1')}: {value.decode('latin-1')}"
                  for name, value in response.raw_headers]
        self._write(self._started.masker.text("\n".join(lines) + "\n<\n").encode())

    def _verdict(self, body: bytes) -> tuple[RunOutcome, str | None]:
        run = self.run
        call = run.request.http
        status = run.http_status
        assert call is not None  # noqa: S101 - an HTTP run
        assert status is not None  # noqa: S101 - it answered
        if not any(low <= status <= high for low, high in call.expect_status):
            return RunOutcome.FAILED, (f"status {status} is not in expect_status "
                                       f"({call.status_text()})")
        pattern = call.expect_body
        if pattern is not None and pattern.search(body.decode("utf-8", "replace")) is None:
            return RunOutcome.FAILED, "the body does not match expect_body"
        return RunOutcome.OK, None

    def _described(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return self._started.masker.text(text)

    def _time_out(self) -> None:
        run = self.run
        if run.state is not RunState.RUNNING:
            return
        call = run.request.http
        assert call is not None  # noqa: S101 - an HTTP run
        log.warning("task %s run %s timed out after %gs; cancelling its request", run.task,
                    run.run_id, call.timeout)
        run.timed_out = True
        self._cancel()

    def _cancelled(self) -> None:
        """The request was cancelled: by its timeout, by a stop, or by the loop's end."""
        run = self.run
        call = run.request.http
        assert call is not None  # noqa: S101 - an HTTP run
        if run.timed_out:
            self._end(RunOutcome.TIMEOUT, f"no response within {call.timeout:g}s")
        else:
            self._end(RunOutcome.KILLED, "stopped by torchd")

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif not self._begun:
            self._cancelled()  # stopped before it began: it ends now

    def _end(self, outcome: RunOutcome, reason: str | None) -> None:
        run = self.run
        if run.state is RunState.EXITED:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        if not self._begun:  # stopped before it began: its header still frames the end
            self._start_log()
            self._on_begin(run)
        run.outcome, run.reason = outcome, reason
        run.ended = self._time()
        run.duration = self._mono() - run.started_mono
        if reason is not None:
            self._write(f"! {reason}\n".encode())
        run.change(RunState.EXITED)  # running|stopping -> exited
        footer = (f"--- torchd {iso_utc(run.ended)} end run={run.run_id} {run.result_text()} "
                  f"duration={run.duration:.3f}s outcome={outcome}\n").encode()
        self._write(footer, stamp=False)
        assert self._log is not None  # noqa: S101 - opened as it began
        run.log_end = self._log.size
        self._log.release()
        if self._echo is not None:
            self._echo.close()
        if not run.done.done():
            run.done.set_result(None)
        self._on_exit(run)

    def _start_log(self) -> None:
        """Open the task's log and write the run's header: the run starts now."""
        run, request = self.run, self.run.request
        self._begun = True
        self._log = self._open_log()
        run.log_file = self._log.name
        run.started, run.started_mono = self._time(), self._mono()
        attempt = f" attempt={request.attempt}" if request.attempt > 1 else ""
        header = (f"--- torchd {iso_utc(run.started)} start run={run.run_id} "
                  f"fire={request.fire_id}{attempt} http config={request.config_digest}\n")
        run.log_start = self._write(header.encode(), stamp=False)

    def _write(self, data: bytes, *, stamp: bool = True) -> int | None:
        if self._echo is not None:
            self._echo.feed(data)
        if stamp and self._stamped:
            data, _ = stamp_lines(data, f"{iso_utc(self._time())} ".encode(), True)
        assert self._log is not None  # noqa: S101 - opened as it began
        return self._log.write(data)

    # ----- what the engine asks (RunControl) --------------------------------------------
    def stop(self, grace: float) -> None:
        """Cancel the request: the run ends killed."""
        if self.run.ask_to_stop():
            self._cancel()

    def kill_now(self) -> None:
        self.stop(0.0)

    def reap_if_exited(self) -> bool:
        return self.run.state is RunState.EXITED

    def lease_renewed(self, expiry: float) -> None:
        """An HTTP run holds no lease (it is never a daemon-type instance)."""
