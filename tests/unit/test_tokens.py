"""The tokens hosts derive from a shared admin token: the peer token reads and never acts,
and an address is asked only with the shared token's signature."""

from __future__ import annotations

from torchd.store.tokens import Tokens, address_signature, address_verifies, peer_token
from torchd.web.auth import SESSION_TTL, Role, Sessions, role_of_token

ADMIN = "an-admin-token-0123456789"


def test_the_peer_token_is_a_viewer_and_never_the_admin() -> None:
    tokens = Tokens(ADMIN, "a-viewer-token-0123456789")
    assert role_of_token(tokens, ADMIN) is Role.ADMIN
    assert role_of_token(tokens, peer_token(ADMIN)) is Role.VIEWER
    assert role_of_token(tokens, "a-viewer-token-0123456789") is Role.VIEWER
    assert role_of_token(tokens, peer_token("another-admin-token-01234")) is None
    assert ADMIN not in peer_token(ADMIN)


def test_a_session_is_random_expires_and_ends() -> None:
    now = [1000.0]
    sessions = Sessions(lambda: now[0])
    viewer, admin = sessions.new(Role.VIEWER), sessions.new(Role.ADMIN)
    assert viewer != admin
    assert ADMIN not in admin
    assert (sessions.role(viewer), sessions.role(admin)) == (Role.VIEWER, Role.ADMIN)
    assert sessions.role("admin." + viewer) is None
    sessions.end(admin)
    assert sessions.role(admin) is None
    now[0] += SESSION_TTL
    assert sessions.role(viewer) is None


def test_only_an_address_signed_with_the_shared_token_verifies() -> None:
    signed = address_signature(ADMIN, "h1", "http://10.0.0.1:8427/")
    assert address_verifies(ADMIN, "h1", "http://10.0.0.1:8427/", signed)
    assert not address_verifies(ADMIN, "h1", "http://203.0.113.9:8427/", signed)  # planted
    assert not address_verifies(ADMIN, "h2", "http://10.0.0.1:8427/", signed)
    assert not address_verifies(ADMIN, "h1", "http://10.0.0.1:8427/", None)
    assert not address_verifies("another-admin-token-01234", "h1", "http://10.0.0.1:8427/",
                                signed)
