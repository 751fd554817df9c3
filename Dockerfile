# blocktimesd in a container.  Build: docker build -t blocktimesd .
# Run:  docker run -d -p 9615:9615 -v blocktimesd-data:/data blocktimesd
#       docker run --rm blocktimesd --version
#       docker run --rm -p 9944:9944 -p 9945:9945 blocktimesd devnet --host 0.0.0.0
# Settings are the daemon's environment variables (docs/runbook/config.md), e.g.
#       -e CONSENSUS_RPC_WS=ws://node:9944 -e AUTO_EVM_RPC_WS=ws://operator:9944
# See docs/runbook/operations.md#docker.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/docker/install.sh /usr/local/bin/install-blocktimesd
COPY pyproject.toml README.md ./
COPY blocktimesd ./blocktimesd
COPY scripts/duckdb ./scripts/duckdb
# The same path as in the final stage: the venv's scripts name their interpreter by path.
RUN sh /usr/local/bin/install-blocktimesd /opt/blocktimesd /src


FROM python:3.11-slim
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 blocktimesd \
    && useradd --system --uid 10001 --gid blocktimesd --home-dir /data \
        --no-create-home --shell /usr/sbin/nologin blocktimesd \
    && install -d -o blocktimesd -g blocktimesd -m 0750 /data
COPY --from=builder /opt/blocktimesd /opt/blocktimesd
ENV PATH=/opt/blocktimesd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    METRICS_ADDR=0.0.0.0:9615
VOLUME ["/data"]
EXPOSE 9615
USER 10001:10001
WORKDIR /data
# /healthz: 200 while the daemon's loops run (METRICS_ADDR's port; no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('METRICS_ADDR', ':9615').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# docker stop sends SIGTERM and waits 10 s; the daemon's shutdown deadline is 8 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["blocktimesd"]
CMD ["run"]
