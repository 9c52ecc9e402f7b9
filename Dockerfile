# flou-grpc server image. Multi-stage: build the wheels, then a slim runtime with
# only the runtime dependencies, run as a non-root user.
# (The health probe, compose stack and the build check come with the container issue.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md CHANGELOG.md ./
COPY flou_grpc ./flou_grpc
COPY clients/python ./clients/python
# flou-client (the CLI's client) is not on PyPI: its wheel is built here first, and pip
# finds it in the wheel directory when it resolves flou-grpc's dependencies.
RUN python -m pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
        --wheel-dir /wheels ./clients/python \
    && python -m pip wheel --no-cache-dir --disable-pip-version-check \
        -c constraints.txt --find-links /wheels --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /app flou
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --disable-pip-version-check --no-index /wheels/*.whl \
    && rm -rf /wheels
USER flou
WORKDIR /app
ENV FLOU_HOST=0.0.0.0 \
    FLOU_PORT=50051 \
    PYTHONUNBUFFERED=1
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["flou-grpc"]
CMD ["serve"]
