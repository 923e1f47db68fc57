"""The /ui gallery: server-rendered pages for people, signed in with an API key."""
