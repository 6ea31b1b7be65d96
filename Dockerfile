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
#
# KODO_UID/KODO_GID: the user every kodo process runs as. Make them the owner of the
# bind-mounted repositories (compose passes `id -u`/`id -g` when you set them): git
# refuses a repository another user owns ("dubious ownership"), and kodo's hardened git
# reads no system or global config (shared/gitcmd.py), so a `safe.directory` there would
# never reach it; the worker also writes the repository's .git (worktrees, branches).
ARG KODO_UID=1000
ARG KODO_GID=1000
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && (getent group "${KODO_GID}" >/dev/null || groupadd --gid "${KODO_GID}" kodo) \
    && useradd --create-home --non-unique --uid "${KODO_UID}" --gid "${KODO_GID}" kodo \
    && mkdir -p /data/workspaces/runs /data/secrets /repos \
    && chown "${KODO_UID}:${KODO_GID}" /data/workspaces /data/workspaces/runs /data/secrets /repos \
    && chmod 0700 /data/secrets

# The build's identity (the tree is copied without .git): app_version() is
# 0.1.0+$KODO_BUILD_ID, or 0.1.0+unknown without it. See shared/version.py.
ARG KODO_BUILD_ID=""
ENV KODO_BUILD_ID=${KODO_BUILD_ID}

WORKDIR /app
COPY --chown=${KODO_UID}:${KODO_GID} . .
RUN pip install -c constraints.txt .

USER kodo
EXPOSE 8000 4096 5555
CMD ["gunicorn", "-c", "python:services.api.gunicorn_conf", "-b", "0.0.0.0:8000", "services.api.wsgi:app"]
