// Package bridgetest runs TaskManager tasks through tmbridge's real task
// workflow in a unit test, with no server: Temporal's test environment
// (its clock skips ahead, so retries with minutes of backoff take
// milliseconds) and the in-memory dev TaskManager.
//
//	func TestResize(t *testing.T) { // examples/resize
//		reg := activities.NewRegistry()
//		activities.Register(reg, "image.resize", resize)
//		out, err := bridgetest.Run(t, reg, "", "image.resize", map[string]any{"url": "https://img.example/a.png", "width": 100})
//		require.NoError(t, err)
//		require.JSONEq(t, `{"url":"https://img.example/a.png?w=100"}`, string(out))
//	}
package bridgetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// WorkerID is the worker id the test task is claimed with.
const WorkerID = "bridgetest"

// Option is a setting of Run.
type Option func(*settings)

type settings struct {
	workflows map[string]any
	twice     []string // workflow names given twice
}

// WithWorkflow registers a Go workflow under name for a type configured
// with `workflow: name`, as bridge.WithWorkflow does on a bridge: a name
// given twice, a nil function or a tmbridge. name fails the test.
func WithWorkflow(name string, fn any) Option {
	return func(s *settings) {
		if _, ok := s.workflows[name]; ok {
			s.twice = append(s.twice, name)
		}
		s.workflows[name] = fn
	}
}

// Run runs one task of taskType with params through the task workflow the
// bridge runs: steps, Go workflows, retries, timeouts and the report to
// TaskManager. configYAML is the bridge's YAML config ("" for defaults);
// reg holds the Go handlers (the config's exec and http ones are added).
//
// It runs one claim of the task and returns the result as TaskManager
// recorded it, or an error whose message is the error_message TaskManager
// recorded. A failure is returned as such even when TaskManager queued
// the task again (it has attempts left): a bridge would then claim it and
// run the handler again. A config that does not load, or a task the
// bridge could not run at all, fails the test.
func Run(t testing.TB, reg *activities.Registry, configYAML string, taskType string, params any, opts ...Option) (json.RawMessage, error) {
	t.Helper()
	s := settings{workflows: map[string]any{}}
	for _, o := range opts {
		o(&s)
	}
	if len(s.twice) > 0 {
		t.Fatalf("bridgetest: WithWorkflow: %q given twice", s.twice)
	}
	cfg := loadConfig(t, configYAML)
	// Which types a bridge serves is not this test's: the production
	// config's task_types may name types whose handlers it does not hold.
	cfg.TaskTypes, cfg.TaskTypeIDs = nil, nil
	handlers, err := cfg.Registry(reg)
	if err != nil {
		t.Fatalf("bridgetest: %v", err)
	}
	if _, ok := handlers.Lookup(taskType); !ok {
		if _, ok := cfg.Types[taskType]; !ok {
			t.Fatalf("bridgetest: task type %q has no handler and no entry under types: in the config (handlers: %v)", taskType, handlers.Names())
		}
	}

	tm := devserver.New(devserver.Options{Style: devserver.StyleDocumented, APIKey: "bridgetest"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "bridgetest", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("bridgetest: %v", err)
	}
	task := createAndClaim(t, api, taskType, params)

	typeOpts := cfg.TypeOptions(taskType)
	if _, ok := handlers.Lookup(typeOpts.Handler); typeOpts.TaskQueue != "" && !ok && len(typeOpts.Steps) == 0 && typeOpts.Workflow == "" {
		t.Fatalf("bridgetest: task type %q is routed to task queue %q, whose worker is not this test's", taskType, typeOpts.TaskQueue)
	}
	if _, ok := s.workflows[typeOpts.Workflow]; typeOpts.Workflow != "" && !ok {
		t.Fatalf("bridgetest: task type %q runs workflow %q: pass bridgetest.WithWorkflow(%q, fn)", taskType, typeOpts.Workflow, typeOpts.Workflow)
	}

	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(testLogger{t})
	env := suite.NewTestWorkflowEnvironment()
	env.SetWorkflowRunTimeout(365 * 24 * time.Hour) // a bridge's runs have none
	// Handlers take real time; the test's own deadline bounds them.
	env.SetTestTimeout(testTimeout(t))
	// Workflow code that runs longer than the bridge's deadlock detection
	// between two yields (a heavy computation, a time.Sleep) fails here as
	// it would on a bridge, where its task would never finish.
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: DeadlockDetectionTimeout * raceSlowdown, Interceptors: []interceptor.WorkerInterceptor{workflows.GoroutinePanics()}})
	env.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	for name, fn := range s.workflows {
		if err := workflows.RegisterGo(env, name, fn); err != nil {
			t.Fatalf("bridgetest: WithWorkflow: %v", err)
		}
	}
	(&activities.Activities{Registry: handlers, TaskManager: api, ProgressInterval: time.Nanosecond}).RegisterOn(env)

	in := cfg.TaskInput(task, typeOpts, env.Now())
	if err := execute(env, in); err != nil {
		t.Fatalf("bridgetest: %v", err)
	}
	if !env.IsWorkflowCompleted() {
		t.Fatalf("bridgetest: the workflow of task %s did not complete", task.ID)
	}
	runErr := env.GetWorkflowError()

	st, ok := tm.Task(string(task.ID))
	switch {
	case !ok:
		t.Fatalf("bridgetest: task %s is gone from TaskManager", task.ID)
	case st.Status == taskmanager.StatusCompleted:
		return st.Result, nil
	case st.Error != "":
		return nil, errors.New(st.Error)
	}
	t.Fatalf("bridgetest: task %s ended %s in TaskManager with no outcome; the workflow: %v", task.ID, st.Status, runErr)
	return nil, nil
}

// execute runs the workflow; the test environment panics when its
// timeout passes, which becomes an error here.
func execute(env *testsuite.TestWorkflowEnvironment, in workflows.TaskInput) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the task did not finish: %v", r)
		}
	}()
	env.ExecuteWorkflow(workflows.TaskWorkflowName, in)
	return nil
}

// DeadlockDetectionTimeout is how long workflow code may run between two
// yields (a call that blocks on Temporal: an activity, a timer, a
// future) before its workflow task fails as stuck: the SDK's default,
// which the bridge keeps. Run uses it too (ten times it under the race
// detector).
const DeadlockDetectionTimeout = time.Second

// testTimeout is how long a run may take in real time: up to the test's
// deadline, else 10 minutes.
func testTimeout(t testing.TB) time.Duration {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			return max(time.Until(deadline)-5*time.Second, time.Second)
		}
	}
	return 10 * time.Minute
}

// testLogger passes the SDK's warnings and errors to the test's log.
type testLogger struct{ t testing.TB }

func (l testLogger) Debug(string, ...any) {}
func (l testLogger) Info(string, ...any)  {}
func (l testLogger) Warn(msg string, kv ...any) {
	l.t.Helper()
	l.t.Log(append([]any{"WARN", msg}, kv...)...)
}
func (l testLogger) Error(msg string, kv ...any) {
	l.t.Helper()
	l.t.Log(append([]any{"ERROR", msg}, kv...)...)
}

// loadConfig reads configYAML as the bridge reads its config file.
func loadConfig(t testing.TB, configYAML string) bridge.Config {
	t.Helper()
	var args []string
	if configYAML != "" {
		path := filepath.Join(t.TempDir(), "tmbridge.yaml")
		if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
			t.Fatalf("bridgetest: %v", err)
		}
		args = append(args, "--config="+path)
	}
	cfg, err := bridge.Load(append(args, "--worker-id="+WorkerID), nil, io.Discard)
	if err != nil {
		t.Fatalf("bridgetest: %v", err)
	}
	return cfg
}

// createAndClaim registers taskType, creates the task and claims it.
func createAndClaim(t testing.TB, api *taskmanager.Client, taskType string, params any) taskmanager.Task {
	t.Helper()
	ctx := context.Background()
	typ, err := api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: taskType, Version: "1.0.0", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	if err != nil {
		t.Fatalf("bridgetest: register task type %q: %v", taskType, err)
	}
	if params == nil {
		params = map[string]any{}
	}
	if _, err := api.CreateTask(ctx, taskType, params); err != nil {
		t.Fatalf("bridgetest: create task: %v", err)
	}
	task, err := api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: WorkerID, TaskTypeID: typ.ID})
	if err != nil {
		t.Fatalf("bridgetest: claim task: %v", err)
	}
	return task
}
