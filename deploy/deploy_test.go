// Package deploy_test checks the deployment files: docker-compose.yml (with
// compose-go, per profile), the Dockerfile, Prometheus and Grafana
// provisioning, the Kubernetes manifests and the systemd unit. Nothing here
// needs Docker, a cluster or systemd: the files are parsed and checked
// against each other and against tmbridge's own config loader.
package deploy_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/bridge"
)

// The bridge's stop, as bridge/main.go bounds it: Stop gives pending
// workflow starts startsGrace (bridge/bridge.go, 5s), stops the worker,
// whose running handlers get shutdown_grace, and Main allows 15s more for
// cancelled handlers to report. A supervisor's kill timeout must exceed
// shutdown_grace + stopOverhead, or it kills the bridge mid-stop.
const (
	startsGrace  = 5 * time.Second
	stopMargin   = 15 * time.Second
	stopOverhead = startsGrace + stopMargin
)

// metricsPort is where every deployment serves /metrics, /healthz and /readyz.
const metricsPort = 9464

// repoPath is a path from the repository's root.
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{".."}, parts...)...)
}

// defaultConfig is the config tmbridge runs with when nothing is set.
func defaultConfig(t *testing.T) bridge.Config {
	t.Helper()
	cfg, err := bridge.Load(nil, nil, io.Discard)
	require.NoError(t, err)
	return cfg
}

func readFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(parts...))
	require.NoError(t, err)
	return b
}
