# One image for the balancer and the demo backends; the command picks which.
#   balancer (default): gunicorn lbsite.wsgi --bind 0.0.0.0:8000
#                       (traffic; the admin listens on ADMIN_BIND, 0.0.0.0:8001:
#                       publish it to trusted networks only)
#   demo backend:       APP=mango gunicorn backend_app.wsgi --bind 0.0.0.0:8081
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/db.sqlite3 \
    ADMIN_BIND=0.0.0.0:8001

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root: the service user can read it, not change it.
COPY . .

# The secret key below exists only for this RUN (settings refuse to load
# without one); the runtime key comes from the environment.
# /data holds the SQLite database (a volume in docker-compose.yml) and must be
# writable by the service user.
RUN SECRET_KEY=build-only-not-used-at-runtime \
        python manage.py collectstatic --noinput \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data

# Numeric, so Kubernetes' runAsNonRoot can verify it (user "app" above).
USER 10001:10001

EXPOSE 8000 8001 8443

CMD ["gunicorn", "lbsite.wsgi", "--bind", "0.0.0.0:8000"]
