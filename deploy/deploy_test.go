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

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/bridge"
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
