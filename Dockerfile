# flou-grpc server image. Multi-stage: build the wheels, then a slim runtime with only the
# runtime dependencies, run as a non-root user. Configured by FLOU_* variables (README,
# "Configuration"); the machines come in as a mounted or copied module named by FLOU_APP.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle for pip behind a TLS-intercepting proxy (a path inside a build volume);
# empty: the image's own bundle.
ARG PIP_CERT=""
ENV PIP_CERT=${PIP_CERT} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md CHANGELOG.md ./
COPY flou_grpc ./flou_grpc
COPY clients/python ./clients/python
# flou-client (the CLI's client) is not on PyPI: its wheel is built here first, and pip
# finds it in the wheel directory when it resolves flou-grpc's dependencies.
RUN python -m pip wheel --no-deps --wheel-dir /wheels ./clients/python \
    && python -m pip wheel -c constraints.txt --find-links /wheels --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /app flou
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --disable-pip-version-check --no-index /wheels/*.whl \
    && rm -rf /wheels
USER 10001
WORKDIR /app
ENV FLOU_HOST=0.0.0.0 \
    FLOU_PORT=50051 \
    FLOU_DATABASE_URL=sqlite:////app/flou.db \
    PYTHONUNBUFFERED=1
EXPOSE 50051
# Asks the standard gRPC health service of the server in this container (no token needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "flou_grpc.service.probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["flou-grpc"]
CMD ["serve"]
