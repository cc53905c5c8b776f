# The hub, with the Redis and PostgreSQL drivers: slim, non-root, with a health check.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY hub ./hub
# A C compiler for the install only: it builds the fan-out's send loop (hub/_fanout.c), then
# goes, in the same layer (without it the hub would run its pure Python loop).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install ".[redis,postgres]" \
    && python -c "import hub._fanout" \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home hub

USER hub
WORKDIR /data
ENV HUB_HOST=0.0.0.0 \
    HUB_PORT=8000 \
    HUB_DATABASE_URL=sqlite:////data/hub.db \
    HUB_LOG_FORMAT=json
EXPOSE 8000

# Ready = the process answers and its store and presence backend do too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v1/ready', timeout=2).status != 200)"]

CMD ["hub", "serve"]
