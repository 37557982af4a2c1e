package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The README's composition example (examples/flow.yaml), end to end: a
// second bridge process is the remote.job worker (an exec handler), and
// the approval is sent with the Temporal CLI once the run says, in its
// current details, that it waits for it.
func TestE2E_composition_example(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.flow", "remote.job", "example.uppercase", "example.echo", "example.math.add", "example.error")

	remoteCfg := filepath.Join(t.TempDir(), "remote.yaml")
	require.NoError(t, os.WriteFile(remoteCfg, []byte(`
types:
  remote.job:
    exec:
      command: [/bin/sh, -c, 'read params; echo "{\"answer\":\"done\",\"got\":$params}"']
`), 0o600))
	remote := runBinary(t, s, "--config="+remoteCfg, "--task-types=remote.job", "--worker-id=remote-worker",
		"--task-queue="+s.queue+"-remote", "--workflow-id-prefix="+s.prefix+"remote-")
	t.Cleanup(func() { _ = remote.Process.Kill() })

	id := s.create("demo.flow", map[string]any{"text": "hello", "numbers": []int{1, 2, 3}, "n": 5})
	s.runBridge(nil, "flow-bridge", "--config=../examples/flow.yaml", "--task-types=demo.flow")

	// Wait until the run says it waits for the approval, then send it.
	wfID := s.prefix + id
	details := waitCurrentDetails(t, s.tc, wfID, "waits for signal")
	require.Contains(t, details, `step approve waits for signal "approve" until `)

	if external { // the CLI may not be installed, nor set up for the cluster
		require.NoError(t, s.tc.SignalWorkflow(context.Background(), wfID, "", "approve", map[string]string{"by": "ada"}))
	} else {
		cli, err := devtemporal.CLIPath()
		require.NoError(t, err)
		out, err := exec.Command(cli, "workflow", "signal", "--address", temporalAddr, "--namespace", temporalNamespace,
			"--workflow-id", wfID, "--name", "approve", "--input", `{"by":"ada"}`).CombinedOutput()
		require.NoError(t, err, string(out))
	}

	st := s.waitFinal([]string{id})[id]
	require.Equal(t, "completed", st.Status, st.Error)
	var res map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(st.Result, &res))
	require.JSONEq(t, `{"original":"hello","uppercase":"HELLO"}`, string(res["shout"]))
	require.NotContains(t, res, "loud", "when false: no entry")
	require.JSONEq(t, `{"echo":"short","length":5}`, string(res["quiet"]))
	require.JSONEq(t, `[{"a":1,"b":1,"result":2},{"a":2,"b":1,"result":3},{"a":3,"b":1,"result":4}]`, string(res["sums"]))
	require.JSONEq(t, `{"error":"planned"}`, string(res["risky"]))
	require.JSONEq(t, `{"echo":"recovered from planned","length":22}`, string(res["fallback"]))
	require.JSONEq(t, `{"answer":"done","got":{"n":5,"_parent":"`+wfID+`/remote@1"}}`, string(res["remote"]))
	require.JSONEq(t, `{"by":"ada"}`, string(res["approve"]))
	require.JSONEq(t, `{"echo":"approved by ada, remote said done","length":33}`, string(res["after"]))

	var children int
	for _, task := range s.tm.Tasks() {
		if task.Type == "remote.job" {
			children++
			require.Equal(t, "completed", task.Status, "the other worker did the child task")
		}
	}
	require.Equal(t, 1, children)

	s.replay(map[string]string{"composition": id}, "history-v3-") // TMBRIDGE_UPDATE_HISTORY=1 saves it
}

// waitCurrentDetails waits until the run's current details (what Temporal
// Web shows, read with the __temporal_workflow_metadata query) contain
// want, and returns them.
func waitCurrentDetails(t *testing.T, tc client.Client, workflowID, want string) string {
	t.Helper()
	var details string
	require.Eventually(t, func() bool {
		v, err := tc.QueryWorkflow(context.Background(), workflowID, "", "__temporal_workflow_metadata")
		if err != nil {
			return false
		}
		var md sdkpb.WorkflowMetadata
		if v.Get(&md) != nil {
			return false
		}
		details = md.GetCurrentDetails()
		return strings.Contains(details, want)
	}, 2*time.Minute, 100*time.Millisecond)
	return details
}
