package workflows_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/prismq/tmbridge/workflows"
)

// fullInput sets every duration of a workflow input, at every depth.
func fullInput() workflows.TaskInput {
	opts := workflows.TypeOptions{
		ActivityOptions: workflows.ActivityOptions{
			StartToCloseTimeout: 2 * time.Minute, ScheduleToCloseTimeout: time.Hour, HeartbeatTimeout: 15 * time.Second,
			Retry: workflows.RetryOptions{InitialInterval: 1500 * time.Millisecond, MaximumInterval: 90 * time.Second, BackoffCoefficient: 2, MaximumAttempts: 4},
		},
		ClaimWait: 3 * time.Minute,
		Steps: []workflows.Step{
			{Name: "a", Handler: "example.sleep", ActivityOptions: workflows.ActivityOptions{StartToCloseTimeout: 7 * time.Second, Retry: workflows.RetryOptions{InitialInterval: 250 * time.Millisecond}}},
			{Parallel: []workflows.Step{{Name: "p", Handler: "example.echo", ActivityOptions: workflows.ActivityOptions{HeartbeatTimeout: 20 * time.Second}}}},
			{Name: "child", Enqueue: &workflows.Enqueue{Type: "x", PollInterval: 500 * time.Millisecond, MaxPollInterval: 30 * time.Second, Timeout: 24 * time.Hour}},
			{Name: "ok", WaitFor: &workflows.WaitFor{Signal: "ok", Timeout: 10 * time.Minute},
				OnFailure: []workflows.Step{{Name: "fb", Handler: "example.echo", ActivityOptions: workflows.ActivityOptions{ScheduleToCloseTimeout: 45 * time.Second}}}},
		},
	}
	return workflows.TaskInput{
		Task:         workflows.Task{ID: "42", Type: "demo.pipeline", Params: json.RawMessage(`{"n":1}`), Attempts: 1},
		Claim:        workflows.Claim{WorkerID: "w1", Attempts: 1, ClaimedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		Options:      opts,
		ClaimTimeout: 300 * time.Second,
	}
}

// Temporal Web shows the workflow input as JSON: each duration reads as a
// duration, and the input reads back as it was.
func TestDurations_are_strings_in_the_workflow_input(t *testing.T) {
	t.Parallel()
	in := fullInput()
	p, err := converter.GetDefaultDataConverter().ToPayload(in)
	require.NoError(t, err)
	got := string(p.GetData())
	for _, want := range []string{
		`"start_to_close_timeout":"2m0s"`, `"schedule_to_close_timeout":"1h0m0s"`, `"heartbeat_timeout":"15s"`,
		`"initial_interval":"1.5s"`, `"maximum_interval":"1m30s"`, `"claim_wait":"3m0s"`, `"claim_timeout":"5m0s"`,
		`"start_to_close_timeout":"7s"`, `"initial_interval":"250ms"`, `"heartbeat_timeout":"20s"`,
		`"poll_interval":"500ms"`, `"max_poll_interval":"30s"`, `"timeout":"24h0m0s"`, `"timeout":"10m0s"`,
		`"schedule_to_close_timeout":"45s"`, `"claimed_at":"2026-01-02T03:04:05Z"`,
	} {
		require.Contains(t, got, want)
	}
	require.NotRegexp(t, regexp.MustCompile(`"[a-z_]+(timeout|interval|wait)":\d`), got, "no duration in nanoseconds")

	var back workflows.TaskInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(p, &back))
	require.Equal(t, in, back)

	// Unset durations are left out, as before.
	p, err = converter.GetDefaultDataConverter().ToPayload(workflows.TaskInput{Options: workflows.TypeOptions{Steps: []workflows.Step{{Handler: "h"}}}})
	require.NoError(t, err)
	require.JSONEq(t, `{"task":{"id":"","type":"","params":null,"attempts":0,"priority":0},"claim":{"worker_id":"","attempts":0},
		"options":{"steps":[{"handler":"h"}]}}`, string(p.GetData()))
}

// Runs started before this change hold nanoseconds in their input; they
// decode to the same options (their histories replay: replay_test.go).
func TestDurations_read_the_nanoseconds_of_older_inputs(t *testing.T) {
	t.Parallel()
	h, err := client.HistoryFromJSON(mustOpen(t, "testdata/history-pipeline.json"), client.HistoryJSONOptions{})
	require.NoError(t, err)
	var in workflows.TaskInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(h.Events[0].GetWorkflowExecutionStartedEventAttributes().GetInput(), &in))
	require.Equal(t, 5*time.Minute, in.Options.StartToCloseTimeout)
	require.Equal(t, 10*time.Second, in.Options.HeartbeatTimeout)
	require.Equal(t, 2*time.Minute, in.Options.ClaimWait)
	require.Equal(t, time.Second, in.Options.Retry.InitialInterval)
	require.Equal(t, time.Minute, in.Options.Retry.MaximumInterval)
	require.Len(t, in.Options.Steps, 3)

	old := `{"options":{"start_to_close_timeout":7000000000,"retry":{"maximum_interval":60000000000},
		"steps":[{"handler":"h","heartbeat_timeout":20000000000,"enqueue":{"type":"x","timeout":1000000000},"wait_for":{"signal":"s","timeout":2000000000}}]},
		"claim_timeout":300000000000}`
	var o workflows.TaskInput
	require.NoError(t, json.Unmarshal([]byte(old), &o))
	require.Equal(t, 7*time.Second, o.Options.StartToCloseTimeout)
	require.Equal(t, time.Minute, o.Options.Retry.MaximumInterval)
	require.Equal(t, 20*time.Second, o.Options.Steps[0].HeartbeatTimeout)
	require.Equal(t, time.Second, o.Options.Steps[0].Enqueue.Timeout)
	require.Equal(t, 2*time.Second, o.Options.Steps[0].WaitFor.Timeout)
	require.Equal(t, 300*time.Second, o.ClaimTimeout)

	for _, bad := range []string{`{"claim_wait":"soon"}`, `{"claim_wait":true}`, `{"retry":{"initial_interval":[1]}}`} {
		var x workflows.TypeOptions
		require.Error(t, json.Unmarshal([]byte(bad), &x), bad)
	}
}

func mustOpen(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// Encoding, then decoding, gives back any options, a decoded value starts
// from (durations as strings or numbers alike).
func FuzzDurations_round_trip(f *testing.F) {
	f.Add(int64(time.Minute), int64(0), int64(-1), int64(time.Second), int64(1), "h", true)
	f.Add(int64(1<<63-1), int64(-1<<63), int64(1500*time.Millisecond), int64(0), int64(7), "", false)
	f.Fuzz(func(t *testing.T, a, b, c, d, e int64, name string, local bool) {
		name = strings.ToValidUTF8(name, "?") // JSON strings are UTF-8
		dur := func(x int64) time.Duration { return time.Duration(x) }
		act := workflows.ActivityOptions{
			TaskQueue: name, Local: workflows.Bool(local),
			StartToCloseTimeout: dur(a), ScheduleToCloseTimeout: dur(b), HeartbeatTimeout: dur(c),
			Retry: workflows.RetryOptions{InitialInterval: dur(d), MaximumInterval: dur(e), MaximumAttempts: int32(a % 100), NonRetryableErrorTypes: []string{name}},
		}
		in := workflows.TaskInput{
			Task:         workflows.Task{ID: name, Type: "t", Params: json.RawMessage(`{}`)},
			ClaimTimeout: dur(e),
			Options: workflows.TypeOptions{
				Handler: name, ActivityOptions: act, ClaimWait: dur(b),
				Steps: []workflows.Step{
					{Name: name, Handler: "h", ActivityOptions: act, OnFailure: []workflows.Step{{Handler: "f", ActivityOptions: act}}},
					{Name: "e", Enqueue: &workflows.Enqueue{Type: name, PollInterval: dur(c), MaxPollInterval: dur(d), Timeout: dur(a)}},
					{Name: "w", WaitFor: &workflows.WaitFor{Signal: name, Timeout: dur(b)}},
				},
			},
		}
		raw, err := json.Marshal(in)
		require.NoError(t, err)
		var back workflows.TaskInput
		require.NoError(t, json.Unmarshal(raw, &back), string(raw))
		require.Equal(t, in, back, string(raw))

		// The same input with nanoseconds, as older bridges wrote it.
		var tree any
		require.NoError(t, json.Unmarshal(raw, &tree))
		old, err := json.Marshal(asNanoseconds(tree))
		require.NoError(t, err)
		var fromOld workflows.TaskInput
		require.NoError(t, json.Unmarshal(old, &fromOld), string(old))
		require.Equal(t, in, fromOld, string(old))
	})
}

// durationKey names the JSON keys of durations.
var durationKey = regexp.MustCompile(`(timeout|interval|wait)$`)

// asNanoseconds replaces each duration string of a decoded JSON value by
// its nanoseconds.
func asNanoseconds(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && durationKey.MatchString(k) {
				d, err := time.ParseDuration(s)
				if err != nil {
					panic(err)
				}
				v[k] = json.Number(fmt.Sprint(int64(d)))
				continue
			}
			v[k] = asNanoseconds(x)
		}
	case []any:
		for i, x := range v {
			v[i] = asNanoseconds(x)
		}
	}
	return v
}
