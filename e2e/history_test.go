package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Histories of real runs replay against the current workflow code. With
// TMBRIDGE_UPDATE_HISTORY=1 they are also saved to workflows/testdata,
// where workflows' replay test checks every later change against them.
func TestE2E_histories_replay(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo", "example.uppercase", "example.error", "demo.pipeline")
	tasks := map[string]string{
		"echo":     s.create("example.echo", map[string]any{"message": "replay me"}),
		"local":    s.create("example.uppercase", map[string]any{"text": "local"}),
		"failure":  s.create("example.error", map[string]any{"message": "replayed failure"}),
		"pipeline": s.create("demo.pipeline", map[string]any{"text": "replay the pipeline"}),
	}
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  example.uppercase: { local: true }
  demo.pipeline:
    steps:
      - { name: shout, handler: example.uppercase }
      - { name: count, handler: example.echo, params: { message: "{{ .steps.shout.uppercase }}" } }
      - parallel:
          - { name: a, handler: example.math.add, params: { a: 1, b: 2 } }
          - { name: b, handler: example.sleep, params: { duration: 0.1 } }
`), 0o600))
	stop := s.runBridge(nil, "bridge-h", "--config="+cfgFile)
	ids := []string{}
	for _, id := range tasks {
		ids = append(ids, id)
	}
	s.waitFinal(ids)
	stop()

	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	for name, id := range tasks {
		h := s.history(s.prefix + id)
		require.NoError(t, replayer.ReplayWorkflowHistory(nil, h), name)
		if os.Getenv("TMBRIDGE_UPDATE_HISTORY") != "" {
			b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join("..", "workflows", "testdata", "history-"+name+".json"), b, 0o644))
		}
	}
}

// history returns the latest run's history of a workflow.
func (s *stack) history(workflowID string) *historypb.History {
	s.t.Helper()
	it := s.tc.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(s.t, err)
		h.Events = append(h.Events, ev)
	}
	return h
}
