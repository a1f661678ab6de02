# syntax=docker/dockerfile:1
# The Mandate broker image (deploy/README.md). Three stages: `build` compiles
# with the dev dependencies, `deps` installs the production dependencies
# alone, and `runtime` holds only what `mandate` reads when it runs.
# test/unit/deploy.test.ts checks this file against the config schema.
# Pin the base by digest in your own build (NODE_IMAGE=node:24-bookworm-slim@sha256:...).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The workspace packages' manifests first: npm ci links them (package.json "workspaces").
COPY packages/verifier/package.json ./packages/verifier/
COPY packages/client/package.json ./packages/client/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY packages ./packages
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/verifier/package.json ./packages/verifier/
COPY packages/client/package.json ./packages/client/
# No production dependency needs an install script, so none gets to run one.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
# package.json says "type": "module": without it Node would load dist/ as CommonJS.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The broker imports the verifier package's wire formats; node_modules/@mandate/* link to packages/.
COPY --from=build /app/packages/verifier/package.json ./packages/verifier/
COPY --from=build /app/packages/verifier/dist ./packages/verifier/dist
# bin/mandate.js runs dist/cli/main.js when it exists (it does here; tsx is a dev dependency).
COPY bin ./bin
# Applied by `mandate serve` at start and by `mandate migrate`: found as ../../migrations from dist/storage/.
COPY migrations ./migrations
# The code stays root-owned and read-only to the broker. /app/data is the
# data_dir default for a run without a config file; /var/lib/mandate is where
# deploy/mandate.yaml points data_dir and checkpoint_dir, created here owned
# by the broker's user so that an empty named volume mounted there inherits it.
RUN mkdir -p /app/data /var/lib/mandate/checkpoints && chown -R 1000:1000 /app/data /var/lib/mandate
# The image's `node` user, by number: Kubernetes can only verify runAsNonRoot for a numeric user.
USER 1000:1000
# Only PORT: the environment overrides the config file, so any other ENV here
# would silently beat a mounted config. PORT is what HEALTHCHECK probes, so the
# two always agree.
ENV PORT=8080
# 9090: listen.admin_port in the deploy configs (the admin API on a thread of its own).
EXPOSE 8080 9090
# Liveness only (the process serves); readiness (/readyz) is the orchestrator's call.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/mandate.js"]
CMD ["serve"]
