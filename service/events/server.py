"""The API's uvicorn server, ending live event streams when it is told to stop.

uvicorn waits for every open response before it exits, and an SSE stream is open until
its batch finishes (or for events_max_stream_s): without this, a SIGTERM would leave
`darkroom serve` running for as long. The streams end at once instead; EventSource
clients reconnect (to another replica) and resume by Last-Event-ID, missing nothing.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from service.events.hub import end_all_streams


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        end_all_streams()
        super().handle_exit(sig, frame)
