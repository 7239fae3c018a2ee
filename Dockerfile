# syntax=docker/dockerfile:1
# The SMS Leads REST proxy as a small, non-root image (README: "Running it in a container"):
#   docker build -t smsleads-proxy .
#   docker run --rm -p 8080:8080 -e SMSLEADS_SANDBOX=true smsleads-proxy
# tests/test_docker.py runs this file's pip steps, HEALTHCHECK and CMD in a clean virtual
# environment, and hadolint checks it.

# ── build: the proxy's wheel and every dependency's, so the image installs offline ──────────
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 WHEELS=/wheels
WORKDIR /src
# proxy/openapi.yaml links to ../openapi.yaml: both are copied, the wheel holds the content.
COPY pyproject.toml README.md openapi.yaml ./
COPY proxy/ proxy/
RUN python -m pip wheel --no-cache-dir --wheel-dir "$WHEELS" .

# ── run ─────────────────────────────────────────────────────────────────────────────────────
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHEELS=/wheels
# Time zones come from the tzdata wheel (a dependency): zoneinfo falls back to it.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links "$WHEELS" "$WHEELS"/smsleads_proxy-*.whl
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin proxy \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/smsleads-proxy
USER 10001
# Every setting of README's configuration table can be given the same way (docker run -e).
# The state (Idempotency-Keys, shared by the workers) outlives the container in its volume.
ENV SMSLEADS_PROXY_HOST=0.0.0.0 SMSLEADS_PROXY_PORT=8080 SMSLEADS_PROXY_WORKERS=1 \
    SMSLEADS_STATE_DIR=/var/lib/smsleads-proxy
VOLUME ["/var/lib/smsleads-proxy"]
EXPOSE 8080
# No curl in a slim image: Python asks /healthz on the port the proxy was given.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SMSLEADS_PROXY_PORT', '8080'), timeout=4)"]
CMD ["python", "-m", "proxy"]
