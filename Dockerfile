# One image for every kodo process (api, worker, beat, flower, oc, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: workers clone and diff the repositories they run agents on.
# bubblewrap: the sandbox for verification commands (prlimit/setpriv come with util-linux).
# The worker container needs user namespaces and a fresh /proc: docker-compose.yml gives
# the worker (only) seccomp/apparmor/systempaths=unconfined; without them `kodo doctor`
# reports "sandbox" failing and ExecuteST refuses to run commands.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 kodo \
    && mkdir -p /data/workspaces /repos \
    && chown kodo:kodo /data/workspaces /repos

# The build's identity (the tree is copied without .git): app_version() is
# 0.1.0+$KODO_BUILD_ID, or 0.1.0+unknown without it. See shared/version.py.
ARG KODO_BUILD_ID=""
ENV KODO_BUILD_ID=${KODO_BUILD_ID}

WORKDIR /app
COPY --chown=kodo:kodo . .
# flower is only for the monitoring container; it is not a kodo dependency.
RUN pip install -c constraints.txt . \
    && pip install -c constraints.txt "flower>=2.0,<3"

USER kodo
EXPOSE 8000 4096 5555
CMD ["gunicorn", "-c", "python:services.api.gunicorn_conf", "-b", "0.0.0.0:8000", "services.api.wsgi:app"]
