"""Who is signed in to the pages: a signed, expiring session cookie, and the CSRF token every form carries.

Signing in with a token of VISAPP_API_TOKEN sets `visapp_session`: the caller (the hash of the token the API
uses to name a job's owner), a random CSRF token and a session id, signed (itsdangerous, HMAC-SHA1 over a key
derived from every token, so each API process started with the same tokens reads it, and changing the tokens
ends every session) and timestamped (refused past `MAX_AGE_S`). The cookie is HttpOnly, SameSite=Strict, Secure
when the request came over HTTPS, and expires with the session. Signing out deletes it and refuses its id in
this process from then on. The sign-in form has its own CSRF cookie (`visapp_sign_in`), so that a visit to
the sign-in page never replaces the session of a browser that is signed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response

SESSION_COOKIE = "visapp_session"
SIGN_IN_COOKIE = "visapp_sign_in"
PATH = "/ui"
MAX_AGE_S = 8 * 3600
SIGN_IN_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Session:
    """What a cookie says: who is signed in, the CSRF token of its forms, the session's id."""

    owner: str | None  # None: the sign-in form's (nobody is signed in)
    csrf: str
    id: str


def _key(tokens: tuple[bytes, ...]) -> bytes:
    if not tokens:  # the service runs open (loopback only): sessions last as long as the process
        return secrets.token_bytes(32)
    return hmac.new(b"visapp pages session", b"\n".join(sorted(tokens)), hashlib.sha256).digest()


@dataclass
class Sessions:
    """Makes and reads the pages' cookies with a key derived from the service's tokens."""

    tokens: tuple[bytes, ...]
    ended: dict[str, float] = field(default_factory=dict)  # session id -> when it would have expired

    def __post_init__(self) -> None:
        from itsdangerous import URLSafeTimedSerializer

        key = _key(self.tokens)
        self.signed = URLSafeTimedSerializer(key, salt="visapp-session")
        self.sign_in_signed = URLSafeTimedSerializer(key, salt="visapp-sign-in")

    def _load(self, serializer: Any, value: str | None, max_age: int) -> dict[str, Any] | None:
        from itsdangerous import BadSignature

        if not value:
            return None
        try:
            data = serializer.loads(value, max_age=max_age)
        except BadSignature:  # forged, damaged or expired (SignatureExpired is a BadSignature)
            return None
        return data if isinstance(data, dict) else None

    def read(self, headers: Headers) -> Session | None:
        """The signed-in session the request's cookie carries, or None."""
        cookies = cookie_parser(headers.get("cookie", ""))
        data = self._load(self.signed, cookies.get(SESSION_COOKIE), MAX_AGE_S)
        if data is None or not data.get("o") or data.get("i") in self.ended:
            return None
        return Session(str(data["o"]), str(data["c"]), str(data["i"]))

    def read_sign_in(self, headers: Headers) -> Session | None:
        """The sign-in form's CSRF token, from its cookie."""
        cookies = cookie_parser(headers.get("cookie", ""))
        data = self._load(self.sign_in_signed, cookies.get(SIGN_IN_COOKIE), SIGN_IN_MAX_AGE_S)
        return None if data is None else Session(None, str(data["c"]), "")

    def start(self, response: Response, owner: str, https: bool) -> None:
        """Sign in: the session cookie set, the sign-in form's cookie deleted."""
        value = self.signed.dumps({"o": owner, "c": new_csrf(), "i": secrets.token_urlsafe(12)})
        response.set_cookie(SESSION_COOKIE, value, max_age=MAX_AGE_S, path=PATH, secure=https, httponly=True,
                            samesite="strict")  # fmt: skip
        response.delete_cookie(SIGN_IN_COOKIE, path=PATH, secure=https, httponly=True, samesite="strict")

    def sign_in_cookie(self, response: Response, csrf: str, https: bool) -> None:
        """The sign-in form's cookie, holding the CSRF token the form carries."""
        response.set_cookie(SIGN_IN_COOKIE, self.sign_in_signed.dumps({"c": csrf}), max_age=SIGN_IN_MAX_AGE_S,
                            path=PATH, secure=https, httponly=True, samesite="strict")  # fmt: skip

    def end(self, response: Response, session: Session, https: bool) -> None:
        """Sign out: the cookie deleted, and its id refused by this process until it would have expired."""
        now = time.time()
        self.ended = {sid: until for sid, until in self.ended.items() if until > now}
        self.ended[session.id] = now + MAX_AGE_S
        response.delete_cookie(SESSION_COOKIE, path=PATH, secure=https, httponly=True, samesite="strict")


def new_csrf() -> str:
    """A new CSRF token (192 random bits)."""
    return secrets.token_urlsafe(24)


def same_token(given: str, expected: str) -> bool:
    """Whether a form's token is the expected one (compared in constant time; an empty one never is)."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())
