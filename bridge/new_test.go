package bridge

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// lazyClient is a Temporal client that dials nothing until used: New
// builds its worker without a call.
func lazyClient(t *testing.T) client.Client {
	t.Helper()
	tc, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1"})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	return tc
}

func newTestConfig(types map[string]TypeConfig) Config {
	return Config{
		APIURL: "http://127.0.0.1:1/api", WorkerID: "w1", PollInterval: time.Second, MaxInFlight: 10,
		APITimeout: 5 * time.Second, ClaimTimeout: workflows.DefaultClaimTimeout, ShutdownGrace: 10 * time.Second, ProgressRate: 10,
		ClaimSortBy: "created_at", ClaimSortOrder: "ASC", LogFormat: "auto",
		Temporal: TemporalConfig{TaskQueue: "q", WorkflowIDPrefix: "task-", MaxConcurrentActivities: 10, WorkflowCacheSize: 200, GRPCCompression: "gzip"},
		Types:    types,
	}
}

// A type routed to a Go workflow that this bridge does not register (and
// no task_queue sends elsewhere) is a config error. Before, New accepted
// it: the bridge claimed its tasks and their runs failed every workflow
// task ("unable to find workflow type"), the tasks held claimed. And a Go
// workflow the SDK cannot register is an error, not a panic. (Found by a
// review.)
func TestNew_checks_Go_workflow_routes_and_registrations(t *testing.T) {
	t.Parallel()
	flow := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) { return nil, nil }
	routed := map[string]TypeConfig{"demo.flow": {TypeOptions: workflows.TypeOptions{Workflow: "demo.missing"}}}
	_, err := New(newTestConfig(routed), nil, lazyClient(t))
	require.ErrorContains(t, err, `config: types.demo.flow.workflow: no Go workflow "demo.missing" is registered in this bridge`)

	_, err = New(newTestConfig(routed), nil, lazyClient(t), WithWorkflow("demo.missing", flow))
	require.NoError(t, err)

	elsewhere := map[string]TypeConfig{"demo.flow": {TypeOptions: workflows.TypeOptions{Workflow: "demo.missing", ActivityOptions: workflows.ActivityOptions{TaskQueue: "other"}}}}
	_, err = New(newTestConfig(elsewhere), nil, lazyClient(t))
	require.NoError(t, err, "another worker's queue registers it")

	_, err = New(newTestConfig(nil), nil, lazyClient(t), WithWorkflow("demo.bad", func(int) {}))
	require.ErrorContains(t, err, `bridge.WithWorkflow: workflow "demo.bad"`)
	_, err = New(newTestConfig(nil), nil, lazyClient(t), WithWorkflow(workflows.TaskWorkflowName, flow))
	require.ErrorContains(t, err, `names starting with "tmbridge." are the bridge's own`)
}

// New refuses a config Validate refuses (an embedder's, not from Load):
// max_in_flight 0 claimed nothing, silently; a zero poll_interval listed
// in a tight loop, and with a zero claim_timeout made the sweeper panic.
func TestNew_validates_its_config(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(nil)
	cfg.MaxInFlight, cfg.PollInterval, cfg.ClaimTimeout = 0, 0, 0
	_, err := New(cfg, nil, lazyClient(t))
	require.ErrorContains(t, err, "config: max_in_flight")
	require.ErrorContains(t, err, "config: poll_interval")
	require.ErrorContains(t, err, "config: claim_timeout")
}

// Registration fails loudly: a nil handler in disguise (a nil HandlerFunc,
// Typed(nil)), a name of the bridge's own activities (before: New
// panicked, the SDK refusing a second registration), a handler added
// after New (before: accepted, and never served), a nil Go workflow
// (before: accepted, and every task of its type failed). (Found by a
// review.)
func TestNew_registration_mistakes_fail_loudly(t *testing.T) {
	t.Parallel()
	echo := activities.HandlerFunc(func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) { return p, nil })
	reg := activities.NewRegistry()
	require.ErrorContains(t, reg.Add("t.nil", activities.HandlerFunc(nil)), "nil handler")
	require.ErrorContains(t, reg.Add("t.typed", activities.Typed[struct{}, struct{}](nil)), "nil handler")
	require.ErrorContains(t, reg.Add(activities.ReportActivityName, echo), `names starting with "tmbridge." are the bridge's own activities`)

	cfg := newTestConfig(map[string]TypeConfig{"tmbridge.job": {Exec: &activities.ExecConfig{Command: []string{"true"}}}})
	_, err := New(cfg, nil, lazyClient(t))
	require.ErrorContains(t, err, `config: types.tmbridge.job: activities: register handler "tmbridge.job": names starting with "tmbridge."`)

	require.NoError(t, reg.Add("t.early", echo))
	b, err := New(newTestConfig(nil), reg, lazyClient(t))
	require.NoError(t, err)
	require.ErrorContains(t, reg.Add("t.late", echo), "a bridge was built with this registry already")
	_, served := b.reg.Lookup("t.early")
	require.True(t, served)

	var flow func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error)
	routed := map[string]TypeConfig{"demo.flow": {TypeOptions: workflows.TypeOptions{Workflow: "demo.flow"}}}
	other := activities.NewRegistry()
	_, err = New(newTestConfig(routed), other, lazyClient(t), WithWorkflow("demo.flow", flow))
	require.ErrorContains(t, err, `bridge.WithWorkflow: workflow "demo.flow": nil workflow function`)
	require.NoError(t, other.Add("t.more", echo), "a New that failed built no bridge: the registry is not sealed")

	// A name given twice: before, the second replaced the first silently.
	flow = func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) { return nil, nil }
	_, err = New(newTestConfig(routed), nil, lazyClient(t), WithWorkflow("demo.flow", flow), WithWorkflow("demo.flow", flow))
	require.ErrorContains(t, err, `bridge.WithWorkflow: ["demo.flow"] given twice`)
}

// Run may be called again after its start checks failed (TaskManager not
// up yet): its metrics listener is kept, not bound twice (before, every
// later Run failed with "address already in use"). A Run while one runs,
// or after one started the worker, is refused (before, a second Run ran
// a second set of claim loops and hung past its context). (Found by a
// review.)
func TestRun_again_after_failed_checks_and_never_twice(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a port of its own, bound once
	require.NoError(t, err)
	cfg := newTestConfig(nil)
	cfg.MetricsAddr = ln.Addr().String()
	require.NoError(t, ln.Close())
	b, err := New(cfg, nil, lazyClient(t))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = b.Run(ctx)
	require.ErrorContains(t, err, "TaskManager health check")
	require.ErrorIs(t, err, ErrStartCheck, "Run may be called again")
	err = b.Run(ctx)
	require.ErrorContains(t, err, "TaskManager health check", "checked again")
	require.ErrorIs(t, err, ErrStartCheck)

	b.mu.Lock()
	b.running = true
	b.mu.Unlock()
	err = b.Run(ctx)
	require.ErrorContains(t, err, "running already")
	require.ErrorIs(t, err, ErrRunOnce)
	require.NotErrorIs(t, err, ErrStartCheck)
	b.mu.Lock()
	b.running, b.served = false, true
	b.mu.Unlock()
	err = b.Run(ctx)
	require.ErrorContains(t, err, "ran already on this Bridge")
	require.ErrorIs(t, err, ErrRunOnce)
}
