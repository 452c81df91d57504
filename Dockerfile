FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY storage ./storage
COPY prompts ./prompts
RUN pip install --no-cache-dir . && useradd --create-home sigops && mkdir -p /data && chown sigops /data

USER sigops
ENV SIGOPS_DATA_DIR=/data SIGOPS_HTTP_HOST=0.0.0.0 SIGOPS_HTTP_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["sigops", "serve"]
