# Ferry's container image: `ferry` and the pinned `kustomize` and `helm`, non-root, on a minimal Debian with CA
# certificates. The build stage runs hack/image-build.sh, the same script CI runs.
#
#   docker build -t ferry:0.1.0 .            # the tag manifests/deployment.yaml runs
#   docker tag ferry:0.1.0 registry.example.com/ferry:0.1.0 && docker push registry.example.com/ferry:0.1.0
#   (cd manifests && kustomize edit set image ferry=registry.example.com/ferry:0.1.0)
FROM rust:1-bookworm AS build
# Go only builds kustomize and helm from their pinned modules (hack/versions.sh).
COPY --from=golang:1.26-bookworm /usr/local/go /usr/local/go
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash hack/image-build.sh /out

FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 ferry && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=build /out/ferry /out/kustomize /out/helm /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["run"]
