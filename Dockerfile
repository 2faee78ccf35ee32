# lethe: the CLI and jobs in a container. The steps are the README's: `npm ci` installs the
# locked dependencies and its `prepare` script compiles src/ to dist/, which bin/lethe.js
# runs, so what the test suite proves is what this image runs.

# --- build: the README's install step, then drop the dev dependencies -------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
# The sources come before `npm ci`, because its prepare script compiles them.
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY bench ./bench
RUN npm ci && npm prune --omit=dev

# --- runtime: compiled JavaScript only (no sources, compilers or npm cache), a non-root user
FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends age jq postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/lethe --create-home lethe
WORKDIR /app
# package.json says the compiled files are ES modules ("type": "module").
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/bin/lethe.js ./bin/
COPY config ./config
COPY runbooks ./runbooks
ENV NODE_ENV=production LETHE_CONFIG=/etc/lethe/lethe.yaml
USER lethe
# The heap cap is bin/lethe.js's own (see its first line): node is named here, so pass it too.
ENTRYPOINT ["node", "--max-old-space-size=128", "--max-semi-space-size=8", "/app/bin/lethe.js"]
CMD ["--help"]
