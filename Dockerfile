# lethe: the CLI and jobs in a container. The steps are the README's (npm ci, then the
# CLI runs the TypeScript sources through tsx), so what the test suite proves is what
# this image runs.

# --- build: install exactly the locked dependencies -------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci && npm prune --omit=dev
COPY bin ./bin
COPY src ./src
COPY config ./config
COPY tsconfig.json ./

# --- runtime: no compilers, no npm cache, a non-root user -------------------------------
FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends age jq postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/lethe --create-home lethe
WORKDIR /app
COPY --from=build /app /app
COPY runbooks ./runbooks
ENV NODE_ENV=production LETHE_CONFIG=/etc/lethe/lethe.yaml
USER lethe
# The heap cap is bin/lethe.js's own (see its first line): node is named here, so pass it too.
ENTRYPOINT ["node", "--max-old-space-size=128", "/app/bin/lethe.js"]
CMD ["--help"]
