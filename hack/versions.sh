# Pinned versions of the tools Ferry builds from upstream Go modules, in one place (sourced by
# hack/controlplane-build.sh and hack/image-build.sh, so the image ships the kustomize the tests ran).
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.7.1}
