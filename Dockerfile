# kezd: a small static image that runs as a non-root user.
#
#   docker build -t kezd .
#   docker run -p 8080:8080 -v kez-data:/data kezd
#
# The binary is pure Go (SQLite is modernc.org/sqlite), built static with
# CGO_ENABLED=0, on distroless/static: no shell, no package manager. The
# health check is kezd's own (`kezd healthcheck`), since there is no curl.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/kezd ./cmd/kezd
# The data dir, owned by the runtime user, so that a fresh volume mounted on
# /data or /data/nats-keys starts out writable by it (and private).
RUN mkdir -p /out/data/nats-keys && chmod -R 700 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kezd /usr/local/bin/kezd
COPY --from=build --chown=65532:65532 /out/data /data
# nonroot is uid 65532; /data is where the embedded store and generated
# NATS keys live (mount a volume there).
USER 65532:65532
WORKDIR /data
# 8080 HTTP API (public, through the load balancer); 4222 NATS clients;
# 6222 NATS routes between instances (private network only).
EXPOSE 8080 4222 6222
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/kezd", "healthcheck", "--url", "http://127.0.0.1:8080/healthz", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/kezd"]
CMD ["serve", "--listen", ":8080", "--data-dir", "/data", "--nats-listen", "0.0.0.0:4222", "--drain-delay", "3s"]
