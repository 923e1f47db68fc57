# syntax=docker/dockerfile:1
# Image for the API, the worker and the one-shot migration (same image, different commands).

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from the pinned lock, so code changes do not reinstall them.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install -r requirements.lock
# Then Darkroom itself, from what its wheel is built of (the migrations travel inside it).
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DARKROOM_ENV=production \
    DARKROOM_STORAGE_DIR=/data/outputs \
    PROMETHEUS_MULTIPROC_DIR=/data/metrics
RUN groupadd --system --gid 10001 darkroom \
    && useradd --system --uid 10001 --gid darkroom --home-dir /app --shell /usr/sbin/nologin darkroom \
    && mkdir -p /data/outputs \
    && chown -R darkroom:darkroom /data
# The venv is all the image runs: `darkroom migrate` finds the migrations inside the package.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER darkroom
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["darkroom", "serve", "--host", "0.0.0.0", "--port", "8000"]
