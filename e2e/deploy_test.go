package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"gopkg.in/yaml.v3"

	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// deploy/compose/temporal-setup.sh, which the compose prod profile runs
// in temporalio/admin-tools before tmbridge starts, run here with the
// pinned Temporal CLI against the dev server: it creates a namespace that
// does not exist yet and tmbridge's Keyword search attributes in it, and
// a second run changes nothing and succeeds.
func TestE2E_deploy_setup_script(t *testing.T) {
	skipExternal(t, "it creates namespaces of its own on the server, with the Temporal CLI")
	cli, err := devtemporal.CLIPath()
	require.NoError(t, err)
	ns := fmt.Sprintf("deploy-setup-%d", rand.Uint32())
	script, err := filepath.Abs("../deploy/compose/temporal-setup.sh")
	require.NoError(t, err)
	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "/bin/sh", script)
		cmd.Env = append(os.Environ(),
			"PATH="+filepath.Dir(cli)+string(os.PathListSeparator)+os.Getenv("PATH"),
			"TEMPORAL_ADDRESS="+temporalAddr,
			"TEMPORAL_NAMESPACE="+ns,
		)
		out, err := cmd.CombinedOutput()
		cancel()
		require.NoError(t, err, "run %d:\n%s", run, out)
		t.Logf("run %d:\n%s", run, out)
	}

	tc, err := client.Dial(client.Options{HostPort: temporalAddr, Namespace: ns, Logger: quietLogger{}})
	require.NoError(t, err)
	defer tc.Close()
	resp, err := tc.OperatorService().ListSearchAttributes(context.Background(),
		&operatorservice.ListSearchAttributesRequest{Namespace: ns})
	require.NoError(t, err)
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, resp.CustomAttributes["TaskType"])
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, resp.CustomAttributes["TaskID"])
}

// The Kubernetes example's config (deploy/kubernetes/configmap.yaml), as
// the pod runs it: a local Go handler and the Python exec handler each
// complete a task. The stack's flags point it at this test's TaskManager
// and Temporal, and turn off its metrics listener.
func TestE2E_deploy_kubernetes_config(t *testing.T) {
	raw, err := os.ReadFile("../deploy/kubernetes/configmap.yaml")
	require.NoError(t, err)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &cm))
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cm.Data["tmbridge.yaml"]), 0o600))

	s := newStack(t, devserver.StylePHP)
	s.register("example.echo", "py.wordcount")
	echo := s.create("example.echo", map[string]any{"message": "from k8s"})
	words := s.create("py.wordcount", map[string]any{"text": "one two three"})
	s.runBridgeWith(nil, "bridge-k8s", func(cfg *bridge.Config) {
		cfg.Types["py.wordcount"].Exec.Dir = ".." // the image's /app holds examples/
	}, nil, "--config="+cfgFile, "--metrics-addr=")
	states := s.waitFinal([]string{echo, words})
	require.Equal(t, "completed", states[echo].Status, states[echo].Error)
	require.JSONEq(t, `{"echo":"from k8s","length":8}`, string(states[echo].Result))
	require.Equal(t, "completed", states[words].Status, states[words].Error)
	require.JSONEq(t, `{"words":3,"longest":"three"}`, string(states[words].Result))
}
