package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/prismq/tmbridge/taskmanager/devserver"
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

	s.replay(tasks, "history-")
}

// newReplayer is the tests' WorkflowReplayer, TaskWorkflow registered,
// with the SDK's one-second deadlock detection off: a replay checks
// determinism, and a slow machine may take over a second over a heavy
// workflow task.
func newReplayer(t testing.TB, interceptors ...interceptor.WorkerInterceptor) worker.WorkflowReplayer {
	t.Helper()
	r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{Interceptors: interceptors, DisableDeadlockDetection: true})
	require.NoError(t, err)
	r.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	return r
}

// replay replays the latest run of each task (by name) against the current
// workflow code and, with TMBRIDGE_UPDATE_HISTORY=1 and a prefix, saves
// its history as workflows/testdata/<prefix><name>.json.
func (s *stack) replay(tasks map[string]string, prefix string) {
	s.t.Helper()
	replayer := newReplayer(s.t)
	for name, id := range tasks {
		s.replayRun(replayer, name, s.prefix+id, "", prefix)
	}
}

// replayRun replays one run (runID "": the latest) of a workflow and, with
// TMBRIDGE_UPDATE_HISTORY=1 and a prefix, saves its history as
// workflows/testdata/<prefix><name>.json.
func (s *stack) replayRun(replayer worker.WorkflowReplayer, name, workflowID, runID, prefix string) {
	s.t.Helper()
	if replayer == nil {
		replayer = newReplayer(s.t)
	}
	h := s.runHistory(workflowID, runID)
	require.NoError(s.t, replayer.ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)), name)
	if prefix != "" && os.Getenv("TMBRIDGE_UPDATE_HISTORY") != "" {
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
		require.NoError(s.t, err)
		require.NoError(s.t, os.WriteFile(filepath.Join("..", "workflows", "testdata", prefix+name+".json"), b, 0o644))
	}
}

// history returns the latest run's history of a workflow.
// describe returns the server's description of a run ("" runID: the
// latest), as DescribeWorkflowExecution, deprecated in the SDK, did.
func (s *stack) describe(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	d, err := s.tc.DescribeWorkflow(ctx, workflowID, runID)
	if err != nil {
		return nil, err
	}
	return d.RawResponse, nil
}

func (s *stack) history(workflowID string) *historypb.History { return s.runHistory(workflowID, "") }

// runHistory returns one run's history of a workflow ("": the latest).
func (s *stack) runHistory(workflowID, runID string) *historypb.History {
	s.t.Helper()
	it := s.tc.GetWorkflowHistory(context.Background(), workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(s.t, err)
		h.Events = append(h.Events, ev)
	}
	return h
}

// The shapes this round added: a claim that moves while the run goes on
// (recorded in the memo), and a cancel that arrives while the outcome is
// being reported (the report goes on). Saved as history-v2-*.json.
func TestE2E_histories_replay_v2(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep", "example.echo")
	s.tm.SetClaimTimeout(time.Second)
	moved := s.create("example.sleep", map[string]any{"duration": 2.5})
	cancelled := s.create("example.echo", map[string]any{"message": "cancel me while reporting"})
	s.tm.InjectFault(devserver.Fault{Path: "/tasks/" + cancelled + "/complete", Status: 503, RetryAfter: time.Second, Count: 4})
	stop := s.runBridge(nil, "bridge-h2", "--claim-timeout=1s") // TaskManager's, so the bridge renews its claim

	// Cancel the echo task's run once its report is retrying.
	wfID := s.prefix + cancelled
	require.Eventually(t, func() bool {
		d, err := s.describe(context.Background(), wfID, "")
		if err != nil {
			return false
		}
		for _, a := range d.PendingActivities {
			if a.GetActivityType().GetName() == "tmbridge.ReportOutcome" {
				return true
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond)
	require.NoError(t, s.tc.CancelWorkflow(context.Background(), wfID, ""))
	states := s.waitFinal([]string{moved, cancelled})
	require.Equal(t, "completed", states[cancelled].Status, "the cancel did not stop the report")
	require.Greater(t, states[moved].Attempts, 1, "the long task was claimed again while it ran")
	stop()

	s.replay(map[string]string{"claim-moved": moved, "cancel-during-report": cancelled}, "history-v2-")
}

// The shape exact templates added: a multi-step run with the
// exact-templates version marker, whose steps read an exact number and a
// step named after its handler. Saved as history-v3-*.json.
func TestE2E_histories_replay_v3(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.exact")
	id := s.create("demo.exact", map[string]any{"user_id": 9007199254740993, "text": "exact"})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.exact:
    steps:
      - { handler: example.uppercase, params: { text: "{{ .params.text }}" } }
      - { name: echo, handler: example.echo, params: { message: "user {{ .params.user_id }}: {{ index .steps \"example.uppercase\" \"uppercase\" }}" } }
`), 0o600))
	stop := s.runBridge(nil, "bridge-h3", "--config="+cfgFile)
	states := s.waitFinal([]string{id})
	stop()
	require.Equal(t, "completed", states[id].Status)
	require.JSONEq(t, `{"example.uppercase":{"original":"exact","uppercase":"EXACT"},
		"echo":{"echo":"user 9007199254740993: EXACT","length":28}}`, string(states[id].Result))

	s.replay(map[string]string{"exact-templates": id}, "history-v3-")
}

// The shapes of 2026-11-30: a wait_for step that drops a signal whose
// payload does not decode (the drop-bad-signal marker), then takes a good
// one; and a for_each over a named list, whose ids beyond 2^53 keep every
// digit. Saved as history-v10-*.json.
func TestE2E_histories_replay_v10(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.approve", "demo.ids")
	approve := s.create("demo.approve", map[string]any{"x": 1})
	ids := s.create("demo.ids", map[string]any{"ids": []any{json.Number("9007199254740993"), 2}})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.approve:
    steps:
      - { name: approve, wait_for: { signal: approve, timeout: 5m } }
  demo.ids:
    steps:
      - { name: each, for_each: params.ids, handler: example.echo, params: { message: "id {{ .item }}" } }
`), 0o600))
	stop := s.runBridge(nil, "bridge-h10", "--config="+cfgFile)
	ctx := context.Background()
	wf := s.prefix + approve
	bad := converter.NewRawValue(&commonpb.Payload{Metadata: map[string][]byte{"encoding": []byte("binary/tmbridge-test")}, Data: []byte("x")})
	require.Eventually(t, func() bool { return s.tc.SignalWorkflow(ctx, wf, "", "approve", bad) == nil }, time.Minute, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(s.history(wf).GetEvents(), func(ev *historypb.HistoryEvent) bool {
			return ev.GetEventType() == enumspb.EVENT_TYPE_MARKER_RECORDED && strings.Contains(ev.String(), "drop-bad-signal")
		})
	}, time.Minute, 20*time.Millisecond, "the run dropped the signal that does not decode")
	require.NoError(t, s.tc.SignalWorkflow(ctx, wf, "", "approve", map[string]any{"by": "ada"}))
	states := s.waitFinal([]string{approve, ids})
	stop()
	require.Equal(t, "completed", states[approve].Status, states[approve].Error)
	require.JSONEq(t, `{"approve":{"by":"ada"}}`, string(states[approve].Result))
	require.Equal(t, "completed", states[ids].Status, states[ids].Error)
	require.JSONEq(t, `{"each":[{"echo":"id 9007199254740993","length":19},{"echo":"id 2","length":4}]}`, string(states[ids].Result))

	s.replay(map[string]string{"bad-signal": approve, "exact-ids": ids}, "history-v10-")
}

// requireVersion checks that the run recorded version v of changeID, or a
// later one (the test runs today's code, which may have moved on).
func requireVersion(t *testing.T, h *historypb.History, changeID string, v int) {
	t.Helper()
	require.True(t, slices.ContainsFunc(h.GetEvents(), func(ev *historypb.HistoryEvent) bool {
		m := ev.GetMarkerRecordedEventAttributes()
		if m.GetMarkerName() != "Version" {
			return false
		}
		var id string
		var got int
		dc := converter.GetDefaultDataConverter()
		return dc.FromPayloads(m.GetDetails()["change-id"], &id) == nil && id == changeID &&
			dc.FromPayloads(m.GetDetails()["version"], &got) == nil && got >= v
	}), "the run took version %d (or later) of %s", v, changeID)
}
