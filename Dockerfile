# syntax=docker/dockerfile:1
# syncd container image.
#
#   docker build -t syncd:$(python -c 'import syncd; print(syncd.__version__)') .
#
# Two stages: the builder compiles every wheel (with a compiler, for dependencies that lack
# a binary wheel on the target platform) and installs them into a virtualenv at /opt/syncd;
# the runtime stage copies only that virtualenv onto the same slim base -- no compiler, no
# pip cache, no wheels. Runs as the numeric user 10001, works with a read-only root
# filesystem (bytecode is precompiled, PYTHONDONTWRITEBYTECODE stops writes at run time,
# HOME/TMPDIR point at /tmp, which Kubernetes mounts as an emptyDir).
# tests/integration/test_packaging.py repeats the lock -> wheel -> venv -> smoke-check steps.
#
# Reproducible: the dependencies come from requirements/runtime.txt, every file pinned by
# its sha256 (pip --require-hashes; refresh with `make lock`), and the base image is pinned
# by digest with its tag alongside for the reader (the digest alone decides what is pulled).
# To move to a newer base, look up the digest of the tag and replace both:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
# or override for one build: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. the locked dependencies, each file checked against its recorded sha256 (a layer that
#    is rebuilt only when the lock changes)
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN python -m venv /opt/syncd \
    && /opt/syncd/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
# 2. syncd itself, as a wheel, without dependencies: all of them came from the lock
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY syncd_sandbox ./syncd_sandbox
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/syncd/bin/pip install --no-index --no-deps /wheels/syncd-*.whl \
    && /opt/syncd/bin/pip check \
    && /opt/syncd/bin/pip uninstall -y pip setuptools \
    && python -m compileall -q /opt/syncd/lib

FROM ${PYTHON_IMAGE} AS runtime
ARG SYNCD_UID=10001
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Exactly-once bridge: Debezium CDC in Kafka -> e-invoice platform -> ERP write-back" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/syncd-einvoice/syncd"
RUN groupadd --system --gid ${SYNCD_UID} syncd \
    && useradd --system --uid ${SYNCD_UID} --gid ${SYNCD_UID} --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin syncd
COPY --from=builder /opt/syncd /opt/syncd
COPY config/example.yaml /usr/share/syncd/example.yaml
ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# 3. smoke checks: the entry point starts and the shipped example config validates. The
#    example reads its secrets from mounted files; stand-ins are pointed at through the
#    SYNCD_* overrides and removed in the same step, so no secret file stays in the image.
RUN set -eu; \
    syncd --version; \
    s="$(mktemp -d)"; \
    printf 'postgresql+psycopg://smoke:smoke@localhost:5432/erp' > "$s/dsn"; \
    printf 'smoke' > "$s/secret"; \
    SYNCD_DATABASE__DSN_FILE="$s/dsn" SYNCD_ISSUERS__SH__APP_SECRET_FILE="$s/secret" \
    SYNCD_ISSUERS__BJ__APP_SECRET_FILE="$s/secret" \
    SYNCD_KAFKA__SASL_PASSWORD_FILE="$s/secret" \
    syncd check-config -c /usr/share/syncd/example.yaml --quiet; \
    rm -rf "$s"
USER ${SYNCD_UID}:${SYNCD_UID}
WORKDIR /tmp
EXPOSE 9464
# exec form: syncd is PID 1 and receives SIGTERM directly (graceful drain, see docs/runbook.md)
ENTRYPOINT ["syncd"]
CMD ["run", "-c", "/etc/syncd/config.yaml"]
