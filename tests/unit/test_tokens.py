"""The tokens hosts derive from a shared admin token: the peer token reads and never acts,
and an address is asked only with the shared token's signature."""

from __future__ import annotations

from torchd.store.tokens import Tokens, address_signature, address_verifies, peer_token
from torchd.web.auth import Role, role_of_cookie, role_of_token, session_value

ADMIN = "an-admin-token-0123456789"


def test_the_peer_token_is_a_viewer_and_never_the_admin() -> None:
    tokens = Tokens(ADMIN, "a-viewer-token-0123456789")
    assert role_of_token(tokens, ADMIN) is Role.ADMIN
    assert role_of_token(tokens, peer_token(ADMIN)) is Role.VIEWER
    assert role_of_token(tokens, "a-viewer-token-0123456789") is Role.VIEWER
    assert role_of_token(tokens, peer_token("another-admin-token-01234")) is None
    assert ADMIN not in peer_token(ADMIN)


def test_a_session_cookie_names_its_role_and_cannot_be_promoted() -> None:
    tokens = Tokens(ADMIN, "a-viewer-token-0123456789")
    viewer = session_value("a-viewer-token-0123456789", Role.VIEWER)
    assert role_of_cookie(tokens, viewer) is Role.VIEWER
    assert role_of_cookie(tokens, "admin." + viewer.partition(".")[2]) is None
    assert role_of_cookie(tokens, session_value(ADMIN, Role.ADMIN)) is Role.ADMIN


def test_only_an_address_signed_with_the_shared_token_verifies() -> None:
    signed = address_signature(ADMIN, "h1", "http://10.0.0.1:8427/")
    assert address_verifies(ADMIN, "h1", "http://10.0.0.1:8427/", signed)
    assert not address_verifies(ADMIN, "h1", "http://203.0.113.9:8427/", signed)  # planted
    assert not address_verifies(ADMIN, "h2", "http://10.0.0.1:8427/", signed)
    assert not address_verifies(ADMIN, "h1", "http://10.0.0.1:8427/", None)
    assert not address_verifies("another-admin-token-01234", "h1", "http://10.0.0.1:8427/",
                                signed)
