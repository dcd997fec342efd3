"""Which fhirServer URLs the service may call (and so send an access token to).

An allowlist of URL prefixes, from CDS_FHIR_SERVER_ALLOWLIST and from the authenticated issuer's
``fhir_servers``. A prefix matches on the exact scheme, host and port and on whole path
segments: ``https://ehr.example.org/fhir`` allows ``https://ehr.example.org/fhir/r4`` but not
``https://ehr.example.org.evil.test/fhir`` nor ``https://ehr.example.org/fhirx``.
Plain http is refused unless CDS_ALLOW_HTTP_FHIR is set (development). ``*`` allows any
server: development only, and the service logs a warning at start.

URLs are normalised per RFC 3986 before they are matched (percent-encoded unreserved characters
decoded, dot segments removed), so ``https://ehr.example.org/fhir/../admin`` or ``.../%2e%2e/...``
is matched, and requested, as the path it really names. What a server could read as another path
than the one matched is refused outright: an encoded slash or backslash (``%2f``, ``%5c``), a
backslash, a dot segment with parameters (``..;``), user info, a fragment, spaces or control
characters. The same rules apply to every ``next`` link and ``Medication/{id}`` read
(:mod:`cds_service.fhir.client`, :mod:`cds_service.fhir.medications`).
"""
from __future__ import annotations

import re
import string
from urllib.parse import unquote, urlsplit

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PERCENT = re.compile(r"%(..)?")
_HEX = frozenset(string.hexdigits)


class UnsafeUrl(ValueError):
    """A URL that cannot be matched safely; the message says why (never the URL itself)."""


def _decode_unreserved(path: str) -> str:
    def sub(m: re.Match[str]) -> str:
        pair = m.group(1)
        if pair is None or not set(pair) <= _HEX:
            raise UnsafeUrl("has a malformed percent-encoding")
        ch = chr(int(pair, 16))
        if ch in "/\\":
            raise UnsafeUrl("has an encoded slash or backslash in its path")
        return ch if ch in _UNRESERVED else "%" + pair.upper()

    return _PERCENT.sub(sub, path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on whole segments."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def normalize_url(url: str) -> str:
    """``url`` as the server will read it: scheme and host in lower case, unreserved characters
    decoded, dot segments removed; the query is kept as it is. Raises UnsafeUrl for what cannot
    be matched safely (see the module's text)."""
    if not isinstance(url, str) or any(c <= " " or c == "\x7f" for c in url):
        raise UnsafeUrl("has spaces or control characters")
    if "\\" in url:
        raise UnsafeUrl("has a backslash")
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    if p.scheme.lower() not in ("https", "http") or not p.hostname:
        raise UnsafeUrl("is not an http(s) URL")
    if "@" in p.netloc:
        raise UnsafeUrl("must not carry credentials (user info)")
    if p.fragment or "#" in url:
        raise UnsafeUrl("must not carry a fragment")
    if "%" in p.netloc:
        raise UnsafeUrl("has a percent-encoded host")
    path = _decode_unreserved(p.path)
    for seg in path.split("/"):
        # "..;" (read as ".." by some servers), or "..%3B": a dot segment this code would not remove
        if seg not in (".", "..") and unquote(seg).split(";", 1)[0] in (".", ".."):
            raise UnsafeUrl("has a dot segment with parameters")
    path = _remove_dot_segments(path)
    return f"{p.scheme.lower()}://{p.netloc.lower()}{path}" + (f"?{p.query}" if p.query else "")


def _parts(url: str) -> tuple[str, str, int | None, str]:
    p = urlsplit(url)
    try:
        port = p.port
    except ValueError:
        port = -1
    default = {"https": 443, "http": 80}.get(p.scheme.lower())
    return p.scheme.lower(), (p.hostname or "").lower(), port or default, p.path.rstrip("/")


def prefix_matches(prefix: str, url: str) -> bool:
    """Both are normalised first; a URL that cannot be (see :func:`normalize_url`) never matches."""
    try:
        prefix, url = normalize_url(prefix), normalize_url(url)
    except UnsafeUrl:
        return False
    ps, ph, pp, ppath = _parts(prefix)
    us, uh, up, upath = _parts(url)
    if (ps, ph, pp) != (us, uh, up) or not ph:
        return False
    return upath == ppath or upath.startswith(ppath + "/")


def untrusted_reason(url: str, allowlist: list[str], issuer_servers: list[str], allow_http: bool,
                     what: str = "fhirServer") -> str | None:
    """None when the service may call ``url``; otherwise why not. ``what`` names the URL in the
    reason: the fhirServer itself (which must not carry a query), or a link read from it."""
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return f"{what} is not a valid URL"
    if p.scheme not in ("https", "http") or not p.hostname:
        return f"{what} is not an http(s) URL"
    if p.username or p.password or "@" in p.netloc:
        return f"{what} must not carry credentials in the URL"
    try:
        normalize_url(url)
    except UnsafeUrl as exc:
        return f"{what} {exc}"
    if what == "fhirServer" and p.query:
        return "fhirServer must not carry a query"
    if p.scheme == "http" and not allow_http:
        return f"{what} uses plain http; only https is allowed (CDS_ALLOW_HTTP_FHIR is for development)"
    if "*" in allowlist:
        return None
    if any(prefix_matches(prefix, url) for prefix in list(allowlist) + list(issuer_servers)):
        return None
    return f"{what} is not on the allowlist of trusted FHIR servers"
