#!/bin/sh
# The namespace and tmbridge's search attributes (TaskType and TaskID, both
# Keyword): run by the temporal-setup service (temporalio/admin-tools) of
# docker-compose.yml's prod profile once the server is healthy, and by
# deploy/deploy_test.go against the Temporal CLI's dev server. Creating a
# search attribute that exists with the same type succeeds, so this is safe
# to run again. Needs the temporal CLI, TEMPORAL_ADDRESS and
# TEMPORAL_NAMESPACE (default: default).
set -eu

ns=${TEMPORAL_NAMESPACE:-default}
attempts=${SETUP_ATTEMPTS:-60}

retry() {
  what=$1
  shift
  n=1
  until "$@" >/dev/null 2>&1; do
    if [ "$n" -ge "$attempts" ]; then
      echo "gave up waiting for $what after $attempts attempts" >&2
      return 1
    fi
    n=$((n + 1))
    sleep 2
  done
}

echo "waiting for Temporal at ${TEMPORAL_ADDRESS:?}"
retry "the server" temporal operator cluster health

if temporal operator namespace describe --namespace "$ns" >/dev/null 2>&1; then
  echo "namespace $ns exists"
else
  echo "creating namespace $ns"
  temporal operator namespace create --namespace "$ns" --retention 72h
fi

# A new namespace reaches the frontend's cache within seconds.
retry "namespace $ns" temporal operator search-attribute list --namespace "$ns"
temporal operator search-attribute create --namespace "$ns" \
  --name TaskType --type Keyword --name TaskID --type Keyword
echo "search attributes TaskType and TaskID (Keyword) are in namespace $ns"
