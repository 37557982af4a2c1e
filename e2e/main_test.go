// Package e2e runs tmbridge end to end: a real Temporal dev server (the
// pinned CLI), the dev TaskManager in both answer styles, and the bridge
// in-process or as its binary.
//
// With TMBRIDGE_E2E_TEMPORAL=external the suite starts no dev server: it
// runs against the Temporal that Temporal's standard variables name
// (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*,
// or a profile of TEMPORAL_CONFIG_FILE), with its own clients and every
// bridge it starts. Tests that need a dev server of their own skip.
package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
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
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

const apiKey = "e2e-secret-key"

// externalEnv selects the Temporal the suite runs against: unset (or "dev")
// starts the dev server, "external" takes the one Temporal's env names.
const externalEnv = "TMBRIDGE_E2E_TEMPORAL"

var (
	temporalAddr      string
	temporalNamespace string
	// temporalOpts is how the tests' own clients reach temporalAddr.
	temporalOpts client.Options
	// temporalEnv is handed to every bridge: in external mode, Temporal's
	// variables (TLS, API key, profile) from the test's environment.
	temporalEnv []string
	// external is true when the suite runs against a user's Temporal.
	external bool
	// temporalPID is the dev server's process (0: external).
	temporalPID int
	binDir      string
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
	switch mode := os.Getenv(externalEnv); mode {
	case "", "dev":
		log, _ := os.CreateTemp("", "temporal-dev-*.log")
		srv, err := devtemporal.Start(context.Background(), devtemporal.Options{Log: log})
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer srv.Stop()
		temporalPID = srv.PID()
		temporalAddr, temporalNamespace = srv.Address, client.DefaultNamespace
		temporalOpts = client.Options{HostPort: srv.Address}
	case "external":
		if err := useExternalTemporal(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s=external: %v\n", externalEnv, err)
			return 1
		}
	default:
		fmt.Fprintf(os.Stderr, "e2e: %s=%q: want external, or unset for the dev server\n", externalEnv, mode)
		return 1
	}

	var err error
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

// useExternalTemporal points the suite at the Temporal that Temporal's
// standard variables or config profile name, as the bridge reads them.
func useExternalTemporal() error {
	opts, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{})
	if err != nil {
		return err
	}
	if opts.HostPort == "" {
		return errors.New("set TEMPORAL_ADDRESS (and TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY as the cluster needs) or a TEMPORAL_PROFILE")
	}
	opts.Namespace = cmp.Or(opts.Namespace, client.DefaultNamespace)
	external = true
	temporalAddr, temporalNamespace, temporalOpts = opts.HostPort, opts.Namespace, opts
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TEMPORAL_") || k == "HOME" || k == "XDG_CONFIG_HOME" {
			temporalEnv = append(temporalEnv, kv) // HOME: where the default config file lives
		}
	}
	fmt.Printf("e2e: against Temporal at %s, namespace %s (TLS %t, API key set %t)\n",
		opts.HostPort, opts.Namespace, opts.ConnectionOptions.TLS != nil, opts.Credentials != nil)
	return nil
}

// skipExternal skips a test that needs a dev server of its own.
func skipExternal(t testing.TB, why string) {
	t.Helper()
	if external {
		t.Skipf("%s=external: %s", externalEnv, why)
	}
}

// missingSearchAttributes says why the suite's namespace lacks the Keyword
// search attributes TaskType and TaskID, or returns "" when it has them
// (the dev server always does; a user's namespace may not).
func missingSearchAttributes(t testing.TB, tc client.Client) string {
	t.Helper()
	if !external {
		return ""
	}
	resp, err := tc.OperatorService().ListSearchAttributes(context.Background(), &operatorservice.ListSearchAttributesRequest{Namespace: temporalNamespace})
	require.NoError(t, err)
	for _, name := range []string{bridge.SearchAttrTaskType, bridge.SearchAttrTaskID} {
		if resp.GetCustomAttributes()[name] != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			return fmt.Sprintf("namespace %s has no Keyword search attributes TaskType and TaskID (`tmbridge setup` adds them)", temporalNamespace)
		}
	}
	return ""
}

// temporalConnRow is how `tmbridge check` describes the suite's Temporal
// connection settings at addr.
func temporalConnRow(addr string) string {
	tls, key := "TLS off", "API key not set"
	if temporalOpts.ConnectionOptions.TLS != nil {
		tls = "TLS on"
	}
	if temporalOpts.Credentials != nil {
		key = "API key set"
	}
	return addr + ", " + tls + ", " + key
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
	// Unique across runs: a shared cluster keeps other runs' workflows.
	tag := fmt.Sprintf("%s-%012x", name, rand.Uint64()>>16)
	return &stack{t: t, tm: tm, url: url, api: api, tc: tc, queue: "q-" + tag, prefix: tag + "-task-"}
}

// args are the bridge flags for this stack; extra ones override.
func (s *stack) args(workerID string, extra ...string) []string {
	return append([]string{
		"--api-url=" + s.url, "--temporal-address=" + temporalAddr, "--temporal-namespace=" + temporalNamespace, "--task-queue=" + s.queue,
		"--workflow-id-prefix=" + s.prefix, "--worker-id=" + workerID, "--poll-interval=0.2",
		"--shutdown-grace=5s", "--log-format=json",
	}, extra...)
}

func (s *stack) environ() []string {
	return append([]string{"TASKMANAGER_API_KEY=" + apiKey}, temporalEnv...)
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

// dial connects to the suite's Temporal (with its TLS and API key in
// external mode) or to another dev server at addr.
func dial(t testing.TB, addr string) client.Client {
	t.Helper()
	opts := client.Options{HostPort: addr}
	if addr == temporalAddr {
		opts = temporalOpts
	}
	opts.Logger = quietLogger{}
	tc, err := client.Dial(opts)
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	return tc
}
