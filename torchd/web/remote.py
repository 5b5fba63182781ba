"""Reading another cluster host's HTTP API, for the Hosts screen.

Only an address a host advertised in its heartbeat (the `cluster` verb's reply) is ever
asked, only by a path this module builds, never following a redirect. The admin token
goes along only when `daemon.http.token_file` is set: the hosts then share that file, so
the token is theirs already; without it every host has a token of its own in its state
dir, and this host has nothing to send (the caller links to the other host instead)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

TIMEOUT = 5.0  # seconds for the whole request
MAX_BODY = 4 << 20  # bytes of a log (or a reply) read at most
_ADDRESS = re.compile(r"https?://[^/@\s?#]+/")


class RemoteError(Exception):
    """The other host could not be asked, or did not answer as the API does."""


def address_of(beat: dict[str, Any]) -> str | None:
    """The HTTP address a heartbeat advertises (http://HOST:PORT/), if it is one."""
    value = beat.get("http")
    return value if isinstance(value, str) and _ADDRESS.fullmatch(value) else None


def api_path(*parts: str) -> str:
    """`api/v1/...` with each part quoted (a run id cannot add a path or a query)."""
    return "api/v1/" + "/".join(quote(part, safe="") for part in parts)


async def fetch(address: str, path: str, token: str, *,
                query: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """GET `path` (from api_path) on the host at `address` with `token`: the status, the
    body (at most MAX_BODY bytes) and whether it was cut there. RemoteError if the host
    cannot be reached in TIMEOUT."""
    if not _ADDRESS.fullmatch(address):
        raise RemoteError(f"{address!r} is not an http://HOST:PORT/ address")
    url = URL(address + path, encoded=True)
    if query:
        url = url.with_query(query)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                url, headers={"Authorization": f"Bearer {token}"},
                allow_redirects=False) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_BODY:
                    return response.status, bytes(body[:MAX_BODY]), True
            return response.status, bytes(body), False
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RemoteError(f"{address} did not answer: {type(exc).__name__}: {exc}".rstrip(": ")
                          ) from None
