# The real OpenCode daemon for the compose profile `opencode`: opencode-ai@1.18.33 from
# npm (its binary bundles the provider SDKs, so nothing is fetched at run time), plus
# kodo, whose `kodo oc serve` writes the daemon's config (one provider, one model,
# prices, deny-by-default permissions; the key stays an {env:VAR} reference) and execs
# it in bubblewrap (from Debian) where only the workspaces volume is writable.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same user as the kodo image (see its Dockerfile): the worker's uid owns the
# worktrees this daemon edits and the repositories it reads.
ARG KODO_UID=1000
ARG KODO_GID=1000
RUN apt-get update \
    && apt-get install -y --no-install-recommends git nodejs npm ca-certificates bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && (getent group "${KODO_GID}" >/dev/null || groupadd --gid "${KODO_GID}" kodo) \
    && useradd --create-home --non-unique --uid "${KODO_UID}" --gid "${KODO_GID}" kodo \
    && mkdir -p /data/workspaces/runs /repos \
    && chown "${KODO_UID}:${KODO_GID}" /data/workspaces /data/workspaces/runs /repos

WORKDIR /app
COPY --chown=${KODO_UID}:${KODO_GID} . .
RUN pip install -c constraints.txt .
# opencode-ai@1.18.33 where `kodo oc serve` looks for it (one install, at build time).
ENV KODO_OPENCODE_CACHE=/opt/kodo-opencode
RUN kodo oc install

USER kodo
EXPOSE 4096
