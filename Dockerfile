# syntax=docker/dockerfile:1
# Ampere container image.
#
# Build and runtime stages use the same Debian slim Node 24 (LTS) base, so the
# better-sqlite3 addon compiled in the build stage matches the runtime's Node
# ABI and glibc exactly. Pinned to the Node release the suite runs on in CI
# (scripts/test-node24.sh): a rebuild next month gets the same Node.
ARG NODE_IMAGE=node:24.22.3-trixie-slim

# ---------------------------------------------------------------- build ----
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Compile native addons (better-sqlite3) from source against this image's
# own Node headers: no prebuilt binary, no header download.
ENV npm_config_build_from_source=true \
    npm_config_nodedir=/usr/local \
    npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json ./
COPY src ./src
COPY docker/prune-native.sh /usr/local/bin/prune-native
# Only what runs goes on: dev dependencies and better-sqlite3's build leftovers
# (sources, object files) are removed, and the addon must still load.
COPY native ./native
COPY scripts/build-native.sh ./scripts/build-native.sh
# The build makes the native ipset loader too (g++ brings gcc and the kernel headers); the
# image never ships without it.
RUN npm run build \
 && test -x dist/ampere-ipset-load \
 && npm prune --omit=dev \
 && prune-native node_modules \
 && node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"

# -------------------------------------------------------------- runtime ----
FROM ${NODE_IMAGE} AS runtime
# iptables brings both iptables-nft and iptables-legacy: Ampere picks the one
# the host uses at start (AMPERE_IPTABLES=auto|nft|legacy). tini is PID 1 and
# hands SIGTERM to Node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset conntrack tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    AMPERE_DB=/data/ampere.db
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY drizzle ./drizzle
# The fleet's PostgreSQL migrations: `ampere fleet init` runs them from the image.
COPY drizzle-pg ./drizzle-pg
COPY docker/entrypoint.sh /usr/local/bin/ampere-entrypoint
# `ampere` on PATH: docker compose exec ampere ampere bans
RUN chmod 0755 /usr/local/bin/ampere-entrypoint /app/dist/cli.js \
 && ln -s /app/dist/cli.js /usr/local/bin/ampere \
 && install -d -m 0750 /data /backups /etc/ampere
# The database (and its status file, which the health check reads).
VOLUME ["/data"]
# No port: the health check reads /data/ampere.status.json, which the daemon
# rewrites every 5 s. Unhealthy when AMI is down, the firewall is not in sync,
# or the daemon stopped writing it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["node", "/app/dist/cli.js", "health"]
# SIGTERM: Ampere finishes the firewall work in flight, closes the database
# and leaves its bans in the kernel.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/ampere-entrypoint"]
CMD ["run"]
