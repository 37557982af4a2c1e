// Package e2e runs tmbridge end to end: a real Temporal dev server (the
// pinned CLI), the dev TaskManager in both answer styles, and the bridge
// in-process or as its binary.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/internal/devtemporal"
)

const apiKey = "e2e-secret-key"

var (
	temporalAddr string
	binDir       string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		return 0
	}
	log, _ := os.CreateTemp("", "temporal-dev-*.log")
	srv, err := devtemporal.Start(context.Background(), devtemporal.Options{Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer srv.Stop()
	temporalAddr = srv.Address

	binDir, err = os.MkdirTemp("", "tmbridge-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	// VCS stamping: --version and tmbridge_build_info name the commit.
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", binDir, "../cmd/tmbridge", "../cmd/taskmanager-dev")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	return m.Run()
}

// stack is one test's TaskManager, Temporal client and naming.
type stack struct {
	t      testing.TB
	tm     *devserver.Server
	url    string
	api    *taskmanager.Client
	tc     client.Client
	queue  string
	prefix string
}

var nonWord = regexp.MustCompile(`[^a-zA-Z0-9]+`)

func newStack(t testing.TB, style devserver.Style) *stack {
	t.Helper()
	tm := devserver.New(devserver.Options{Style: style, APIKey: apiKey})
	url := tm.Start(t)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: apiKey})
	require.NoError(t, err)
	tc := dial(t, temporalAddr)
	name := strings.ToLower(nonWord.ReplaceAllString(t.Name(), "-"))
	tag := fmt.Sprintf("%s-%06d", name, rand.IntN(1_000_000))
	return &stack{t: t, tm: tm, url: url, api: api, tc: tc, queue: "q-" + tag, prefix: tag + "-task-"}
}

// args are the bridge flags for this stack; extra ones override.
func (s *stack) args(workerID string, extra ...string) []string {
	return append([]string{
		"--api-url=" + s.url, "--temporal-address=" + temporalAddr, "--task-queue=" + s.queue,
		"--workflow-id-prefix=" + s.prefix, "--worker-id=" + workerID, "--poll-interval=0.2",
		"--shutdown-grace=5s", "--log-format=json",
	}, extra...)
}

func (s *stack) environ() []string {
	return []string{"TASKMANAGER_API_KEY=" + apiKey}
}

// register registers task types with a permissive schema.
func (s *stack) register(names ...string) {
	s.t.Helper()
	for _, n := range names {
		schema := `{"type":"object"}`
		for _, et := range devserver.ExampleTypes() {
			if et.Name == n {
				schema = et.Schema
			}
		}
		_, err := s.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: n, Version: "1.0.0", ParamSchema: json.RawMessage(schema)})
		require.NoError(s.t, err)
	}
}

func (s *stack) create(typ string, params any) string {
	s.t.Helper()
	cr, err := s.api.CreateTask(context.Background(), typ, params)
	require.NoError(s.t, err)
	require.False(s.t, cr.Deduplicated, "test params must be distinct")
	return string(cr.ID)
}

// runBridge runs an in-process bridge until the test ends or stop is called.
func (s *stack) runBridge(reg *activities.Registry, workerID string, extra ...string) (stop func()) {
	s.t.Helper()
	return s.runBridgeWith(reg, workerID, nil, nil, extra...)
}

// runBridgeWith is runBridge with a config change and bridge options.
func (s *stack) runBridgeWith(reg *activities.Registry, workerID string, change func(*bridge.Config), opts []bridge.Option, extra ...string) (stop func()) {
	s.t.Helper()
	cfg, err := bridge.Load(s.args(workerID, extra...), s.environ(), os.Stdout)
	require.NoError(s.t, err)
	if change != nil {
		change(&cfg)
	}
	if reg == nil {
		reg = activities.NewRegistry()
		activities.RegisterExamples(reg)
	}
	log := bridge.NewLogger(os.Stderr, "text", false).With("bridge", workerID)
	b, err := bridge.New(cfg, reg, s.tc, append([]bridge.Option{bridge.WithLogger(log)}, opts...)...)
	require.NoError(s.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- b.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(s.t, <-runDone)
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		require.NoError(s.t, b.Stop(sctx))
	}
	s.t.Cleanup(stop)
	return stop
}

// waitFinal waits until every listed task is completed or failed. The
// deadline only guards against a hang: the assertions are on what happened.
func (s *stack) waitFinal(ids []string) map[string]devserver.TaskState {
	s.t.Helper()
	deadline := time.Now().Add(8 * time.Minute)
	for {
		states := map[string]devserver.TaskState{}
		final := 0
		for _, id := range ids {
			st, ok := s.tm.Task(id)
			require.True(s.t, ok)
			states[id] = st
			if st.Status == "completed" || st.Status == "failed" {
				final++
			}
		}
		if final == len(ids) {
			return states
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("only %d of %d tasks finished; a sample: %+v", final, len(ids), firstUnfinished(states))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func firstUnfinished(states map[string]devserver.TaskState) devserver.TaskState {
	for _, st := range states {
		if st.Status != "completed" && st.Status != "failed" {
			return st
		}
	}
	return devserver.TaskState{}
}

// requireOneOutcomeEach checks that each task's outcome landed exactly once.
func (s *stack) requireOneOutcomeEach(ids []string) {
	s.t.Helper()
	for _, id := range ids {
		accepted := 0
		for _, c := range s.tm.Completions(id) {
			if c.Accepted && c.Success {
				accepted++
			}
		}
		st, _ := s.tm.Task(id)
		if st.Status == "completed" {
			require.Equal(s.t, 1, accepted, "task %s: one successful completion", id)
		}
	}
	require.Zero(s.t, s.tm.Stats().DuplicateSuccesses)
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

func bin(name string) string { return filepath.Join(binDir, name) }

func dial(t testing.TB, addr string) client.Client {
	t.Helper()
	tc, err := client.Dial(client.Options{HostPort: addr, Logger: quietLogger{}})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	return tc
}
