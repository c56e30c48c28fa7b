# Pinned versions of the tools Ferry builds from upstream Go modules, in one place (sourced by
# hack/controlplane-build.sh and hack/image-build.sh, so the image ships the kustomize the tests ran).
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.7.1}
# Helm 3, not 4: kustomize (even 5.7.x) refuses any helm but v3 for `helmCharts:` ("this plugin requires helm V3"),
# and charts teams bring from Argo CD were rendered there by a Helm 3 `helm template` (docs/src/rendering.md, Helm).
HELM_VERSION=${HELM_VERSION:-v3.22.0}
# Flux, only for the side-by-side benchmark (hack/bench-flux.sh, `cargo bench --bench flux`). source-controller
# 1.9.x needs a module the Go proxy refuses (reported, not re-checked here), so it stays at 1.7.x; kustomize-controller
# 1.9.x works with it.
FLUX_SOURCE_CONTROLLER_VERSION=${FLUX_SOURCE_CONTROLLER_VERSION:-v1.7.3}
FLUX_KUSTOMIZE_CONTROLLER_VERSION=${FLUX_KUSTOMIZE_CONTROLLER_VERSION:-v1.9.6}
# SOPS and age: the tests encrypt config-repo files with the real tools (Environment spec.decryption).
SOPS_VERSION=${SOPS_VERSION:-v3.13.3}
AGE_VERSION=${AGE_VERSION:-v1.3.2}
# OCI registries and the image tool for the image-digest and copy-on-promotion tests (issue 13).
DISTRIBUTION_VERSION=${DISTRIBUTION_VERSION:-v3.1.2}
CRANE_VERSION=${CRANE_VERSION:-v0.22.1}
# mdBook builds the docs (docs/, hack/docs.sh); a Rust crate, installed with `cargo install --locked`.
MDBOOK_VERSION=${MDBOOK_VERSION:-0.4.52}
