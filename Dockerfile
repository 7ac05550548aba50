# The reana-log-sse image used by manifests/ (reanahub/reana-log-sse). In a cluster the
# service is given REANA_LOG_SSE_DATABASE_URL; the embedded PostgreSQL is never started.
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY reana_log_sse ./reana_log_sse
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home reana-log-sse
USER 10001
EXPOSE 8000
ENTRYPOINT ["reana-log-sse"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
