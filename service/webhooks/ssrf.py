"""Moved to service.kit.ssrf (which also guards the connection); kept for old imports."""

from service.kit.ssrf import blocked_reason as blocked_reason
