"""Secrets kept out of what the agent prints and logs: passwords inside URLs.

``SecretStr`` settings (tokens, passwords) mask themselves; a URL is a plain string whose
userinfo (``scheme://user:password@host``, RFC 3986 3.2.1) may hold a password, as in a
PostgreSQL ``database.url`` or a destination's ``stow_url``.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "**********"


def mask_url_password(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``**********``.

    A URL without a password (or that is not a URL) comes back unchanged.

    Examples
    --------
    >>> mask_url_password("postgresql+psycopg://agent:s3cret@db:5432/liver")
    'postgresql+psycopg://agent:**********@db:5432/liver'
    >>> mask_url_password("sqlite:///var/liver-agent.db")
    'sqlite:///var/liver-agent.db'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
