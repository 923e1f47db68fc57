"""Batch files: POST /v1/batches with a CSV, JSONL or YAML file instead of a JSON body.

A file becomes a FileBatchCreate (the JSON body's schema, with room for more rows) and
goes through batches.service.submit_batch like any other batch; what this package adds
is reading the file as it streams in, and naming the line and column of every problem.
"""
