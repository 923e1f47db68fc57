"""The OpenAI-compatible door: /openai/v1 speaks OpenAI's images and Batch APIs on top of
Darkroom's batches, so an app written against OpenAI changes only its base URL."""
