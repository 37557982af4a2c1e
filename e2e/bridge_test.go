package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

var styles = []devserver.Style{devserver.StylePHP, devserver.StyleDocumented}

// Every example type runs with the reference worker's results; example.error
// ends failed after TaskManager's attempts; a type without a handler is
// never claimed.
func TestE2E_example_types(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			s.register("example.echo", "example.uppercase", "example.math.add", "example.sleep", "example.error", "other.unhandled")
			const n = 60
			want := map[string]string{}
			var ids, errorIDs []string
			for i := range n {
				id := s.create("example.echo", map[string]any{"message": fmt.Sprintf("hello %d", i)})
				want[id] = fmt.Sprintf(`{"echo":"hello %d","length":%d}`, i, len(fmt.Sprintf("hello %d", i)))
				id = s.create("example.uppercase", map[string]any{"text": fmt.Sprintf("abc %d", i)})
				want[id] = fmt.Sprintf(`{"original":"abc %d","uppercase":"ABC %d"}`, i, i)
				id = s.create("example.math.add", map[string]any{"a": i, "b": "0.5"})
				want[id] = fmt.Sprintf(`{"a":%d,"b":0.5,"result":%v}`, i, float64(i)+0.5)
				id = s.create("example.sleep", map[string]any{"duration": 0.2, "n": i})
				want[id] = `{"duration":0.2}`
			}
			for id := range want {
				ids = append(ids, id)
			}
			for i := range 10 {
				errorIDs = append(errorIDs, s.create("example.error", map[string]any{"message": fmt.Sprintf("boom %d", i)}))
			}
			var unhandled []string
			for i := range 5 {
				unhandled = append(unhandled, s.create("other.unhandled", map[string]any{"i": i}))
			}

			s.runBridge(nil, "bridge-1")
			states := s.waitFinal(append(append([]string{}, ids...), errorIDs...))
			for _, id := range ids {
				require.Equal(t, "completed", states[id].Status, "task %s", id)
				require.JSONEq(t, want[id], string(states[id].Result), "task %s", id)
			}
			for i, id := range errorIDs {
				st := states[id]
				require.Equal(t, "failed", st.Status)
				require.Equal(t, 3, st.Attempts, "failed after TaskManager's attempts")
				require.Equal(t, fmt.Sprintf("boom %d", i), st.Error)
			}
			for _, id := range unhandled {
				st, _ := s.tm.Task(id)
				require.Equal(t, "pending", st.Status)
				require.Zero(t, st.Attempts, "a type without a handler is never claimed")
			}
			s.requireOneOutcomeEach(ids)
		})
	}
}

// Two bridges against one TaskManager and one namespace run each task once.
func TestE2E_two_bridges_run_each_task_once(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			s.register("example.echo", "example.sleep")
			var ids []string
			for i := range 150 {
				ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("m%d", i)}))
				if i%3 == 0 {
					ids = append(ids, s.create("example.sleep", map[string]any{"duration": 0.1, "n": i}))
				}
			}
			s.runBridge(nil, "bridge-a", "--max-in-flight=20")
			s.runBridge(nil, "bridge-b", "--max-in-flight=20")
			states := s.waitFinal(ids)
			by := map[string]int{}
			for _, id := range ids {
				require.Equal(t, "completed", states[id].Status)
				for _, c := range s.tm.Completions(id) {
					if c.Accepted {
						by[c.WorkerID]++
					}
				}
			}
			t.Logf("completions by bridge: %v", by)
			s.requireOneOutcomeEach(ids)
			require.Equal(t, len(ids), s.tm.Stats().AcceptedCompletions)
		})
	}
}

func runBinary(t *testing.T, s *stack, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin("tmbridge"), s.args("bin-bridge", args...)...)
	cmd.Env = s.environ()
	for _, v := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "GOTRACEBACK"} { // for measurements
		if x, ok := os.LookupEnv(v); ok {
			cmd.Env = append(cmd.Env, v+"="+x)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Cleanup(func() {
		if cmd.ProcessState == nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
		if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
			t.Logf("tmbridge output:\n%s", out.String())
		}
	})
	require.NoError(t, cmd.Start())
	return cmd
}

// --max-runs=N claims N tasks, waits for them and exits 0.
func TestE2E_max_runs_exits_zero(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			s.register("example.echo")
			for i := range 12 {
				s.create("example.echo", map[string]any{"message": fmt.Sprintf("m%d", i)})
			}
			cmd := runBinary(t, s, "--max-runs=5")
			require.NoError(t, cmd.Wait(), "exit code 0")
			counts := map[string]int{}
			for _, st := range s.tm.Tasks() {
				counts[st.Status]++
			}
			require.Equal(t, map[string]int{"completed": 5, "pending": 7}, counts)
			// It exits with no run of its own left open in Temporal: the
			// runs' last workflow task ran before the worker stopped.
			for _, st := range s.tm.Tasks() {
				if st.Status != "completed" {
					continue
				}
				d, err := s.describe(context.Background(), s.prefix+st.ID, "")
				require.NoError(t, err)
				require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, d.GetWorkflowExecutionInfo().GetStatus(), "run of task %s", st.ID)
			}
		})
	}
}

// Handler progress to TaskManager keeps within progress_rate for all tasks
// together: a token bucket, so at most the rate's burst plus the rate per
// second of the bridge's life, each task's 100 aside (every task ends
// posted at 100); progress_rate 0 posts none. The tasks complete either
// way, with requests to Temporal uncompressed.
func TestE2E_progress_rate_bounds_progress_calls(t *testing.T) {
	for _, rate := range []int{1, 0} {
		t.Run(fmt.Sprint("rate ", rate), func(t *testing.T) {
			s := newStack(t, devserver.StylePHP)
			s.register("example.sleep")
			var ids []string
			for i := range 12 {
				// Steps at 1, 2 and 3 s: unbounded, two calls each (the
				// first, and 100).
				ids = append(ids, s.create("example.sleep", map[string]any{"duration": 3, "n": i}))
			}
			launched := time.Now()
			cmd := runBinary(t, s, "--max-runs=12", "--max-in-flight=12", fmt.Sprint("--progress-rate=", rate), "--grpc-compression=none")
			require.NoError(t, cmd.Wait(), "exit code 0")
			life := time.Since(launched)
			budgeted := 0
			for id, st := range s.waitFinal(ids) {
				require.Equal(t, "completed", st.Status, "task %s", id)
				calls := s.tm.ProgressCalls(id)
				if rate == 0 {
					require.Empty(t, calls, "task %s", id)
					continue
				}
				require.NotEmpty(t, calls, "task %s", id)
				require.Equal(t, 100, calls[len(calls)-1].Progress, "task %s ends posted at 100", id)
				budgeted += len(calls) - 1
			}
			bound := float64(rate) * (1 + life.Seconds())
			require.LessOrEqual(t, float64(budgeted), bound, "%d progress calls below 100 in %s at %d/s", budgeted, life, rate)
		})
	}
}

// SIGTERM mid-run loses nothing: a restarted bridge finishes the work.
func TestE2E_sigterm_loses_nothing(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			s.register("example.sleep")
			var ids []string
			for i := range 16 {
				ids = append(ids, s.create("example.sleep", map[string]any{"duration": 1, "n": i}))
			}
			first := runBinary(t, s, "--max-in-flight=4", "--shutdown-grace=0.3")
			// Stop while tasks are running: after the first outcome lands.
			for s.tm.Stats().AcceptedCompletions == 0 {
				time.Sleep(20 * time.Millisecond)
			}
			require.NoError(t, first.Process.Signal(syscall.SIGTERM))
			require.NoError(t, first.Wait(), "a stop by SIGTERM exits 0")
			unfinished := 0
			for _, st := range s.tm.Tasks() {
				if st.Status != "completed" {
					unfinished++
				}
			}
			require.Positive(t, unfinished, "the stop came mid-run")

			second := runBinary(t, s, "--max-in-flight=4")
			states := s.waitFinal(ids)
			_ = second.Process.Signal(syscall.SIGTERM)
			_ = second.Wait()
			for _, id := range ids {
				require.Equal(t, "completed", states[id].Status)
				require.JSONEq(t, `{"duration":1}`, string(states[id].Result))
			}
			s.requireOneOutcomeEach(ids)
		})
	}
}

// A stop cancels the handlers still running at the end of the shutdown
// grace and waits for them to return (15 s at most, as StopTimeout
// counts), so that their attempts are reported and retried at once rather
// than after their heartbeat timeout: here one takes 6 s to clean up.
func TestE2E_stop_waits_for_cancelled_handlers_to_return(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	s.create("example.sleep", map[string]any{"duration": 60})
	started := make(chan struct{}, 1)
	var returned atomic.Bool
	reg := activities.NewRegistry()
	activities.Register(reg, "example.sleep", func(ctx context.Context, p activities.SleepParams) (activities.SleepResult, error) {
		started <- struct{}{}
		<-ctx.Done()
		time.Sleep(6 * time.Second) // cleaning up after the cancel
		returned.Store(true)
		return activities.SleepResult{}, ctx.Err()
	})
	stop := s.runBridge(reg, "bridge-stop", "--shutdown-grace=0s", "--max-runs=1")
	<-started
	stop()
	require.True(t, returned.Load(), "Stop returned before the cancelled handler did")
}

// A config error names the key and exits ExitConfig (78) before anything
// starts.
func TestE2E_config_error_names_the_key(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	cmd := runBinary(t, s, "--claim-sort-by=size")
	err := cmd.Wait()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, bridge.ExitConfig, exitErr.ExitCode())
	out := fmt.Sprint(cmd.Stdout)
	require.Contains(t, out, "claim_sort_by")
	require.NotContains(t, out, apiKey)
}

// The API key never shows in the bridge's logs.
func TestE2E_logs_hold_no_secret(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	s.create("example.echo", map[string]any{"message": "x"})
	cmd := runBinary(t, s, "--max-runs=1", "--debug")
	require.NoError(t, cmd.Wait())
	out := fmt.Sprint(cmd.Stdout)
	require.Contains(t, out, `"api_key":"set (redacted)"`)
	require.NotContains(t, out, apiKey)
	var lines int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		require.True(t, json.Valid([]byte(line)), "JSON logs: %s", line)
		lines++
	}
	require.Positive(t, lines)
}

// By default each run carries the TaskType and TaskID search attributes
// (where the namespace has them); temporal.search_attributes: false starts
// runs without any.
func TestE2E_search_attributes_can_be_turned_off(t *testing.T) {
	for name, off := range map[string]bool{"default": false, "off": true} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, devserver.StyleDocumented)
			if why := missingSearchAttributes(t, s.tc); why != "" && !off {
				t.Skip(why)
			}
			s.register("example.echo")
			id := s.create("example.echo", map[string]any{"message": name})
			s.runBridge(nil, "sa-"+name, fmt.Sprintf("--search-attributes=%v", !off))
			require.Equal(t, "completed", s.waitFinal([]string{id})[id].Status)
			fields := s.history(s.prefix + id).GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetSearchAttributes().GetIndexedFields()
			if off {
				require.Empty(t, fields)
				return
			}
			require.Contains(t, fields, "TaskType")
			require.Contains(t, fields, "TaskID")
		})
	}
}

// An embedder's Stop before Run (or while Run checks TaskManager and
// Temporal): Run returns without starting the worker or claiming. Before,
// Run started the worker that Stop had stopped, and the SDK panicked
// ("attempted to start a worker that has been stopped before"). Found by
// a review.
func TestE2E_stop_before_run_claims_nothing(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	id := s.create("example.echo", map[string]any{"message": "not claimed"})
	cfg, err := bridge.Load(s.args("bridge-stop-first"), s.environ(), os.Stdout)
	require.NoError(t, err)
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	b, err := bridge.New(cfg, reg, s.tc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, b.Stop(ctx))
	require.NoError(t, b.Run(ctx))
	st, ok := s.tm.Task(id)
	require.True(t, ok)
	require.Equal(t, "pending", st.Status)
}
