package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// TestBenchTable is `make bench`: on one dev server, side by side, plain
// Temporal running workflows of the bridge's shape (a handler activity,
// then a report activity) and tmbridge running example.echo tasks; short
// handlers again in a namespace without the bridge's search attributes;
// then 200 one-second tasks and 1,000 tasks in flight, each on a dev
// server of its own; in TMBRIDGE_BENCH_ROUNDS rounds (3), then an idle bridge. It
// prints one markdown table of medians (also to bench.md with
// TMBRIDGE_BENCH_OUT). The figures are measurements, not assertions: it
// only runs with TMBRIDGE_BENCH=1 (or local, default, sleepy, inflight,
// inflight-after for one measurement, to profile). The dev servers run with
// devtemporal.RecommendedConfig; TMBRIDGE_BENCH_SERVER=defaults, with
// Temporal's own dynamic config.
func TestBenchTable(t *testing.T) {
	if os.Getenv("TMBRIDGE_BENCH") == "" {
		t.Skip("set TMBRIDGE_BENCH=1 (make bench)")
	}
	var rows []string
	row := func(what, figure string) {
		rows = append(rows, fmt.Sprintf("| %s | %s |", what, figure))
		t.Logf("%s: %s", what, figure)
	}
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("TMBRIDGE_BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	// To profile: the thousand in flight alone, or after other runs on its
	// dev server (inflight-after), round after round, each next to plain
	// Temporal's thousand on a dev server of its own; then again with
	// fastThousand's options.
	if mode := os.Getenv("TMBRIDGE_BENCH"); mode == "inflight" || mode == "inflight-after" {
		for range rounds {
			freshTemporal(t)
			p := plainThousand(t)
			t.Logf("plain Temporal: 1,000 started in %.1f s, every activity running in %.1f s", p.open.Seconds(), p.running.Seconds())
			freshTemporal(t)
			if mode == "inflight-after" {
				bridgeThroughput(t, 600, 50, "types: {}\n")
				sleepyTasks(t, 200)
			}
			for i, extra := range [][]string{nil, fastThousand} {
				if i > 0 {
					freshTemporal(t)
				}
				m := thousandInFlight(t, extra...)
				t.Logf("tmbridge (%s): all started in %.1f s, every handler's activity task received in %.1f s; peak RSS %.0f MiB", flagsOrDefaults(extra), m.open.Seconds(), m.running.Seconds(), math.Round(float64(m.rss)/(1<<20)))
			}
		}
		return
	}
	// The 200 one-second tasks alone, round after round.
	if os.Getenv("TMBRIDGE_BENCH") == "sleepy" {
		for range rounds {
			freshTemporal(t)
			sleepyTasks(t, 200)
		}
		return
	}
	const n, inFlight = 600, 50
	// To profile one mode: local (short handlers) or default, next to its
	// plain Temporal baseline, with the CPU each process used.
	if mode := os.Getenv("TMBRIDGE_BENCH"); mode == "local" || mode == "default" {
		local, config := mode == "local", "types: {}\n"
		if local {
			config = "types:\n  example.echo: { local: true }\n"
		}
		srvPid := temporalPID
		s0, m0 := cpuTime(srvPid), cpuTime(os.Getpid())
		rate, _ := plainTemporal(t, n, inFlight, local, true)
		s1, m1 := cpuTime(srvPid), cpuTime(os.Getpid())
		t.Logf("plain Temporal, local %v, eager start: %.0f workflows/s server %v test %v", local, rate, s1-s0, m1-m0)
		defer func() {
			s2, m2 := cpuTime(srvPid), cpuTime(os.Getpid())
			t.Logf("bridge: server %v test %v", s2-s1, m2-m1)
		}()
		if p := os.Getenv("TMBRIDGE_BENCH_CPUPROFILE"); p != "" {
			f, err := os.Create(p)
			require.NoError(t, err)
			require.NoError(t, pprof.StartCPUProfile(f))
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		rate, _ = bridgeThroughput(t, n, inFlight, config)
		t.Logf("tmbridge, %s: %.0f tasks/s", mode, rate)
		return
	}
	plainModes := []struct {
		name         string
		local, eager bool
	}{{"regular activities", false, false}, {"regular activities, eager start", false, true}, {"local activities", true, false}, {"local activities, eager start", true, true}}
	bridgeModes := []struct{ name, config string }{
		{"tmbridge, default options", "types: {}\n"},
		{"tmbridge, `local: true` (short handlers)", "types:\n  example.echo: { local: true }\n"},
	}
	// Rounds repeat the modes, so that what else the machine does weighs
	// on all of them alike; each figure is the median of the rounds.
	plain, bridged := make([]series, len(plainModes)), make([]series, len(bridgeModes))
	plainEvents, bridgeEvents := make([]int, len(plainModes)), make([]int, len(bridgeModes))
	var sleepy, open, running, launch, fastOpen, fastRunning, plainOpen, plainRunning, rssMB series
	var fileMB, anonMB, stacksMB, heapMB series // where the memory is, default options
	var plainLocalNoSA, bridgedLocalNoSA series // on a dev server without the search attributes
	runPlain := func(i int) {
		rate, events := plainTemporal(t, n, inFlight, plainModes[i].local, plainModes[i].eager)
		plain[i], plainEvents[i] = append(plain[i], rate), events
		t.Logf("plain Temporal, %s: %.0f workflows/s", plainModes[i].name, rate)
	}
	runBridge := func(i int) {
		rate, events := bridgeThroughput(t, n, inFlight, bridgeModes[i].config)
		bridged[i], bridgeEvents[i] = append(bridged[i], rate), events
		t.Logf("%s: %.0f tasks/s", bridgeModes[i].name, rate)
	}
	for r := range rounds {
		// The throughput runs, the one-second tasks and the thousand in
		// flight each have a dev server of their own (one slows as its
		// database grows). Each tmbridge mode runs next to the plain mode
		// it is compared with, first in one round and second in the next.
		freshTemporal(t)
		runPlain(0)
		runPlain(2)
		for _, pair := range [][2]func(){{func() { runPlain(1) }, func() { runBridge(0) }}, {func() { runPlain(3) }, func() { runBridge(1) }}} {
			pair[r%2]()
			pair[1-r%2]()
		}
		// Short handlers again, in a namespace without the TaskType and
		// TaskID search attributes: the bridge then writes none.
		freshTemporalWith(t, devtemporal.Options{NoSearchAttributes: true})
		noSA := [2]func(){
			func() {
				rate, _ := plainTemporal(t, n, inFlight, true, true)
				plainLocalNoSA = append(plainLocalNoSA, rate)
			},
			func() {
				rate, _ := bridgeThroughput(t, n, inFlight, bridgeModes[1].config)
				bridgedLocalNoSA = append(bridgedLocalNoSA, rate)
				t.Logf("%s, no search attributes: %.0f tasks/s", bridgeModes[1].name, rate)
			},
		}
		noSA[r%2]()
		noSA[1-r%2]()
		freshTemporal(t)
		sleepy = append(sleepy, sleepyTasks(t, 200).Seconds())
		// The thousand in flight with default options and with
		// fastThousand's, next to plain Temporal's, each on a dev server of
		// its own, in an order that rotates from round to round.
		var m, f, p inFlightTimes
		thousands := [3]func(){
			func() { freshTemporal(t); m = thousandInFlight(t) },
			func() { freshTemporal(t); f = thousandInFlight(t, fastThousand...) },
			func() { freshTemporal(t); p = plainThousand(t) },
		}
		for k := range thousands {
			thousands[(r+k)%len(thousands)]()
		}
		mib := math.Round(float64(m.rss) / (1 << 20))
		open, running, rssMB = append(open, m.open.Seconds()), append(running, m.running.Seconds()), append(rssMB, mib)
		launch = append(launch, m.launch.Seconds())
		mb := func(b int64) float64 { return float64(b) / (1 << 20) }
		fileMB, anonMB = append(fileMB, mb(m.mem.file)), append(anonMB, mb(m.mem.anon))
		stacksMB, heapMB = append(stacksMB, mb(m.mem.stacks)), append(heapMB, mb(m.mem.heap))
		fastOpen, fastRunning = append(fastOpen, f.open.Seconds()), append(fastRunning, f.running.Seconds())
		plainOpen, plainRunning = append(plainOpen, p.open.Seconds()), append(plainRunning, p.running.Seconds())
		t.Logf("round %d: 200 one-second tasks in %.1f s; 1,000 in flight: started in %.1f s, handler tasks received in %.1f s (with %s: %.1f s, %.1f s; plain Temporal %.1f s, %.1f s), peak RSS %.0f MiB",
			r+1, sleepy[r], m.open.Seconds(), m.running.Seconds(), flagsOrDefaults(fastThousand), f.open.Seconds(), f.running.Seconds(), p.open.Seconds(), p.running.Seconds(), mib)
	}
	for i, mode := range plainModes {
		row("plain Temporal, "+mode.name, fmt.Sprintf("%s workflows/s, %d events each", plain[i].String("%.0f"), plainEvents[i]))
	}
	for i, mode := range bridgeModes {
		row(mode.name+", example.echo", fmt.Sprintf("%s tasks/s, %d events each", bridged[i].String("%.0f"), bridgeEvents[i]))
	}
	row("tmbridge default ÷ plain regular activities, eager start", ratios(bridged[0], plain[1]).String("%.2f ×"))
	row("tmbridge `local: true` ÷ plain local activities, eager start", ratios(bridged[1], plain[3]).String("%.2f ×"))
	row("the same, in a namespace without the `TaskType`/`TaskID` search attributes",
		fmt.Sprintf("%s (tmbridge %s tasks/s, plain %s workflows/s)", ratios(bridgedLocalNoSA, plainLocalNoSA).String("%.2f ×"), bridgedLocalNoSA.String("%.0f"), plainLocalNoSA.String("%.0f")))
	row("200 one-second tasks, default options", fmt.Sprintf("%s s (%.0f × a one-at-a-time worker)", sleepy.String("%.1f"), 200/sleepy.median()))
	row(fmt.Sprintf("plain Temporal, 1,000 twenty-second workflows (eager start, %d starts at once)", bridge.MaxPendingStarts),
		fmt.Sprintf("all started in %s s, every activity running in %s s", plainOpen.String("%.1f"), plainRunning.String("%.1f")))
	row("1,000 twenty-second tasks in flight, from the first claim",
		fmt.Sprintf("all started in %s s, every handler's activity task received in %s s (the first claim %s s after launch); bridge peak RSS %s MiB",
			open.String("%.1f"), running.String("%.1f"), launch.String("%.1f"), rssMB.String("%.0f")))
	row("the same, with `temporal.search_attributes: false` and `temporal.grpc_compression: none`",
		fmt.Sprintf("all started in %s s, every handler's activity task received in %s s", fastOpen.String("%.1f"), fastRunning.String("%.1f")))
	row("the bridge's memory with the thousand running, 5 s after all started (default options)",
		fmt.Sprintf("the binary's pages mapped from its file %s MiB, anonymous %s MiB (of it goroutine stacks %s MiB, heap in use %s MiB)",
			fileMB.String("%.0f"), anonMB.String("%.0f"), stacksMB.String("%.0f"), heapMB.String("%.0f")))
	perInterval, cpu := idleBridge(t)
	row("idle, two types, poll interval 1 s", fmt.Sprintf("%.2f TaskManager requests per interval (0 claims), %.2f %% CPU", perInterval, cpu))

	server := "with eager activities (devtemporal.RecommendedConfig)"
	if benchServerDefaults() {
		server = "with Temporal's default dynamic config"
	}
	table := fmt.Sprintf("Measured %s on %d CPUs, Go %s, Temporal CLI dev server (in memory) %s, %d tasks, %d in flight; median of %d rounds (lowest–highest), each on fresh dev servers.\n\n| what | figure |\n|---|---|\n%s\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), server, n, inFlight, rounds, strings.Join(rows, "\n"))
	fmt.Println(table)
	if out := os.Getenv("TMBRIDGE_BENCH_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(table), 0o644))
	}
}

// plainTemporal runs n workflows of the bridge's shape with inFlight at
// once; it returns workflows/s and one run's history length.
func plainTemporal(t *testing.T, n, inFlight int, local, eager bool) (float64, int) {
	s := newStack(t, devserver.StylePHP)
	w := worker.New(s.tc, s.queue, worker.Options{MaxConcurrentActivityExecutionSize: inFlight, MaxConcurrentLocalActivityExecutionSize: inFlight})
	w.RegisterActivityWithOptions(func(ctx context.Context, msg string) (string, error) { return msg, nil }, activity.RegisterOptions{Name: "handle"})
	w.RegisterActivityWithOptions(func(ctx context.Context, msg string) error { return nil }, activity.RegisterOptions{Name: "report"})
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context, msg string) (string, error) {
		var out string
		run := func(name string, arg string, res any) error {
			if local {
				lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: time.Minute})
				return workflow.ExecuteLocalActivity(lctx, name, arg).Get(ctx, res)
			}
			actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			return workflow.ExecuteActivity(actx, name, arg).Get(ctx, res)
		}
		if err := run("handle", msg, &out); err != nil {
			return "", err
		}
		return out, run("report", out, nil)
	}, workflow.RegisterOptions{Name: "baseline"})
	require.NoError(t, w.Start())
	defer w.Stop()
	start := time.Now()
	eachAtOnce(t, n, inFlight, func(i int) error {
		opts := client.StartWorkflowOptions{ID: fmt.Sprintf("%s%d", s.prefix, i), TaskQueue: s.queue, EnableEagerStart: eager}
		run, err := s.tc.ExecuteWorkflow(context.Background(), opts, "baseline", "m")
		if err != nil {
			return err
		}
		return run.Get(context.Background(), nil)
	})
	rate := float64(n) / time.Since(start).Seconds()
	return rate, len(s.history(s.prefix + "0").Events)
}

// bridgeThroughput runs n example.echo tasks through an in-process bridge
// with config; it returns tasks/s (first claim to last outcome in
// TaskManager) and one task's history length.
func bridgeThroughput(t *testing.T, n, inFlight int, config string) (float64, int) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("bench %d", i)}))
	}
	cfg := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o600))
	start := time.Now()
	stop := s.runBridge(nil, "bench", "--config="+cfg, "--max-in-flight="+strconv.Itoa(inFlight), "--max-concurrent-activities="+strconv.Itoa(inFlight))
	s.waitFinal(ids)
	stop()
	claims := s.tm.Claims()
	require.NotEmpty(t, claims)
	var end time.Time // the last outcome that landed
	for _, id := range ids {
		for _, c := range s.tm.Completions(id) {
			if c.Accepted && c.At.After(end) {
				end = c.At
			}
		}
	}
	rate := float64(n) / end.Sub(claims[0].At).Seconds()
	st := s.tm.Stats()
	t.Logf("from bridge start to first claim: %s; %d claim calls, %d empty", claims[0].At.Sub(start), st.ClaimCalls, st.ClaimCalls-st.Claimed)
	s.requireOneOutcomeEach(ids)
	return rate, len(s.history(s.prefix + ids[0]).Events)
}

// sleepyTasks runs n one-second example.sleep tasks with default options
// and returns the wall time to the last outcome.
func sleepyTasks(t *testing.T, n int) time.Duration {
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, s.create("example.sleep", map[string]any{"duration": 1, "n": i}))
	}
	start := time.Now()
	stop := s.runBridge(nil, "bench-sleep", "--max-in-flight="+strconv.Itoa(n), "--max-concurrent-activities="+strconv.Itoa(n))
	s.waitFinal(ids)
	wall := time.Since(start)
	stop()
	claims := s.tm.Claims()
	var reported time.Time // the last outcome TaskManager took
	for _, id := range ids {
		for _, c := range s.tm.Completions(id) {
			if c.Accepted && c.At.After(reported) {
				reported = c.At
			}
		}
	}
	t.Logf("%d one-second tasks in %.1f s: the first claim %.1f s after launch, the last %.1f s after it; the last outcome reported %.1f s after the last claim",
		n, wall.Seconds(), claims[0].At.Sub(start).Seconds(), claims[len(claims)-1].At.Sub(claims[0].At).Seconds(), reported.Sub(claims[len(claims)-1].At).Seconds())
	return wall
}

// inFlightTimes is what thousandInFlight and plainThousand measured, from
// the first claim (the first start, for plain Temporal).
type inFlightTimes struct {
	open    time.Duration // until every workflow start was answered
	running time.Duration // until every handler activity task was received
	launch  time.Duration // the bridge: from its launch to its first claim
	rss     int64         // the bridge's peak RSS, bytes
	mem     memoryParts   // where the bridge's memory is, 5 s after all started
}

// memoryParts is where a bridge's resident memory is (bytes): pages of
// its binary mapped from the file (shared, the kernel can drop and read
// them again) and anonymous memory, and of the latter, Go's goroutine
// stacks and heap spans in use.
type memoryParts struct {
	file, anon, stacks, heap int64
	goroutines               int
}

func (m memoryParts) String() string {
	mib := func(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
	return fmt.Sprintf("RSS %.1f MiB: the binary's pages %.1f MiB, anonymous %.1f MiB (goroutine stacks %.1f MiB for %d goroutines, heap in use %.1f MiB)",
		mib(m.file+m.anon), mib(m.file), mib(m.anon), mib(m.stacks), m.goroutines, mib(m.heap))
}

// bridgeMemory reads where the bridge's memory is: /proc for the pages,
// its metrics for Go's stacks and heap (zero when unreadable).
func bridgeMemory(pid int, metricsAddr string) memoryParts {
	var m memoryParts
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) == 3 && f[2] == "kB" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "RssFile:":
					m.file = kb << 10
				case "RssAnon:":
					m.anon = kb << 10
				}
			}
		}
	}
	for line := range strings.Lines(metricsText(metricsAddr)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_memstats_stack_inuse_bytes":
			m.stacks = int64(v)
		case "go_memstats_heap_inuse_bytes":
			m.heap = int64(v)
		case "go_goroutines":
			m.goroutines = int(v)
		}
	}
	return m
}

// fastThousand are the options for many tasks at once that the bench
// measures beside the defaults: no search attributes (their visibility
// work per start) and uncompressed requests to Temporal.
var fastThousand = []string{"--search-attributes=false", "--grpc-compression=none"}

// flagsOrDefaults names a run's extra flags for a log line.
func flagsOrDefaults(flags []string) string {
	if len(flags) == 0 {
		return "default options"
	}
	return strings.Join(flags, " ")
}

// inFlightLimit bounds the wait for a thousand in flight: past it the
// bench fails, saying how far it got, rather than wait for go test's
// timeout.
const inFlightLimit = 2 * time.Minute

// thousandInFlight starts the tmbridge binary (with extra flags) on 1,000
// twenty-second tasks and measures how long until all run, and its peak
// RSS.
func thousandInFlight(t *testing.T, extra ...string) inFlightTimes {
	const n = 1000
	s := newStack(t, devserver.StylePHP)
	s.register("example.sleep")
	for i := range n {
		s.create("example.sleep", map[string]any{"duration": 20, "n": i})
	}
	metrics := freeAddr(t)
	launched, srvCPU, testCPU := time.Now(), cpuTime(temporalPID), cpuTime(os.Getpid())
	cmd := runBinary(t, s, append([]string{"--max-in-flight=1000", "--max-concurrent-activities=1000", "--log-format=json", "--metrics-addr=" + metrics}, extra...)...)
	var m inFlightTimes
	var claimed, open, running time.Time
	var started, received int
	// The bridge's own counts, as plain Temporal's are counted: starts
	// answered, and handler activity tasks received.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for open.IsZero() || running.IsZero() {
		if time.Since(launched) > inFlightLimit {
			t.Fatalf("1,000 in flight not reached in %s: %d claimed, %d started, %d handler activity tasks received", inFlightLimit, s.tm.Stats().Claimed, started, received)
		}
		if _, err := peakRSS(cmd.Process.Pid); err != nil {
			t.Fatalf("the bridge is gone: %v", err)
		}
		if claimed.IsZero() && s.tm.Stats().Claimed >= n {
			claimed = time.Now()
		}
		// No task starts before its claim: until all are claimed, the
		// bridge's metrics are not read, so that serving them (five times
		// a second) does not take from its CPU during the ramp.
		if !claimed.IsZero() {
			started, received = bridgeCounts(metrics, "example.sleep")
		}
		if open.IsZero() && started >= n {
			open = time.Now()
		}
		if running.IsZero() && received >= n {
			running = time.Now()
		}
		<-tick.C
	}
	first := s.tm.Claims()[0].At
	m.launch, m.open, m.running = first.Sub(launched), open.Sub(first), running.Sub(first)
	st := s.tm.Stats()
	t.Logf("1,000 in flight (%s): first claim %.1f s after launch; then claimed in %.1f s (%d claim calls, %d empty), all started in %.1f s, all handler activity tasks received in %.1f s; CPU: bridge %s, dev server %s, test process (TaskManager) %s",
		flagsOrDefaults(extra), m.launch.Seconds(), claimed.Sub(first).Seconds(), st.ClaimCalls, st.ClaimCalls-st.Claimed, m.open.Seconds(), m.running.Seconds(),
		cpuTime(cmd.Process.Pid).Round(time.Millisecond), (cpuTime(temporalPID) - srvCPU).Round(time.Millisecond), (cpuTime(os.Getpid()) - testCPU).Round(time.Millisecond))
	time.Sleep(5 * time.Second) // the peak of a steady state
	t.Logf("bridge CPU time until now: %s", cpuTime(cmd.Process.Pid))
	var err error
	m.rss, err = peakRSS(cmd.Process.Pid)
	require.NoError(t, err)
	m.mem = bridgeMemory(cmd.Process.Pid, metrics)
	t.Logf("the bridge's memory now (%s): %s", flagsOrDefaults(extra), m.mem)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	// The killed bridge's runs stay open: end them, so that the dev server
	// does not carry them into what runs next.
	for i := range n {
		_ = s.tc.TerminateWorkflow(context.Background(), s.prefix+strconv.Itoa(i+1), "", "bench over")
	}
	return m
}

// bridgeCounts reads from the bridge's metrics, for one task type, how
// many workflows it started (tmbridge_workflows_started_total) and how
// many handler activity tasks its worker received (the count of the SDK's
// temporal_activity_schedule_to_start_latency_seconds, eager ones
// included). Both only grow; 0 when unknown.
func bridgeCounts(addr, taskType string) (started, received int) {
	body := metricsText(addr)
	value := func(line string) int {
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		return int(v)
	}
	for line := range strings.Lines(body) {
		switch {
		case strings.HasPrefix(line, "tmbridge_workflows_started_total{") && strings.Contains(line, `task_type="`+taskType+`"`):
			started = value(line)
		case strings.HasPrefix(line, "temporal_activity_schedule_to_start_latency_seconds_count{") && strings.Contains(line, `activity_type="`+taskType+`"`):
			received = value(line)
		}
	}
	return started, received
}

// metricsText is what the bridge's metrics endpoint at addr serves, ""
// when it does not answer.
func metricsText(addr string) string {
	// Uncompressed: a gzip writer per read, five reads a second, would
	// weigh on the bridge's memory as Prometheus' scrapes (every 15 s or
	// so) do not.
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// plainThousand is thousandInFlight's baseline: plain Temporal, in this
// process, starts 1,000 workflows (eager start, bridge.MaxPendingStarts
// starts at once, the bridge's pollers) whose activity runs 20 s and
// heartbeats as the bridge's heartbeater does for example.sleep (every
// 0.7 × the heartbeat timeout, the first 0.7 × in, with the bridge's
// MaxHeartbeatThrottleInterval). It measures how long until all were
// started and until all their activities ran.
func plainThousand(t *testing.T) inFlightTimes {
	const n = 1000
	s := newStack(t, devserver.StylePHP)
	w := worker.New(s.tc, s.queue, worker.Options{MaxConcurrentActivityExecutionSize: n, MaxConcurrentWorkflowTaskPollers: 4, MaxConcurrentActivityTaskPollers: 4,
		MaxHeartbeatThrottleInterval: activities.MaxHeartbeatThrottleInterval})
	var running atomic.Int64
	w.RegisterActivityWithOptions(func(ctx context.Context) error {
		if activity.GetInfo(ctx).Attempt == 1 {
			running.Add(1)
		}
		tick := time.NewTicker(workflows.DefaultHeartbeatTimeout * 7 / 10) // the bridge's heartbeater
		defer tick.Stop()
		for end := time.After(20 * time.Second); ; {
			select {
			case <-tick.C:
				activity.RecordHeartbeat(ctx)
			case <-end:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}, activity.RegisterOptions{Name: "sleep"})
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute, HeartbeatTimeout: workflows.DefaultHeartbeatTimeout})
		return workflow.ExecuteActivity(actx, "sleep").Get(ctx, nil)
	}, workflow.RegisterOptions{Name: "sleep"})
	require.NoError(t, w.Start())
	defer w.Stop()
	start, srvCPU, testCPU := time.Now(), cpuTime(temporalPID), cpuTime(os.Getpid())
	eachAtOnce(t, n, bridge.MaxPendingStarts, func(i int) error {
		opts := client.StartWorkflowOptions{ID: fmt.Sprintf("%s%d", s.prefix, i), TaskQueue: s.queue, EnableEagerStart: true}
		_, err := s.tc.ExecuteWorkflow(context.Background(), opts, "sleep")
		return err
	})
	if t.Failed() {
		t.FailNow() // a start failed: not all activities will run
	}
	m := inFlightTimes{open: time.Since(start)}
	for running.Load() < n {
		if time.Since(start) > inFlightLimit {
			t.Fatalf("plain Temporal: %d of 1,000 activities started in %s", running.Load(), inFlightLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.running = time.Since(start)
	t.Logf("plain Temporal's thousand: dev server CPU %s, test process (client and worker) %s",
		(cpuTime(temporalPID) - srvCPU).Round(time.Millisecond), (cpuTime(os.Getpid()) - testCPU).Round(time.Millisecond))
	for i := range n {
		_ = s.tc.TerminateWorkflow(context.Background(), fmt.Sprintf("%s%d", s.prefix, i), "", "bench over")
	}
	return m
}

// eachAtOnce runs do(i) for each i in [0, n), atOnce at a time, and
// returns when all did; each error fails the test.
func eachAtOnce(t *testing.T, n, atOnce int, do func(i int) error) {
	sem := make(chan struct{}, atOnce)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := do(i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// idleBridge runs the binary against two empty types with a 1 s poll
// interval for 20 s; it returns TaskManager requests per interval and the
// bridge's CPU use.
func idleBridge(t *testing.T) (float64, float64) {
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: apiKey})
	var requests, claims atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if strings.HasSuffix(r.URL.Path, "/claim") {
			claims.Add(1)
		}
		tm.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s := newStack(t, devserver.StylePHP)
	s.tm, s.url = tm, srv.URL+"/api"
	api, err := taskmanager.New(taskmanager.Options{BaseURL: s.url, APIKey: apiKey})
	require.NoError(t, err)
	s.api = api
	s.register("example.echo", "example.uppercase")
	cmd := runBinary(t, s, "--poll-interval=1s")
	time.Sleep(5 * time.Second) // start-up: health checks, type lookups, the first sweep
	before, cpuBefore := requests.Load(), cpuTime(cmd.Process.Pid)
	const window = 20 * time.Second
	time.Sleep(window)
	perInterval := float64(requests.Load()-before) / window.Seconds()
	cpu := (cpuTime(cmd.Process.Pid) - cpuBefore).Seconds() / window.Seconds() * 100
	require.Zero(t, claims.Load(), "an idle bridge makes no claim")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	return perInterval, cpu
}

// cpuTime is a process's user and system time so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // clock ticks
}

// series is one figure measured in each round.
type series []float64

func (s series) median() float64 {
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// String formats the median, then the range when there are several rounds.
func (s series) String(format string) string {
	unit := ""
	if i := strings.LastIndex(format, " "); i >= 0 {
		format, unit = format[:i], format[i:]
	}
	out := fmt.Sprintf(format, s.median())
	if len(s) > 1 {
		out += fmt.Sprintf(" ("+format+"–"+format+")", slices.Min(s), slices.Max(s))
	}
	return out + unit
}

// ratios divides a by b round by round.
func ratios(a, b series) series {
	out := make(series, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

// freshTemporal points the rest of the test at a new dev server (stopped
// at the test's end or at the next call), unless the suite runs against an
// external Temporal.
func freshTemporal(t *testing.T) { freshTemporalWith(t, devtemporal.Options{}) }

// freshTemporalWith is freshTemporal with these options (the log and
// TMBRIDGE_BENCH_SERVER are set here).
func freshTemporalWith(t *testing.T, opts devtemporal.Options) {
	if external {
		return
	}
	if benchServerStop != nil {
		benchServerStop()
	}
	log, err := os.CreateTemp("", "temporal-bench-*.log")
	require.NoError(t, err)
	opts.Log, opts.ServerDefaults = log, benchServerDefaults()
	srv, err := devtemporal.Start(context.Background(), opts)
	require.NoError(t, err)
	prevAddr, prevOpts, prevPID := temporalAddr, temporalOpts, temporalPID
	temporalAddr, temporalPID = srv.Address, srv.PID()
	temporalOpts = client.Options{HostPort: srv.Address}
	benchServerStop = sync.OnceFunc(func() {
		srv.Stop()
		temporalAddr, temporalOpts, temporalPID = prevAddr, prevOpts, prevPID
	})
	t.Cleanup(benchServerStop)
}

// benchServerStop stops the dev server freshTemporal started last.
var benchServerStop func()

// benchServerDefaults: TMBRIDGE_BENCH_SERVER=defaults runs the bench's dev
// servers with Temporal's own dynamic config (no eager activities), to
// compare with devtemporal.RecommendedConfig.
func benchServerDefaults() bool { return os.Getenv("TMBRIDGE_BENCH_SERVER") == "defaults" }
