# The atasks binaries as container images: one Dockerfile, one target each.
#
#   docker build --target gateway -t atasks-gateway .   # HTTP on 0.0.0.0:8080
#   docker build --target worker  -t atasks-worker  .
#
# Without --target the last stage, the gateway, is built. Both images are
# distroless static (CA certificates, no shell) running as the nonroot user
# 65532; the binaries are static. Every flag has an ATASKS_* environment
# variable: `docker run --rm atasks-worker --help` lists them. See docs/DEPLOY.md.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/gateway ./cmd/worker

FROM gcr.io/distroless/static-debian12:nonroot AS worker
COPY --from=build /out/worker /usr/local/bin/worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]

FROM gcr.io/distroless/static-debian12:nonroot AS gateway
COPY --from=build /out/gateway /usr/local/bin/gateway
USER 65532:65532
ENV ATASKS_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gateway"]
