"""Simulators of the CMSs Darkroom integrates with: each sends webhooks signed exactly as
its CMS does and serves the write-back API (auth checks and errors included)."""
