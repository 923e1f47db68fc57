"""Images callers send to feed into jobs: POST /v1/uploads, and the check they pass."""
