#!/usr/bin/env bash
# Ferry's main job end to end on a local control plane:
#   a config repo served by git daemon → GitRepository → Environment → objects in the cluster,
#   then a second push that Ferry applies by itself.
# Leaves nothing running unless FERRY_DEMO_KEEP=1 (then it prints how to reach the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.ferry-dev
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Building the local control plane (cached after the first run)"
BIN=$(bash hack/controlplane-build.sh)
export PATH="$BIN:$PATH"

say "Building ferry"
cargo build --quiet --bin ferry
FERRY=$ROOT/target/debug/ferry

pids=()
cleanup() {
  if [ "${FERRY_DEMO_KEEP:-0}" = 1 ]; then
    echo "Left running (pids ${pids[*]}). export KUBECONFIG=$DIR/kubeconfig; kill ${pids[*]} to stop."
    return
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say "Starting etcd, kube-apiserver, controller-manager, scheduler and a kwok node"
rm -rf "$DIR"
mkdir -p "$DIR"
"$FERRY" dev cluster --dir "$DIR/cluster" --bin-dir "$BIN" > "$DIR/cluster.log" 2>&1 &
pids+=($!)
export KUBECONFIG=$DIR/cluster/kubeconfig
for _ in $(seq 1 300); do
  grep -q "control plane ready" "$DIR/cluster.log" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$DIR/cluster.log"; exit 1; }
  sleep 0.5
done
grep -q "control plane ready" "$DIR/cluster.log" || { echo "control plane did not start"; cat "$DIR/cluster.log"; exit 1; }
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
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
git_ -C "$DIR/work" add -A
git_ -C "$DIR/work" commit -q -m "podinfo for staging"
git_ -C "$DIR/work" push -q "$REPO_URL" HEAD:main
echo "pushed $(git -C "$DIR/work" rev-parse HEAD) to $REPO_URL"

say "Installing Ferry's CRDs and starting the controller"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
HOOK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FERRY_STORAGE_DIR="$DIR/storage" FERRY_WEBHOOK_ADDR=127.0.0.1:$HOOK_PORT RUST_LOG=info,kube=warn \
  "$FERRY" run > "$DIR/ferry.log" 2>&1 &
pids+=($!)

say "Creating a GitRepository and an Environment"
kubectl create namespace demo >/dev/null
kubectl -n demo create secret generic webhook-token --from-literal=token=demo-hook-secret >/dev/null
sed "s|\${REPO_URL}|$REPO_URL|" examples/demo/cluster/gitrepository.yaml | kubectl apply -f -
kubectl apply -f examples/demo/cluster/environment.yaml
kubectl -n demo wait --for=condition=Ready environment/staging --timeout=120s >/dev/null

say "Merging a change to the config repo (replicas 2 → 3) and sending the push webhook, as GitHub would"
sed -i 's/replicas: 2/replicas: 3/' "$DIR/work/apps/staging/deployment.yaml"
git_ -C "$DIR/work" commit -q -am "scale podinfo to 3"
git_ -C "$DIR/work" push -q "$REPO_URL" HEAD:main
SECOND=$(git -C "$DIR/work" rev-parse HEAD)
echo "pushed $SECOND"
BODY="{\"ref\":\"refs/heads/main\",\"after\":\"$SECOND\"}"
SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac demo-hook-secret | sed 's/.*= //')
start=$(date +%s%N)
curl -sS -X POST "http://127.0.0.1:$HOOK_PORT/hooks/demo/config" -H "X-GitHub-Event: push" \
  -H "X-Hub-Signature-256: sha256=$SIG" -H "Content-Type: application/json" -d "$BODY"
for _ in $(seq 1 2400); do
  rev=$(kubectl -n demo get environment staging -o jsonpath='{.status.lastAppliedRevision}')
  [ "$rev" = "main@sha1:$SECOND" ] && break
  sleep 0.05
done
echo "webhook → applied in $(( ($(date +%s%N) - start) / 1000000 )) ms (measured with kubectl polling)"
[ "$rev" = "main@sha1:$SECOND" ] || { echo "second commit not applied"; tail -n 30 "$DIR/ferry.log"; exit 1; }
kubectl -n demo wait --for=condition=Available deployment/podinfo --timeout=120s >/dev/null

say "kubectl get gitrepositories,environments -n demo"
kubectl get gitrepositories,environments -n demo
say "What Ferry applied (pods run on kwok's simulated node)"
kubectl get deployments,services,configmaps,pods -n demo -l ferry.dev/environment=staging -o wide 2>/dev/null | cut -c1-150
kubectl get pods -n demo
say "Events"
kubectl get events -n demo --field-selector involvedObject.kind!=Pod,involvedObject.kind!=ReplicaSet --sort-by=.metadata.creationTimestamp | tail -n 8
echo
echo "Demo finished: Environment staging is Ready at main@sha1:$SECOND."
