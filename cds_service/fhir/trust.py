"""Which fhirServer URLs the service may call (and so send an access token to).

An allowlist of URL prefixes, from CDS_FHIR_SERVER_ALLOWLIST and from the authenticated issuer's
``fhir_servers``. A prefix matches on the exact scheme, host and port and on whole path
segments: ``https://ehr.example.org/fhir`` allows ``https://ehr.example.org/fhir/r4`` but not
``https://ehr.example.org.evil.test/fhir`` nor ``https://ehr.example.org/fhirx``.
Plain http is refused unless CDS_ALLOW_HTTP_FHIR is set (development). ``*`` allows any
server: development only, and the service logs a warning at start.
"""
from __future__ import annotations

from urllib.parse import urlsplit


def _parts(url: str) -> tuple[str, str, int | None, str]:
    p = urlsplit(url)
    try:
        port = p.port
    except ValueError:
        port = -1
    default = {"https": 443, "http": 80}.get(p.scheme.lower())
    return p.scheme.lower(), (p.hostname or "").lower(), port or default, p.path.rstrip("/")


def prefix_matches(prefix: str, url: str) -> bool:
    ps, ph, pp, ppath = _parts(prefix)
    us, uh, up, upath = _parts(url)
    if (ps, ph, pp) != (us, uh, up) or not ph:
        return False
    return upath == ppath or upath.startswith(ppath + "/")


def untrusted_reason(url: str, allowlist: list[str], issuer_servers: list[str], allow_http: bool) -> str | None:
    """None when the service may call ``url``; otherwise why not."""
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "fhirServer is not a valid URL"
    if p.scheme not in ("https", "http") or not p.hostname:
        return "fhirServer is not an http(s) URL"
    if p.username or p.password:
        return "fhirServer must not carry credentials in the URL"
    if p.scheme == "http" and not allow_http:
        return "fhirServer uses plain http; only https is allowed (CDS_ALLOW_HTTP_FHIR is for development)"
    if "*" in allowlist:
        return None
    if any(prefix_matches(prefix, url) for prefix in list(allowlist) + list(issuer_servers)):
        return None
    return "fhirServer is not on the allowlist of trusted FHIR servers"
