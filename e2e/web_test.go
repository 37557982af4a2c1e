package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// What Temporal Web shows of a multi-step task run by the real binary:
// each activity's summary names its step and handler, the input shows
// durations as durations, no progress activity is in history, the current
// details say which step waits, and the run's details link to the task
// (without the API URL's secret). The histories are saved as
// history-v4-*.json (TMBRIDGE_UPDATE_HISTORY=1) for the replay test.
func TestE2E_web_timeline_reads_like_the_config(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.web", "demo.web.local", "example.echo")
	web := s.create("demo.web", map[string]any{"text": "hello web"})
	local := s.create("demo.web.local", map[string]any{"text": "local web"})
	echo := s.create("example.echo", map[string]any{"message": "plain web"})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.web:
    start_to_close_timeout: 2m
    steps:
      - { name: a, handler: example.uppercase, params: { text: "{{ .params.text }}" } }
      - { name: approve, wait_for: { signal: go } }
      - { name: c, handler: example.echo, params: { message: "{{ .steps.a.uppercase }} by {{ .steps.approve.by }}" } }
  demo.web.local:
    local: true
    steps:
      - { name: shout, handler: example.uppercase }
      - parallel:
          - { name: x, handler: example.echo, params: { message: x } }
          - { name: y, handler: example.math.add, params: { a: 1, b: 2 } }
`), 0o600))
	// A secret in the API URL's userinfo: it must not reach Temporal.
	secretURL := strings.Replace(s.url, "://", "://webuser:s3cret@", 1)
	runBinary(t, s, "--config="+cfgFile, "--task-types=demo.web,demo.web.local,example.echo", "--api-url="+secretURL)

	// While the approval is awaited: step a is done, TaskManager has its
	// progress, and the run's current details and progress query say so.
	wfID := s.prefix + web
	details := waitCurrentDetails(t, s.tc, wfID, "waits for signal")
	require.Equal(t, "1/3 steps done\nstep approve waits for signal \"go\"", details)
	v, err := s.tc.QueryWorkflow(context.Background(), wfID, "", workflows.ProgressQueryName)
	require.NoError(t, err)
	var sp workflows.StepProgress
	require.NoError(t, v.Get(&sp))
	require.Equal(t, workflows.StepProgress{Percent: 33, Message: "1/3 steps done", Done: 1, Total: 3,
		Waiting: []string{`step approve waits for signal "go"`}}, sp)
	st, _ := s.tm.Task(web)
	require.Equal(t, 33, st.Progress, "step a's handler posted the task's progress")

	desc, err := s.describe(context.Background(), wfID, "")
	require.NoError(t, err)
	md := desc.GetExecutionConfig().GetUserMetadata()
	require.Equal(t, "demo.web · task "+web+" · attempt 1", decodeString(t, md.GetSummary()))
	require.Equal(t, "TaskManager task ["+web+"]("+s.url+"/tasks/"+web+")", decodeString(t, md.GetDetails()))

	require.NoError(t, s.tc.SignalWorkflow(context.Background(), wfID, "", "go", map[string]string{"by": "ada"}))
	states := s.waitFinal([]string{web, local, echo})
	for _, id := range []string{web, local, echo} {
		require.Equal(t, "completed", states[id].Status, states[id].Error)
	}
	require.JSONEq(t, `{"echo":"HELLO WEB by ada","length":16}`, string(resultEntry(t, states[web].Result, "c")))
	var progress []int
	for _, p := range s.tm.ProgressCalls(web) {
		require.True(t, p.Accepted)
		progress = append(progress, p.Progress)
	}
	require.Equal(t, []int{33, 66, 100}, progress, "a done; c started; c done")

	// Found by its search attributes, as Temporal Web's search box does.
	if why := missingSearchAttributes(t, s.tc); why != "" {
		t.Logf("%s: the run is not looked up by them", why)
	} else {
		require.Eventually(t, func() bool { // visibility lags a little
			resp, err := s.tc.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{
				Query: "TaskID = '" + web + "' AND TaskType = 'demo.web'",
			})
			if err != nil {
				return false
			}
			for _, e := range resp.GetExecutions() {
				if e.GetExecution().GetWorkflowId() == wfID {
					return true
				}
			}
			return false
		}, 2*time.Minute, 100*time.Millisecond)
	}

	// The histories: summaries, string durations, no progress activities.
	h := s.history(wfID)
	require.Equal(t, []string{"step a · example.uppercase", "step c · example.echo", "report completed"}, summaries(t, h))
	input := startInput(t, h)
	require.Contains(t, input, `"start_to_close_timeout":"2m0s"`)
	require.Contains(t, input, `"claim_wait":"2m0s"`)
	require.Contains(t, input, `"initial_interval":"1s"`)
	require.NotRegexp(t, regexp.MustCompile(`"[a-z_]+(timeout|interval|wait)":\d`), input)
	hl := s.history(s.prefix + local)
	require.ElementsMatch(t, []string{"step shout · example.uppercase", "step x · example.echo", "step y · example.math.add", "report completed"}, summaries(t, hl))
	require.Equal(t, []string{"task " + echo + " · example.echo", "report completed"}, summaries(t, s.history(s.prefix+echo)))
	for name, hist := range map[string]*historypb.History{"web": h, "local": hl} {
		raw, err := protojson.Marshal(hist)
		require.NoError(t, err)
		require.NotContains(t, string(raw), "s3cret", name)
		require.NotContains(t, string(raw), activities.ProgressActivityName, name)
	}

	s.replay(map[string]string{"web": web, "local-steps": local, "echo": echo}, "history-v4-")
}

// A cancel from Temporal Web (here the CLI) fails the task's attempt in
// TaskManager with "<type> was cancelled", reported once; TaskManager
// re-queues it while it has attempts left, and the bridge runs it again
// as a new run under the same workflow id. A reset of a completed run
// runs it again, and TaskManager keeps its one outcome.
func TestE2E_web_cancel_and_reset(t *testing.T) {
	skipExternal(t, "it cancels and resets runs with the Temporal CLI, set up for the dev server")
	s := newStack(t, devserver.StylePHP)
	// TaskManager with two attempts per task, so the second cancel is final.
	s.tm = devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: apiKey, MaxAttempts: 2})
	s.url = s.tm.Start(t)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: s.url, APIKey: apiKey})
	require.NoError(t, err)
	s.api = api
	s.register("example.sleep", "example.echo")
	long := s.create("example.sleep", map[string]any{"duration": 30})
	done := s.create("example.echo", map[string]any{"message": "reset me"})
	runBinary(t, s, "--task-types=example.sleep,example.echo")
	cli, err := devtemporal.CLIPath()
	require.NoError(t, err)
	temporal := func(args ...string) {
		t.Helper()
		out, err := exec.Command(cli, append(args, "--address", temporalAddr, "--namespace", "default")...).CombinedOutput()
		require.NoError(t, err, string(out))
	}

	wfID := s.prefix + long
	cancelRun := func(attempt int) string {
		t.Helper()
		var runID string
		require.Eventually(t, func() bool { // the run of this attempt has its handler running
			d, err := s.describe(context.Background(), wfID, "")
			if err != nil || d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				return false
			}
			st, _ := s.tm.Task(long)
			runID = d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
			return st.Attempts == attempt && len(d.GetPendingActivities()) == 1 &&
				d.GetPendingActivities()[0].GetState() == enumspb.PENDING_ACTIVITY_STATE_STARTED
		}, 2*time.Minute, 50*time.Millisecond)
		temporal("workflow", "cancel", "--workflow-id", wfID, "--run-id", runID)
		return runID
	}

	first := cancelRun(1)
	require.Eventually(t, func() bool { return len(s.tm.Completions(long)) >= 1 }, 2*time.Minute, 50*time.Millisecond)
	d, err := s.describe(context.Background(), wfID, first)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		d, err = s.describe(context.Background(), wfID, first)
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 2*time.Minute, 50*time.Millisecond)
	// Canceled; or ContinuedAsNew when the bridge claimed the re-queued
	// task again before the run closed (it does at once, its place being
	// free): the next claim's run is then this run's successor.
	require.Contains(t, []enumspb.WorkflowExecutionStatus{enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW},
		d.GetWorkflowExecutionInfo().GetStatus(), "Temporal Web shows the run as Canceled (or continued for the next claim)")

	second := cancelRun(2) // TaskManager re-queued the task; the bridge claimed it again
	require.NotEqual(t, first, second)
	st := s.waitFinal([]string{long})[long]
	require.Equal(t, "failed", st.Status)
	require.Equal(t, "example.sleep was cancelled", st.Error)
	calls := s.tm.Completions(long)
	require.Len(t, calls, 2, "one outcome per attempt")
	for i, c := range calls {
		require.True(t, c.Accepted, "attempt %d", i+1)
		require.False(t, c.Success)
		require.Equal(t, "example.sleep was cancelled", c.Error)
		require.Equal(t, i+1, c.AttemptsBefore)
	}

	// A reset of the completed echo run runs it again from its first
	// workflow task: the handler runs, the report finds the outcome
	// already recorded, and TaskManager keeps its one completion.
	before := s.waitFinal([]string{done})[done]
	require.Equal(t, "completed", before.Status)
	echoID := s.prefix + done
	d, err = s.describe(context.Background(), echoID, "")
	require.NoError(t, err)
	original := d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	temporal("workflow", "reset", "--workflow-id", echoID, "--type", "FirstWorkflowTask", "--reason", "e2e reset")
	require.Eventually(t, func() bool {
		d, err = s.describe(context.Background(), echoID, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetExecution().GetRunId() != original &&
			d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 2*time.Minute, 50*time.Millisecond)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, d.GetWorkflowExecutionInfo().GetStatus())
	var res workflows.TaskResult
	require.NoError(t, s.tc.GetWorkflow(context.Background(), echoID, "").Get(context.Background(), &res))
	require.Equal(t, "completed", res.Status)
	after, _ := s.tm.Task(done)
	require.Equal(t, before.Result, after.Result)
	require.Equal(t, "completed", after.Status)
	accepted := 0
	for _, c := range s.tm.Completions(done) {
		if c.Accepted {
			accepted++
		}
	}
	require.Equal(t, 1, accepted, "TaskManager keeps the one outcome")
}

// summaries are the summaries of a history's activities, local ones
// included, in order.
func summaries(t *testing.T, h *historypb.History) []string {
	t.Helper()
	var out []string
	for _, ev := range h.GetEvents() {
		switch {
		case ev.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			out = append(out, decodeString(t, ev.GetUserMetadata().GetSummary()))
		case ev.GetEventType() == enumspb.EVENT_TYPE_MARKER_RECORDED && ev.GetMarkerRecordedEventAttributes().GetMarkerName() == "LocalActivity":
			out = append(out, decodeString(t, ev.GetUserMetadata().GetSummary()))
		}
	}
	return out
}

func decodeString(t *testing.T, p *commonpb.Payload) string {
	t.Helper()
	require.NotNil(t, p, "no summary")
	var s string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(p, &s))
	return s
}

// startInput is the workflow input as Temporal Web shows it.
func startInput(t *testing.T, h *historypb.History) string {
	t.Helper()
	ps := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads()
	require.Len(t, ps, 1)
	return string(ps[0].GetData())
}

// resultEntry is one step's entry of a multi-step task's result.
func resultEntry(t *testing.T, result json.RawMessage, name string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(result, &m))
	return m[name]
}

// A running handler's progress shows in Temporal Web as its activity's
// heartbeat details (sent by the bridge's heartbeater, not from the
// handler's goroutine), and a cancel of the run reaches the handler with a
// heartbeat's answer: it stops before its 30 s are up.
func TestE2E_progress_shows_as_heartbeat_details(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	id := s.create("example.sleep", map[string]any{"duration": 30})
	handlerEnd := make(chan error, 4)
	var stoppedAt atomic.Int64
	reg := activities.NewRegistry()
	activities.Register(reg, "example.sleep", func(ctx context.Context, p activities.SleepParams) (activities.SleepResult, error) {
		r, err := activities.Sleep(ctx, p)
		time.Sleep(500 * time.Millisecond) // cleaning up after the cancel
		stoppedAt.Store(time.Now().UnixNano())
		handlerEnd <- err
		return r, err
	})
	stop := s.runBridge(reg, "bridge-beats", "--max-runs=1")
	defer stop()
	wfID := s.prefix + id
	var seen activities.Progress
	require.Eventually(t, func() bool {
		d, err := s.describe(context.Background(), wfID, "")
		if err != nil || len(d.GetPendingActivities()) != 1 {
			return false
		}
		details := d.GetPendingActivities()[0].GetHeartbeatDetails()
		return len(details.GetPayloads()) > 0 &&
			converter.GetDefaultDataConverter().FromPayloads(details, &seen) == nil && seen.Percent > 0
	}, 2*time.Minute, 100*time.Millisecond)
	require.Regexp(t, `^step \d+/10$`, seen.Message)
	require.NoError(t, s.tc.CancelWorkflow(context.Background(), wfID, ""))
	require.ErrorIs(t, <-handlerEnd, context.Canceled, "the handler was cancelled, not run to its end")
	require.Error(t, s.tc.GetWorkflow(context.Background(), wfID, "").Get(context.Background(), nil), "the run ends cancelled")
	// The cancelled attempt is reported only once the handler stopped:
	// TaskManager re-queues the task on that report, and the next claim's
	// run must not start while this handler still works.
	completions := s.tm.Completions(id)
	require.Len(t, completions, 1)
	require.True(t, completions[0].At.UnixNano() > stoppedAt.Load(), "the outcome was posted after the handler stopped")
	s.replay(map[string]string{"cancel-during-handler": id}, "history-v5-")
}

// A cancelled run reports the cancel as its attempt's outcome, whatever
// its handler's attempt ends with while it stops: here a failure of its
// own (a handler on a dead worker would time out instead). That attempt
// failed because of the cancel, and the message says so.
func TestE2E_cancelled_run_reports_the_cancel_whatever_the_handler_ends_with(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	id := s.create("example.sleep", map[string]any{"duration": 30})
	started := make(chan struct{}, 4)
	reg := activities.NewRegistry()
	activities.Register(reg, "example.sleep", func(ctx context.Context, p activities.SleepParams) (activities.SleepResult, error) {
		started <- struct{}{}
		<-ctx.Done()
		return activities.SleepResult{}, activities.Permanent(errors.New("cleanup after the cancel failed"))
	})
	stop := s.runBridge(reg, "bridge-cancel", "--max-runs=1")
	defer stop()
	<-started
	c := s.cancelRun(id)
	require.Equal(t, "example.sleep was cancelled (its handler then ended: cleanup after the cancel failed)", c.Error)
}

// A cancelled `local: true` run reports at once: the SDK settles a
// local activity's cancel without waiting for its handler. TaskManager
// re-queues the task and the bridge claims it again, but the next claim's
// handler does not start in this bridge until the first one, slow to stop,
// returned.
func TestE2E_local_handler_does_not_start_beside_its_cancelled_one(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	id := s.create("example.sleep", map[string]any{"duration": 30})
	started, release := make(chan struct{}, 4), make(chan struct{})
	var calls atomic.Int32
	var firstStopped, secondStarted atomic.Int64
	reg := activities.NewRegistry()
	activities.Register(reg, "example.sleep", func(ctx context.Context, p activities.SleepParams) (activities.SleepResult, error) {
		if calls.Add(1) > 1 {
			secondStarted.Store(time.Now().UnixNano())
			started <- struct{}{}
			return activities.SleepResult{Duration: 1}, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		<-release // stops late
		firstStopped.Store(time.Now().UnixNano())
		return activities.SleepResult{}, ctx.Err()
	})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("types:\n  example.sleep: { local: true }\n"), 0o600))
	waiting := make(chan struct{})
	var once sync.Once
	log := slog.New(&hookHandler{Handler: bridge.NewLogger(os.Stderr, "text", false).Handler(), hook: func(r slog.Record) {
		if strings.Contains(r.Message, "still runs in this process") {
			once.Do(func() { close(waiting) })
		}
	}})
	stop := s.runBridgeWith(reg, "bridge-local-cancel", nil, []bridge.Option{bridge.WithLogger(log)}, "--config="+cfgFile, "--max-runs=2")
	defer stop()
	<-started
	c := s.cancelRun(id) // reported at once, while the handler still runs
	require.Equal(t, "example.sleep was cancelled", c.Error)
	select {
	case <-waiting: // the next claim's handler waits for the first
	case <-started:
		t.Fatal("the next claim's handler started beside the cancelled one")
	case <-time.After(5 * time.Minute): // only guards against a hang
		t.Fatal("the task was not claimed again")
	}
	close(release)
	require.Equal(t, "completed", s.waitFinal([]string{id})[id].Status)
	require.Greater(t, secondStarted.Load(), firstStopped.Load(), "the next handler started once the cancelled one returned")
	require.Len(t, s.tm.Completions(id), 2)
}

// hookHandler is a slog handler that also shows each record to hook.
type hookHandler struct {
	slog.Handler
	hook func(slog.Record)
}

func (h *hookHandler) Handle(ctx context.Context, r slog.Record) error {
	h.hook(r)
	return h.Handler.Handle(ctx, r)
}

func (h *hookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &hookHandler{Handler: h.Handler.WithAttrs(as), hook: h.hook}
}

func (h *hookHandler) WithGroup(name string) slog.Handler {
	return &hookHandler{Handler: h.Handler.WithGroup(name), hook: h.hook}
}

// cancelRun cancels the run of task id, waits until it closed, and returns
// the one outcome posted for the task.
func (s *stack) cancelRun(id string) devserver.CompletionCall {
	s.t.Helper()
	ctx, wfID := context.Background(), s.prefix+id
	require.NoError(s.t, s.tc.CancelWorkflow(ctx, wfID, ""))
	require.Error(s.t, s.tc.GetWorkflow(ctx, wfID, "").Get(ctx, nil), "the run ends cancelled")
	completions := s.tm.Completions(id)
	require.Len(s.t, completions, 1, "one outcome")
	return completions[0]
}

// A cancelled run waits for its handler to stop. When the task's claim
// moves meanwhile (here it times out and the bridge claims it again), the
// cancel is not posted with the newer claim, whose attempt never ran: the
// run continues as new for that claim, whose handler runs and is reported,
// as if the cancel had been reported at once. Saved as history-v6-*.json.
func TestE2E_cancel_while_the_claim_moves_runs_the_newer_claim(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	s.tm.SetClaimTimeout(time.Second)
	id := s.create("example.sleep", map[string]any{"duration": 0.1})
	started, release := make(chan struct{}, 4), make(chan struct{})
	var calls atomic.Int32
	reg := activities.NewRegistry()
	activities.Register(reg, "example.sleep", func(ctx context.Context, p activities.SleepParams) (activities.SleepResult, error) {
		if calls.Add(1) > 1 {
			return activities.SleepResult{Duration: *p.Duration}, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		<-release // stops late: its claim times out meanwhile
		return activities.SleepResult{}, ctx.Err()
	})
	stop := s.runBridge(reg, "bridge-moves", "--claim-timeout=1s") // TaskManager's, so the bridge renews its claim
	defer stop()
	<-started
	ctx, wfID := context.Background(), s.prefix+id
	d, err := s.describe(ctx, wfID, "")
	require.NoError(t, err)
	firstRun := d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	require.NoError(t, s.tc.CancelWorkflow(ctx, wfID, firstRun))
	require.Eventually(t, func() bool {
		v, err := s.tc.QueryWorkflow(ctx, wfID, firstRun, workflows.ClaimQueryName)
		var c workflows.Claim
		return err == nil && v.Get(&c) == nil && c.Attempts > 1
	}, time.Minute, 50*time.Millisecond, "a newer claim reached the cancelled run")
	close(release)

	require.Equal(t, "completed", s.waitFinal([]string{id})[id].Status)
	completions := s.tm.Completions(id)
	require.Len(t, completions, 1, "the cancel was not posted with the newer claim")
	require.True(t, completions[0].Success)
	require.EqualValues(t, 2, calls.Load(), "the newer claim's handler ran")
	d, err = s.describe(ctx, wfID, firstRun)
	require.NoError(t, err)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, d.GetWorkflowExecutionInfo().GetStatus())
	s.replayRun(nil, "cancel-claim-moved", wfID, firstRun, "history-v6-")
}

// A parallel group whose step fails cancels its other steps, and waits
// until they stopped before the task's failure is reported: TaskManager
// re-queues the task on that report, and the next claim's run must not
// start while a step of this one still works. Saved as history-v7-*.json.
func TestE2E_failed_group_reports_once_its_cancelled_steps_stopped(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.group")
	id := s.create("demo.group", map[string]any{"text": "group"})
	reg, slowStarted, stoppedAt := slowToStop()
	activities.Register(reg, "test.fail", func(ctx context.Context, _ struct{}) (struct{}, error) {
		<-slowStarted
		return struct{}{}, activities.Permanent(errors.New("the group fails here"))
	})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.group:
    steps:
      - parallel:
          - { name: slow, handler: test.slow }
          - { name: fail, handler: test.fail }
`), 0o600))
	stop := s.runBridge(reg, "bridge-group", "--config="+cfgFile, "--max-runs=1")
	defer stop()
	require.Eventually(t, func() bool { return len(s.tm.Completions(id)) > 0 }, 2*time.Minute, 50*time.Millisecond, "the failure is reported")
	require.Error(t, s.tc.GetWorkflow(context.Background(), s.prefix+id, "").Get(context.Background(), nil), "the run fails")
	completions := s.tm.Completions(id)
	require.Len(t, completions, 1)
	require.Contains(t, completions[0].Error, "the group fails here")
	require.NotZero(t, stoppedAt.Load(), "the cancelled step stopped")
	require.Greater(t, completions[0].At.UnixNano(), stoppedAt.Load(), "the failure was posted after the cancelled step stopped")
	s.replay(map[string]string{"failed-group": id}, "history-v7-")
}

// slowToStop returns a registry with handler test.slow, which runs until
// cancelled and then takes half a second to stop: started is closed when
// it first runs, and stoppedAt is when it stopped (UnixNano; 0 before).
func slowToStop() (reg *activities.Registry, started <-chan struct{}, stoppedAt *atomic.Int64) {
	reg, ch, stopped := activities.NewRegistry(), make(chan struct{}), new(atomic.Int64)
	var once sync.Once
	activities.Register(reg, "test.slow", func(ctx context.Context, _ struct{}) (struct{}, error) {
		once.Do(func() { close(ch) })
		<-ctx.Done()
		time.Sleep(500 * time.Millisecond) // cleaning up after the cancel
		stopped.Store(time.Now().UnixNano())
		return struct{}{}, ctx.Err()
	})
	return reg, ch, stopped
}

// A cancelled multi-step run waits, as a one-handler run does, until the
// step that was running stopped, then reports the cancel once.
func TestE2E_cancelled_pipeline_reports_once_its_step_stopped(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.steps")
	id := s.create("demo.steps", map[string]any{"text": "steps"})
	reg, started, stoppedAt := slowToStop()
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.steps:
    steps:
      - { name: first, handler: test.slow }
      - { name: second, handler: test.slow }
`), 0o600))
	stop := s.runBridge(reg, "bridge-steps", "--config="+cfgFile, "--max-runs=1")
	defer stop()
	<-started
	c := s.cancelRun(id)
	if strings.HasSuffix(c.Error, "timed out (Heartbeat))") {
		// The cancel reaches the step with a heartbeat's answer. On a
		// machine so loaded that the step's heartbeats came late (the SDK
		// bridge sends one every 0.7 × heartbeat_timeout plus a round trip),
		// Temporal timed the step out first (its worker presumed gone, it
		// is not waited for), and the run posted the cancel then, once.
		// The step's handler still stops: its next heartbeat finds its
		// attempt over.
		require.Equal(t, "demo.steps was cancelled (its handler then ended: step first (test.slow): test.slow timed out (Heartbeat))", c.Error)
		require.Eventually(t, func() bool { return stoppedAt.Load() != 0 }, 2*time.Minute, 50*time.Millisecond, "the timed-out step stopped")
		t.Log("the step timed out on its heartbeat before the cancel reached it (a loaded machine): the cancel-reaches-the-step path was not exercised")
		return
	}
	require.Equal(t, "step first (test.slow): test.slow was cancelled", c.Error)
	require.NotZero(t, stoppedAt.Load(), "the step stopped before the cancel was posted")
	require.Greater(t, c.At.UnixNano(), stoppedAt.Load(), "the cancel was posted after the step stopped")
}
