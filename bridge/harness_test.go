package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Tests of the claim bookkeeping: a real dev TaskManager, a fake Temporal
// (faketemporal_test.go) that loses answers and goes away on request.

type bridgeBundle struct {
	b        *Bridge
	tm       *devserver.Server
	api      *taskmanager.Client // the test's own client (the bridge's is b.api)
	temporal *fakeTemporal
}

var testTypes = []string{"example.echo", "example.uppercase", "example.math.add", "example.sleep", "example.error"}

// setupBridge builds a Bridge on a fake Temporal, serving testTypes as
// worker w1; change adjusts its config.
func setupBridge(t *testing.T, style devserver.Style, change func(*Config)) *bridgeBundle {
	t.Helper()
	return setupBridgeWith(t, devserver.Options{Style: style}, change)
}

// setupBridgeClock is setupBridge with TaskManager on a test clock.
func setupBridgeClock(t *testing.T, clock *devserver.Clock, change func(*Config)) *bridgeBundle {
	t.Helper()
	return setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, Now: clock.Now}, change)
}

func setupBridgeWith(t *testing.T, opts devserver.Options, change func(*Config)) *bridgeBundle {
	t.Helper()
	opts.APIKey = "k"
	tm := devserver.New(opts)
	url := tm.Start(t)
	m := newMetrics(nil)
	auth := new(keyRefusal)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 5 * time.Second, Observe: apiObserver(m, auth)})
	require.NoError(t, err)
	cfg := Config{
		APIURL: url, WorkerID: "w1", PollInterval: 20 * time.Millisecond, MaxInFlight: 10, APITimeout: 5 * time.Second, ClaimTimeout: 300 * time.Second,
		Temporal: TemporalConfig{TaskQueue: "q", WorkflowIDPrefix: "task-"},
	}
	if change != nil {
		change(&cfg)
	}
	bg, cancel := context.WithCancel(context.Background())
	ft := newFakeTemporal()
	b := &Bridge{
		cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name()),
		api: api, runs: ft, adm: newAdmission(cfg.MaxInFlight, cfg.MaxRuns), sweeps: make(chan struct{}, 1), gate: newGate(), scout: newScout(),
		bg: bg, bgCancel: cancel, metrics: m, auth: auth, undecodableFor: 100 * time.Millisecond, fatal: make(chan error, 1), stopDone: make(chan struct{}),
	}
	b.adm.finished = m.runFinished
	m.registerState(b.adm, cfg.MaxInFlight, cfg.ClaimTimeout) // as New does
	b.closer.on.Store(true)
	t.Cleanup(cancel)
	for _, name := range testTypes {
		r, err := api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)
		b.types = append(b.types, servedType{Name: name, ID: r.ID, Options: workflows.DefaultTypeOptions()})
	}
	// The test's own calls (creating tasks of megabytes, claiming as
	// another worker) get time: a slow machine must not fail a test.
	testAPI, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 2 * time.Minute})
	require.NoError(t, err)
	return &bridgeBundle{b: b, tm: tm, api: testAPI, temporal: ft}
}

// serve runs the bridge's claiming until the test ends; stop ends it and
// returns serve's error.
func (bb *bridgeBundle) serve(t *testing.T) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(ctx) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
			bb.b.bgCancel()
			bb.b.starts.Wait()
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// only narrows the served types to names.
func (bb *bridgeBundle) only(names ...string) {
	var ts []servedType
	for _, t := range bb.b.types {
		if slices.Contains(names, t.Name) {
			ts = append(ts, t)
		}
	}
	bb.b.types = ts
}

func (bb *bridgeBundle) create(t *testing.T, typ string, params any) string {
	t.Helper()
	c, err := bb.api.CreateTask(context.Background(), typ, params)
	require.NoError(t, err)
	return string(c.ID)
}

func (bb *bridgeBundle) status(t *testing.T, id string) devserver.TaskState {
	t.Helper()
	st, ok := bb.tm.Task(id)
	require.True(t, ok)
	return st
}

// unreadable garbles the answer of the next claim (with task id the only
// one pending, the claim that takes it) and of every read of task id.
func (bb *bridgeBundle) unreadable(id string) {
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `garbage`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[{"id":` + id + `,"attempts":"many"}]}}`})
}

const eventually = 30 * time.Second
