# turnout's container image (README: Running several replicas -> In a container).
#
#   docker build -t turnout .
#   docker run --rm -p 8080:8080 -p 8081:8081 turnout              # the example models
#   docker run --rm -p 8080:8080 -v "$PWD/my_models:/models:ro" turnout /models --no-inference-auth
#
# Two stages: the first installs turnout at the versions in constraints.txt (the
# lock the tests passed with) into /opt/turnout, and builds the example repository
# with the build-only tools (scikit-learn, skl2onnx) in a venv of its own that is
# left behind; the second holds only Python, that venv and the models, and runs
# as an unprivileged user. The MiniLM text example is left out (its weights are
# 90 MB): mount a repository that has it.
ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY examples/build_models.py examples/minilm_onnx.py ./examples/
RUN python -m venv /opt/turnout \
 && /opt/turnout/bin/pip install -c constraints.txt . \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install -c constraints.txt '.[examples]' \
 && /opt/build/bin/python examples/build_models.py /models --no-text

FROM ${PYTHON}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin turnout \
 && mkdir -p /var/lib/turnout && chown 10001 /var/lib/turnout
COPY --from=build /opt/turnout /opt/turnout
COPY --from=build --chown=10001 /models /models
ENV PATH=/opt/turnout/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8080 8081 8082
# ready, not just live: a container is healthy once its models serve
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["turnout", "serve"]
# the admin plane (8082) needs keys: mount a key store and add --api-keys /etc/turnout/keys.db
CMD ["/models", "--host", "0.0.0.0", "--http-port", "8080", "--grpc-port", "8081", "--admin-host", "0.0.0.0", \
     "--admin-port", "8082", "--state-dir", "/var/lib/turnout", "--no-inference-auth"]
