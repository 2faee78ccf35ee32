# lethe: the daemon (and the CLI, for the CronJobs) in a container. The steps are the
# README's: `npm ci` installs the locked dependencies and its `prepare` script compiles src/
# to dist/, which bin/lethe.js runs, so what the test suite proves is what this image runs.
#
# Node.js 24 LTS (supported until 2028-04), pinned to a patch release so a rebuild gives the
# same runtime; move the tag on purpose, in one commit, after the tests pass on it. Both
# stages use the same tag: the compiled dist/ and node_modules run on the Node they were
# installed by. Debian bookworm, the release the tests' age, jq and PostgreSQL 15 client
# come from.
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# --- build: the README's install step, then drop the dev dependencies -------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# The sources come before `npm ci`, because its prepare script compiles them.
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY bench ./bench
RUN npm ci && npm prune --omit=dev

# --- runtime: compiled JavaScript only (no sources, compilers, tsx or npm cache), non-root
FROM ${NODE_IMAGE} AS runtime
# age, jq and psql are for runbooks/ (disaster recovery without lethe) inside the container.
# The user's uid and gid, 10001, are the ones jobs/kubernetes runs as (runAsUser, fsGroup).
RUN apt-get update \
 && apt-get install -y --no-install-recommends age jq postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lethe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lethe --create-home --shell /usr/sbin/nologin lethe
WORKDIR /app
# package.json says the compiled files are ES modules ("type": "module").
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/bin/lethe.js /app/bin/lethe-probe.js ./bin/
COPY config ./config
COPY runbooks ./runbooks
# Nothing is written under /app at run time: no TypeScript loader, no cache. lethe writes
# only to the system temp directory (verify spools manifests there), so a read-only root
# file system needs a writable /tmp (jobs/kubernetes mounts an emptyDir there).
ENV NODE_ENV=production LETHE_CONFIG=/etc/lethe/lethe.yaml
USER 10001:10001
EXPOSE 9187
# The daemon's /healthz needs no token and answers as soon as it listens. The probe is node
# with one small script (the image has no curl); it fails when nothing listens, so a
# container started for a one-off command (`backup`, `verify`) reports unhealthy: Docker only
# records that, and Kubernetes ignores HEALTHCHECK (jobs/kubernetes has its own probes).
# A daemon.listen on another port: `docker run --health-cmd 'node /app/bin/lethe-probe.js
# http://127.0.0.1:PORT/healthz'`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["node", "/app/bin/lethe-probe.js", "http://127.0.0.1:9187/healthz"]
# The heap cap is bin/lethe.js's own (see its first line): node is named here, so pass it too.
# No core dumps: a crashed lethe (a V8 out-of-memory abort under the heap cap, a SIGSEGV)
# would otherwise write the keys and passwords in its memory to a core file, wherever the
# host's core_pattern says. Neither the Dockerfile nor a Kubernetes pod spec can set
# RLIMIT_CORE, and Node has no setrlimit, so the shell sets it (soft and hard, so nothing
# raises it again) and `exec` replaces itself with node: node keeps the shell's pid, so
# signals (SIGTERM from `docker stop` or the kubelet) and exit codes are lethe's own, as
# with no shell at all. Arguments (CMD, `docker run IMAGE backup`, Kubernetes `args`) pass
# through "$@" unchanged; "lethe" is $0. test/unit/deploy/dockerfile.test.ts runs this line.
ENTRYPOINT ["/bin/sh", "-c", "ulimit -c 0 && exec node --max-old-space-size=128 --max-semi-space-size=8 /app/bin/lethe.js \"$@\"", "lethe"]
# The daemon by default: it listens on 127.0.0.1:9187 unless the config says otherwise
# (daemon.listen; beyond loopback it needs daemon.token). Any other command replaces this:
# `docker run IMAGE backup --json`.
CMD ["daemon", "--json"]
