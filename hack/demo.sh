#!/usr/bin/env bash
# Ferry's main job end to end on two local control planes:
#   a config repo served by git daemon → GitRepository → Environment staging → objects in the first cluster,
#   a second push that Ferry applies by itself (webhook), then the verified revision promoted, once approved,
#   to Environment production in a second cluster.
# Leaves nothing running unless FERRY_DEMO_KEEP=1 (then it prints how to reach the clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.ferry-dev
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fail() {
  echo "FAILED: $*" >&2
  if [ -f "$DIR/ferry.log" ]; then
    echo "--- last lines of $DIR/ferry.log" >&2
    tail -n 40 "$DIR/ferry.log" >&2
  fi
  exit 1
}
# wait_until SECONDS WHAT COMMAND...: polls COMMAND (quiet, may call fail) every 0.1 s until it succeeds, or
# fails the demo.
wait_until() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$(( $(now_ms) + seconds * 1000 ))
  until "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for $what"
    sleep 0.1
  done
}

bash hack/prereqs.sh
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:$HOME/.cargo/bin" GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
say "Building the local control plane (cached after the first run)"
BIN=$(bash hack/controlplane-build.sh)
export PATH="$BIN:$PATH"

say "Building ferry"
cargo build --quiet --bin ferry
# The local control planes come from the dev-only ferry-testenv crate (not part of the shipped ferry).
cargo build --quiet -p ferry-testenv --bin ferry-dev-cluster
FERRY=$ROOT/target/debug/ferry
DEV_CLUSTER=$ROOT/target/debug/ferry-dev-cluster

pids=()
cleanup() {
  if [ "${FERRY_DEMO_KEEP:-0}" = 1 ]; then
    echo "Left running (pids ${pids[*]}). export KUBECONFIG=$DIR/cluster/kubeconfig (staging) or"
    echo "$DIR/prod-cluster/kubeconfig (production); kill ${pids[*]} to stop."
    return
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say "Starting two control planes (etcd, kube-apiserver, controller-manager, scheduler, a kwok node each)"
rm -rf "$DIR"
mkdir -p "$DIR"
"$DEV_CLUSTER" --dir "$DIR/cluster" --bin-dir "$BIN" > "$DIR/cluster.log" 2>&1 &
pids+=($!)
CLUSTER_PID=$!
"$DEV_CLUSTER" --dir "$DIR/prod-cluster" --bin-dir "$BIN" > "$DIR/prod-cluster.log" 2>&1 &
pids+=($!)
PROD_CLUSTER_PID=$!
export KUBECONFIG=$DIR/cluster/kubeconfig
PROD_KUBECONFIG=$DIR/prod-cluster/kubeconfig
cluster_ready() { # LOG PID
  grep -q "control plane ready" "$1" 2>/dev/null && return 0
  kill -0 "$2" 2>/dev/null || { cat "$1"; fail "the control plane of $1 exited"; }
  return 1
}
deadline=$(( $(now_ms) + 150000 ))
until cluster_ready "$DIR/cluster.log" "$CLUSTER_PID" && cluster_ready "$DIR/prod-cluster.log" "$PROD_CLUSTER_PID"; do
  [ "$(now_ms)" -lt "$deadline" ] || { cat "$DIR/cluster.log" "$DIR/prod-cluster.log"; fail "control planes did not start"; }
  sleep 0.2
done
echo "staging cluster:    $(sed -n 's/^control plane ready at //p' "$DIR/cluster.log")"
echo "production cluster: $(sed -n 's/^control plane ready at //p' "$DIR/prod-cluster.log")"
kubectl version 2>/dev/null | sed -n 's/^Server/Server/p'

say "Creating a config repo and serving it with git daemon"
git_() { git -c user.name="Demo User" -c user.email=demo@ferry.dev -c init.defaultBranch=main "$@"; }
mkdir -p "$DIR/git" "$DIR/work"
git_ init -q --bare -b main "$DIR/git/config.git"
cp -r examples/demo/config-repo/. "$DIR/work/"
git_ -C "$DIR/work" init -q -b main
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$(git --exec-path)/git-daemon" --base-path="$DIR/git" --export-all --enable=receive-pack --reuseaddr \
  --listen=127.0.0.1 --port="$PORT" "$DIR/git" > "$DIR/git-daemon.log" 2>&1 &
pids+=($!)
REPO_URL=git://127.0.0.1:$PORT/config.git
wait_until 10 "git daemon" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null
# A Secret for staging, encrypted as a team would commit it: an age key from age-keygen, the real sops.
age-keygen -o "$DIR/sops-age.agekey" 2>/dev/null
AGE_RECIPIENT=$(sed -n 's/^# public key: //p' "$DIR/sops-age.agekey")
sops encrypt --age "$AGE_RECIPIENT" --encrypted-regex '^(data|stringData)$' \
  examples/demo/secrets/podinfo-credentials.yaml > "$DIR/work/apps/staging/podinfo-credentials.enc.yaml"
git_ -C "$DIR/work" add -A
git_ -C "$DIR/work" commit -q -m "podinfo for staging and production"
git_ -C "$DIR/work" push -q "$REPO_URL" HEAD:main
FIRST=$(git -C "$DIR/work" rev-parse HEAD)
echo "pushed $FIRST to $REPO_URL"

say "Installing Ferry's CRDs and starting the controller"
kubectl apply --server-side -k crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HOOK_PORT=$(free_port) METRICS_PORT=$(free_port) PROBE_PORT=$(free_port)
# Two OCI registries for the images step (nonprod and prod, distribution's registry), plain HTTP on loopback:
# Ferry reaches registries over HTTPS unless told otherwise (--insecure-registry).
NONPROD_REGISTRY=127.0.0.1:$(free_port) PROD_REGISTRY=127.0.0.1:$(free_port)
for reg in nonprod=$NONPROD_REGISTRY prod=$PROD_REGISTRY; do
  name=${reg%%=*} addr=${reg#*=}
  mkdir -p "$DIR/registry-$name"
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "%s", secret: demo}\n' \
    "$DIR/registry-$name/data" "$addr" > "$DIR/registry-$name/config.yml"
  registry serve "$DIR/registry-$name/config.yml" > "$DIR/registry-$name.log" 2>&1 &
  pids+=($!)
done
# As installed: leader election on a Lease in ferry-system, metrics and probes on their own ports.
kubectl create namespace ferry-system >/dev/null
FERRY_STORAGE_DIR="$DIR/storage" FERRY_WEBHOOK_ADDR=127.0.0.1:$HOOK_PORT RUST_LOG=info,kube=warn \
  FERRY_METRICS_ADDR=127.0.0.1:$METRICS_PORT FERRY_PROBE_ADDR=127.0.0.1:$PROBE_PORT \
  FERRY_INSECURE_REGISTRIES=$NONPROD_REGISTRY,$PROD_REGISTRY \
  "$FERRY" run > "$DIR/ferry.log" 2>&1 &
pids+=($!)
wait_until 30 "ferry to be ready (/readyz)" curl -sf -o /dev/null "http://127.0.0.1:$PROBE_PORT/readyz"
echo "ferry is the leader: $(kubectl -n ferry-system get lease ferry-leader -o jsonpath='{.spec.holderIdentity}')"
# The web view with this kubeconfig's rights (docs/src/web-view.md); it follows the demo live.
UI_PORT=$(free_port)
"$FERRY" ui --addr "127.0.0.1:$UI_PORT" -n demo > "$DIR/ui.log" 2>&1 &
pids+=($!)
wait_until 30 "the web view" curl -sf -o /dev/null "http://127.0.0.1:$UI_PORT/ns/demo"
echo "web view: http://127.0.0.1:$UI_PORT/ns/demo (ferry ui)"

say "Creating a GitRepository and Environment staging (with an acceptance-test Job)"
kubectl create namespace demo >/dev/null
kubectl -n demo create secret generic webhook-token --from-literal=token=demo-hook-secret >/dev/null
# The age identity staging decrypts with (spec.decryption.secretRef; Flux's layout: keys ending in .agekey).
kubectl -n demo create secret generic sops-age --from-file=demo.agekey="$DIR/sops-age.agekey" >/dev/null
sed "s|\${REPO_URL}|$REPO_URL|" examples/demo/cluster/gitrepository.yaml | kubectl apply -f -
kubectl apply -f examples/demo/cluster/environment.yaml
kubectl -n demo wait --for=condition=Ready environment/staging --timeout=120s >/dev/null
stored=$(git -C "$DIR/work" show HEAD:apps/staging/podinfo-credentials.enc.yaml | grep -m1 'password:' | cut -c5-60 || true)
applied=$(kubectl -n demo get secret podinfo-credentials -o jsonpath='{.data.password}' | base64 -d)
[ "$applied" = "demo-only-not-a-real-password" ] || fail "the encrypted Secret was not applied decrypted"
echo "Secret podinfo-credentials: in Git \"$stored…\", applied decrypted (compared, not printed)"

say "Merging a change to the config repo (staging replicas 2 → 3) and sending the push webhook, as GitHub would"
sed -i 's/replicas: 2/replicas: 3/' "$DIR/work/apps/staging/deployment.yaml"
git_ -C "$DIR/work" commit -q -am "scale podinfo in staging to 3"
git_ -C "$DIR/work" push -q "$REPO_URL" HEAD:main
SECOND=$(git -C "$DIR/work" rev-parse HEAD)
REV=main@sha1:$SECOND
echo "pushed $SECOND"
BODY="{\"ref\":\"refs/heads/main\",\"after\":\"$SECOND\"}"
SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac demo-hook-secret | sed 's/.*= //')
start=$(date +%s%N)
curl -sS -X POST "http://127.0.0.1:$HOOK_PORT/hooks/demo/config" -H "X-GitHub-Event: push" \
  -H "X-Hub-Signature-256: sha256=$SIG" -H "Content-Type: application/json" -d "$BODY"
rev=
for _ in $(seq 1 2400); do
  rev=$(kubectl -n demo get environment staging -o jsonpath='{.status.lastAppliedRevision}' || true)
  [ "$rev" = "$REV" ] && break
  sleep 0.05
done
echo "webhook → applied in $(( ($(date +%s%N) - start) / 1000000 )) ms (measured with kubectl polling)"
[ "$rev" = "$REV" ] || fail "second commit not applied"
kubectl -n demo wait --for=condition=Available deployment/podinfo --timeout=120s >/dev/null

say "kubectl get gitrepositories,environments -n demo"
kubectl get gitrepositories,environments -n demo
say "What Ferry applied (pods run on kwok's simulated node)"
kubectl get deployments,services,configmaps,pods -n demo -l ferry.dev/environment=staging -o wide 2>/dev/null | cut -c1-150
kubectl get pods -n demo
say "Events"
kubectl get events -n demo --field-selector involvedObject.kind!=Pod,involvedObject.kind!=ReplicaSet --sort-by=.metadata.creationTimestamp | tail -n 8

say "Waiting for staging to verify $REV (objects healthy, then the acceptance Job)"
staging_record() {
  kubectl -n demo get environment staging -o jsonpath="{.status.history[?(@.revision==\"$REV\")].$1}" 2>/dev/null || true
}
staging_verified() {
  case "$(staging_record phase)" in
    Verified) return 0 ;;
    Failed) fail "staging failed to verify $REV: $(staging_record message)" ;;
    *) return 1 ;;
  esac
}
wait_until 120 "staging to verify $REV" staging_verified
echo "verified: $(staging_record message)"

say "Environment production in a second cluster: a kubeconfig Secret, then promotion from staging with approval"
kubectl --kubeconfig "$PROD_KUBECONFIG" create namespace demo >/dev/null
kubectl --kubeconfig "$PROD_KUBECONFIG" config view --raw --minify --flatten > "$DIR/prod-kubeconfig.flat"
kubectl -n demo create secret generic production-kubeconfig --from-file=value="$DIR/prod-kubeconfig.flat" >/dev/null
rm -f "$DIR/prod-kubeconfig.flat"
kubectl apply -f examples/demo/cluster/production.yaml
# The promotion of the revision staging applied, once staging verified it (objects healthy, Job succeeded).
promotion_of() { # REVISION → name of the (non-rollback) Promotion of it into production
  kubectl -n demo get promotions -o jsonpath="{range .items[?(@.spec.environment==\"production\")]}{.metadata.name} {.spec.revision} {.spec.rollback}{\"\\n\"}{end}" \
    2>/dev/null | awk -v r="$1" '$2 == r && $3 != "true" {print $1; exit}' || true
}
phase_of() { kubectl -n demo get promotion "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true; }
has_promotion() { [ -n "$(promotion_of "$REV")" ]; }
wait_until 120 "a Promotion of $REV into production" has_promotion
PROMOTION=$(promotion_of "$REV")
phase_is() { [ "$(phase_of "$PROMOTION")" = "$1" ]; }
wait_until 60 "Promotion $PROMOTION to wait for approval" phase_is WaitingApproval
echo "Ferry proposed Promotion $PROMOTION of $REV; it waits for approval"

say "ferry get -n demo"
"$FERRY" get -n demo
say "kubectl get environments,promotions -n demo"
kubectl get environments,promotions -n demo

say "ferry approve -n demo $PROMOTION"
start=$(now_ms)
"$FERRY" approve -n demo "$PROMOTION" -m "demo: ship it"
deadline=$(( start + 180000 ))
phase=
while :; do
  phase=$(phase_of "$PROMOTION")
  case "$phase" in
    Succeeded) break ;;
    Failed | Aborted | Superseded)
      kubectl -n demo get promotion "$PROMOTION" -o yaml
      fail "Promotion $PROMOTION ended $phase" ;;
  esac
  [ "$(now_ms)" -lt "$deadline" ] || fail "timed out waiting for Promotion $PROMOTION to succeed (phase: $phase)"
  sleep 0.1
done
echo "approve → Succeeded in $(( $(now_ms) - start )) ms (applied in the production cluster, healthy, smoke Job passed; measured with kubectl polling)"

say "kubectl get environments,promotions -n demo"
kubectl get environments,promotions -n demo
say "ferry get -n demo"
"$FERRY" get -n demo
say "ferry history -n demo production"
"$FERRY" history -n demo production
say "What Ferry applied in the production cluster (kubectl --kubeconfig $PROD_KUBECONFIG)"
kubectl --kubeconfig "$PROD_KUBECONFIG" get deployments,jobs -n demo
say "Images: CI pushes $NONPROD_REGISTRY/team/web:1.0 (crane); staging pins it, production gets the verified digest copied to $PROD_REGISTRY"
mkdir -p "$DIR/layer" && echo "build 1.0" > "$DIR/layer/build.txt"
tar -cf "$DIR/layer.tar" -C "$DIR/layer" build.txt
WEB_DIGEST=$(crane append --insecure -f "$DIR/layer.tar" -t "$NONPROD_REGISTRY/team/web:1.0" 2>/dev/null | sed 's/.*@//')
echo "pushed $NONPROD_REGISTRY/team/web:1.0 = $WEB_DIGEST"
git_ init -q --bare -b main "$DIR/git/images.git"
mkdir -p "$DIR/images-work/staging" "$DIR/images-work/production"
for stage in staging production; do
  printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: "%s/team/web:1.0"}]}\n' \
    "$NONPROD_REGISTRY" > "$DIR/images-work/$stage/web.yaml"
done
git_ -C "$DIR/images-work" init -q -b main
git_ -C "$DIR/images-work" add -A
git_ -C "$DIR/images-work" commit -q -m "web 1.0"
git_ -C "$DIR/images-work" push -q "git://127.0.0.1:$PORT/images.git" HEAD:main
kubectl create namespace web-staging >/dev/null
kubectl --kubeconfig "$PROD_KUBECONFIG" create namespace web >/dev/null
kubectl apply -f - <<YAML
apiVersion: ferry.dev/v1alpha1
kind: GitRepository
metadata: {name: images, namespace: demo}
spec: {url: "git://127.0.0.1:$PORT/images.git", interval: 10m}
---
apiVersion: ferry.dev/v1alpha1
kind: Environment
metadata: {name: web-staging, namespace: demo}
spec:
  sourceRef: {name: images}
  path: staging
  targetNamespace: web-staging
  images: {pinDigests: true}
---
apiVersion: ferry.dev/v1alpha1
kind: Environment
metadata: {name: web-production, namespace: demo}
spec:
  sourceRef: {name: images}
  path: production
  targetNamespace: web
  kubeConfig: {secretRef: {name: production-kubeconfig}}
  promotion:
    from: web-staging
    copyImages: [{from: "$NONPROD_REGISTRY/team", to: "$PROD_REGISTRY/team"}]
YAML
web_production_verified() {
  case "$(kubectl -n demo get environment web-production -o jsonpath='{.status.history[0].phase}' 2>/dev/null)" in
    Verified) return 0 ;;
    Failed) fail "web-production failed: $(kubectl -n demo get environment web-production -o jsonpath='{.status.history[0].message}')" ;;
    *) return 1 ;;
  esac
}
wait_until 120 "web-production to verify the promoted revision" web_production_verified
"$FERRY" images -n demo web-staging
"$FERRY" images -n demo web-production
echo "production runs: $(kubectl --kubeconfig "$PROD_KUBECONFIG" -n web get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}')"
echo "prod registry:   $PROD_REGISTRY/team/web:1.0 = $(crane digest --insecure "$PROD_REGISTRY/team/web:1.0")"
kubectl get events -n demo --field-selector reason=ImagesCopied -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' || true

say "Ferry's metrics (curl http://127.0.0.1:$METRICS_PORT/metrics, a few lines)"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" \
  | grep -E '^ferry_(resource_ready\{kind="Environment"|leader |reconcile_total\{kind="Environment"|promotion_transitions_total)' || true
echo
echo "Demo finished: staging and production are at $REV."
echo "Web view: http://127.0.0.1:$UI_PORT/ns/demo (FERRY_DEMO_KEEP=1 keeps it running)"
