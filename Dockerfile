# syntax=docker/dockerfile:1
# Multi-stage build: compile with dev dependencies, ship production ones only.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY migrations ./migrations
# Policies and config are mounted (ConfigMap); signing keys from a Secret.
RUN mkdir -p /etc/mandate/policies /var/lib/mandate && chown -R node:node /var/lib/mandate
USER node
ENV MANDATE_POLICIES_DIR=/etc/mandate/policies MANDATE_DATA_DIR=/var/lib/mandate PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/mandate.js"]
CMD ["serve"]
