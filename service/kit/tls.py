"""One TLS context per verification setting, shared by every HTTP client of the process.

Building a context loads the CA bundle, about 30 ms each time. Every provider account,
the SSRF-guarded client and each test's State made their own (two for a guarded client:
httpx's transport builds one before the pool is rebuilt on the guard), so start-up paid
it a dozen times over. A context is safe to share: clients only wrap sockets with it."""

from __future__ import annotations

import ssl
from functools import lru_cache

import httpx


@lru_cache(maxsize=8)
def tls_context(verify: bool | str = True, *, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's context for `verify` (True: certifi's CA bundle, or SSL_CERT_FILE and
    SSL_CERT_DIR when `trust_env`; a path: that CA file or directory; False: none), made
    once. The SSRF-guarded client passes trust_env=False: nothing from the environment
    shapes its connections."""
    return httpx.create_ssl_context(verify=verify, trust_env=trust_env)
