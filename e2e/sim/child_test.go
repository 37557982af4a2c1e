package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
)

// A bridge process of the simulation is this test binary run again with
// childEnv set: it runs bridge.Main with the simulation's handlers, so it
// can be killed with SIGKILL like a real bridge.
const (
	childEnv    = "TMBRIDGE_SIM_CHILD"
	observerEnv = "TMBRIDGE_SIM_OBSERVER" // URL the handlers report to
)

// Task kinds, one task type each: what the handler does decides the final
// state the checker expects.
const (
	kindOK    = "sim.ok"    // succeeds
	kindFast  = "sim.fast"  // succeeds, as a local activity
	kindFlaky = "sim.flaky" // fails its first attempt (retried by Temporal), then succeeds
	kindFail  = "sim.fail"  // fails for good, every TaskManager attempt
	kindSlow  = "sim.slow"  // runs past TaskManager's claim timeout, then succeeds
	kindBig   = "sim.big"   // a result too large to store: fails
)

var kinds = []string{kindOK, kindFast, kindFlaky, kindFail, kindSlow, kindBig}

// Multi-step kinds (simConfig): their steps run the handlers above.
const (
	kindSteps     = "sim.steps"      // one step, then two at once (one flaky): succeeds
	kindStepsFail = "sim.steps.fail" // two steps at once, one failing for good: fails
)

var stepKinds = []string{kindSteps, kindStepsFail}

// kindStepsLocal is sim.steps with local steps (local: true), drawn with
// the long local tasks (plan): its steps run past the first workflow
// task's heartbeat.
const kindStepsLocal = "sim.steps.local"

// stepsResult is what a succeeding sim.steps task returns: its steps'
// results by name.
func stepsResult(n int) string {
	r := expectedResult(n)
	return fmt.Sprintf(`{"first":%s,"left":%s,"right":%s}`, r, r, r)
}

// params of every simulated task.
type params struct {
	N      int     `json:"n"`
	Sleep  float64 `json:"sleep,omitempty"` // seconds
	Filler string  `json:"filler,omitempty"`
}

// expectedResult is what a succeeding task returns.
func expectedResult(n int) string { return fmt.Sprintf(`{"n":%d,"done":true}`, n) }

// failMessage is what sim.fail fails with.
func failMessage(n int) string { return fmt.Sprintf("planned failure %d", n) }

// runChild runs a bridge process and returns its exit code.
func runChild() int {
	reg := activities.NewRegistry()
	obs := os.Getenv(observerEnv)
	handler := func(kind string) func(ctx context.Context, p params) (json.RawMessage, error) {
		return func(ctx context.Context, p params) (json.RawMessage, error) {
			in, _ := activities.TaskInfo(ctx)
			run := activity.GetInfo(ctx).WorkflowExecution.RunID
			tell(obs, "start", in, run)
			defer tell(obs, "end", in, run)
			if p.Sleep > 0 {
				select {
				case <-time.After(time.Duration(p.Sleep * float64(time.Second))):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			switch kind {
			case kindFlaky:
				if activity.GetInfo(ctx).Attempt == 1 {
					return nil, errors.New("flaky: first attempt fails")
				}
			case kindFail:
				return nil, activities.Permanent(errors.New(failMessage(p.N)))
			case kindBig:
				return json.RawMessage(`{"blob":"` + strings.Repeat("b", 70_000) + `"}`), nil
			}
			return json.RawMessage(expectedResult(p.N)), nil
		}
	}
	for _, k := range kinds {
		activities.Register(reg, k, handler(k))
	}
	return bridge.Main(reg)
}

// tell tells the observer a handler of run runID started or ended (best effort: the
// observer is in the test process, reached over loopback).
func tell(url, what string, in activities.HandlerInput, runID string) {
	body, _ := json.Marshal(handlerEvent{What: what, TaskID: in.TaskID, WorkerID: in.WorkerID, Attempt: in.Attempt, PID: os.Getpid(), RunID: runID})
	resp, err := http.Post(url+"/"+what, "application/json", bytes.NewReader(body))
	if err == nil {
		resp.Body.Close()
	}
}

// handlerEvent is what a handler reports.
type handlerEvent struct {
	What     string `json:"what"`
	TaskID   string `json:"task_id"`
	WorkerID string `json:"worker_id"`
	Attempt  int    `json:"attempt"`
	PID      int    `json:"pid"`
	RunID    string `json:"run_id"` // the task run's (the workflow's)
}

// simConfig is the bridges' YAML config: handlers retried without limit
// (only what a handler decides may fail a task), sim.fast local.
const simConfig = `
type_defaults:
  start_to_close_timeout: 1m
  heartbeat_timeout: 10s
  claim_wait: 30s
  retry:
    initial_interval: 200ms
    maximum_interval: 2s
    maximum_attempts: -1
types:
  sim.fast:
    local: true
  sim.steps:
    steps:
      - { name: first, handler: sim.ok }
      - parallel:
          - { name: left, handler: sim.flaky }
          - { name: right, handler: sim.ok }
  sim.steps.local:
    local: true
    steps:
      - { name: first, handler: sim.ok }
      - parallel:
          - { name: left, handler: sim.flaky }
          - { name: right, handler: sim.ok }
  sim.steps.fail:
    steps:
      - parallel:
          - { name: slow, handler: sim.ok }
          - { name: bad, handler: sim.fail }
`
