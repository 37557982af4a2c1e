#!/usr/bin/env bash
# Runs the whole tmbridge stack locally; `make dev` calls it after building.
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPORAL_CLI=${TEMPORAL_CLI:?set by make dev}
API_KEY=${TASKMANAGER_API_KEY:-dev-key}
TM_ADDR=${TM_ADDR:-127.0.0.1:8000}
SEED=${SEED:-5}
LOGS=.dev
mkdir -p "$LOGS"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo ">> stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

echo ">> starting the Temporal dev server (Web UI on http://localhost:8233), log: $LOGS/temporal.log"
"$TEMPORAL_CLI" server start-dev --ip 127.0.0.1 --port 7233 --ui-port 8233 --log-level warn \
  --search-attribute TaskType=Keyword --search-attribute TaskID=Keyword \
  --dynamic-config-value system.enableActivityEagerExecution=true >"$LOGS/temporal.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  "$TEMPORAL_CLI" operator cluster health --address 127.0.0.1:7233 >/dev/null 2>&1 && break
  sleep 0.5
done

echo ">> starting taskmanager-dev on http://$TM_ADDR/api (PHP style, API key '$API_KEY'), seeding $SEED tasks per example type"
./bin/taskmanager-dev --addr "$TM_ADDR" --style php --api-key "$API_KEY" --seed "$SEED" >"$LOGS/taskmanager.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  grep -q seeded "$LOGS/taskmanager.log" 2>/dev/null && break
  sleep 0.2
done

cat <<INFO

   Temporal Web:  http://localhost:8233  (each task is a workflow 'taskmanager-task-<id>')
   TaskManager:   curl -H 'X-API-Key: $API_KEY' http://$TM_ADDR/api/tasks?limit=50
   Metrics:       http://127.0.0.1:9464/metrics
   Config:        examples/tmbridge.yaml (demo.pipeline is a multi-step type)
   Stop:          Ctrl-C

INFO

export TASKMANAGER_API_KEY="$API_KEY"
./bin/tmbridge --config examples/tmbridge.yaml --api-url "http://$TM_ADDR/api" \
  --temporal-address 127.0.0.1:7233 --worker-id dev-bridge --poll-interval 2 --metrics-addr 127.0.0.1:9464 --log-format text &
pids+=($!)
wait "${pids[-1]}"
