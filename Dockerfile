# The genqueue image: workers, the simulator and the CLI (one image, several commands).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GENQUEUE_LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY producer ./producer
COPY worker ./worker
COPY simulator ./simulator
COPY genqueue ./genqueue
COPY gateway ./gateway
RUN pip install . && useradd --system --uid 10001 genqueue
USER genqueue
ENTRYPOINT ["genqueue"]
CMD ["worker"]
