# The monitor image: `monitor serve`, `monitor app` and the one-shot commands.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY metrics_sql ./metrics_sql
COPY app_streamlit ./app_streamlit
RUN pip install . && useradd --system --home /app monitor
COPY examples ./examples
COPY alerts ./alerts
COPY dashboards ./dashboards
USER monitor
EXPOSE 9108 8501
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)" || exit 1
CMD ["monitor", "serve", "--config", "/app/examples/monitor.yaml", "--port", "9108", "--host", "0.0.0.0"]
