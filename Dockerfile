# syntax=docker/dockerfile:1
# The suite's one image. Each Kubernetes Deployment runs one service:
#   docker run IMAGE quota      (or matcher, calendar; `all` for a trial)
# and the pre-deploy Job runs `eapctl migrate` with --entrypoint eapctl.

# --- build: a virtualenv holding the suite and its dependencies --------------
FROM debian:12.11-slim AS build
# Debian's Python 3.11 is the interpreter the run stage has, at the same path.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 python3-dev=3.11.2-1+b1 \
      build-essential=12.9 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY tools/protogen.py ./tools/
COPY gen ./gen
COPY services ./services
# Generated code comes from the protos here, at build, not from the copy
# in the repository; then the build tools leave the environment.
RUN python3.11 -m venv /opt/eap \
 && /opt/eap/bin/pip install --no-cache-dir grpcio-tools==1.81.1 mypy-protobuf==5.1.0 \
 && rm -rf gen/python && /opt/eap/bin/python tools/protogen.py \
 && /opt/eap/bin/pip install --no-cache-dir . \
 && /opt/eap/bin/pip uninstall --yes grpcio-tools mypy-protobuf pip setuptools

# --- run: distroless Python: no shell, no package manager, no compiler -------
FROM gcr.io/distroless/python3-debian12:nonroot AS run
COPY --from=build /opt/eap /opt/eap
ENV PATH=/opt/eap/bin:/usr/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EAP_GRPC_ADDRESS=0.0.0.0:50051 \
    EAP_METRICS_PORT=9464 \
    EAP_AUTH_MODE=jwt
# distroless's nonroot user; the manifests also require a non-root user.
USER 65532:65532
EXPOSE 50051 9464
ENTRYPOINT ["/opt/eap/bin/eapctl", "serve"]
CMD ["quota"]
