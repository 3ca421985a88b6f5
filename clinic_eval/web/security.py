"""Who is asking, as far as the server can tell without trusting what a client may forge."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or the hop our own proxies appended to X-Forwarded-For.

    Each trusted proxy appends the address it received the request from, so with N proxies the
    client is the N-th entry from the right; anything further left was written by the client.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [hop for hop in hops if hop]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None
