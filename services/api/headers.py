"""Security headers on every response: no framing, no sniffing, no referrer, a strict CSP.

The pages load nothing from elsewhere: their one style block and one script carry a
per-response nonce (``csp_nonce()`` in templates), so an injected ``<script>`` or
inline handler would not run even if escaping ever failed. ``frame-ancestors 'none'``
and ``X-Frame-Options: DENY`` stop another site from framing the approve button.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, g

STATIC_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def csp_nonce() -> str:
    """This response's nonce (made on first use; a page that never asks gets none)."""
    nonce = g.get("csp_nonce")
    if not isinstance(nonce, str):
        nonce = secrets.token_urlsafe(18)
        g.csp_nonce = nonce
    return nonce


def allow_data_images() -> None:
    """Let this response's page show ``data:`` images (the API docs' icons); no script
    or style source changes."""
    g.csp_data_images = True


def content_security_policy(nonce: str | None, *, data_images: bool = False) -> str:
    own = f"'nonce-{nonce}'" if nonce else "'none'"
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {own}",
            f"style-src {own}",
            "connect-src 'self'",
            "img-src 'self' data:" if data_images else "img-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def _secure(response: Response) -> Response:
    for name, value in STATIC_HEADERS.items():
        response.headers[name] = value
    nonce = g.get("csp_nonce")
    response.headers["Content-Security-Policy"] = content_security_policy(
        nonce if isinstance(nonce, str) else None, data_images=g.get("csp_data_images") is True
    )
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"  # pages carry CSRF tokens
    return response


def install_security_headers(app: Flask) -> None:
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.after_request(_secure)
