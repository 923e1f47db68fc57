"""Notifications: a batch's `notify` URLs (Apprise: slack://, mailto://, json://, ...) are
told its summary when it completes. The event goes through the outbox like a webhook (one
`notify` event per URL, written in the transaction that completes the batch) and is
delivered, retried and logged by service/webhooks; `sink.py` makes one attempt.

The URLs are secrets (a Slack webhook URL is its own credential): they stay in
`batches.notify`, never in an event's URL or payload, a log line or an API answer."""
