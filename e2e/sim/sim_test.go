// Package sim is tmbridge's fault simulation: many tasks of several kinds
// (multi-step ones among them) run through real bridge processes, a real Temporal dev server (on a
// persisted database) and the dev TaskManager, while faults drawn from a
// seed hit them: answers lost before and after TaskManager wrote them,
// 5xx, 429, garbage and proxy pages, claims timing out, bridges killed and
// restarted with the same worker id, a second bridge, Temporal restarted,
// workflows cancelled from Temporal, tasks Temporal refuses to start. At
// the end, invariants are checked (check_test.go) and any violation is
// reported with the seed that reproduces it.
//
//	go test ./e2e/sim/                      # the regression seeds and SIM_SEEDS (default 5) from SIM_FIRST_SEED
//	SIM_SEED=42 go test -v ./e2e/sim/       # one seed
//	make sim SEEDS=500                      # many seeds
//
// Seeds run side by side, as many at a time as go test's -parallel says
// (GOMAXPROCS by default; make runs three): each has servers of its own.
package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// regressionSeeds are seeds that once found a bug: they run every time.
var regressionSeeds = []uint64{
	1,   // a garbled claim answer held a claim the bridge did not count (claimed past max_in_flight); failing an unstartable task gave up on a refused message; a local handler ran again after a crash
	2,   // a recovered claim whose outcome its run had reported (after the claim moved to it by signal) was started again
	3,   // same, with a cancel during the report
	9,   // an old claim's failure landed on this same worker's newer claim (TaskManager checks only the worker id); its handler then ran for a claim that was over
	37,  // same, the re-claim coming between the report's read and its post; and a cancelled run kept open for its crashed handler, which reported a stale failure with the next claim
	41,  // two "Data too long" answers in a row: the run gave up on its short error message and ended with the claim held (claimed past max_in_flight)
	267, // a start that Temporal's restarts held for 8 s came after its claim timed out and another worker ran the task and failed it for good: the run's handler ran for a failed task
}

// seedsBeforeSteps are the regression seeds found before the simulation
// drew multi-step tasks: they run without them, as they failed.
var seedsBeforeSteps = []uint64{1, 2, 3, 9, 37, 41}

// seedsBeforeLongLocal are the regression seeds found before the
// simulation drew long local tasks: they run without them, as they failed.
var seedsBeforeLongLocal = []uint64{1, 2, 3, 9, 37, 41, 267}

// seeds returns the seeds to run: SIM_SEED alone, or the regression seeds
// and SIM_SEEDS (default 5) seeds from SIM_FIRST_SEED (default 1), each once.
func seeds(t *testing.T) []uint64 {
	if s := os.Getenv("SIM_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SIM_SEED=%q: %v", s, err)
		}
		return []uint64{n}
	}
	count, first := 5, uint64(1)
	if s := os.Getenv("SIM_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("SIM_SEEDS=%q: %v", s, err)
		}
		count = n
	}
	if s := os.Getenv("SIM_FIRST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SIM_FIRST_SEED=%q: %v", s, err)
		}
		first = n
	}
	out := append([]uint64(nil), regressionSeeds...)
	for i := range count {
		if s := first + uint64(i); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulation needs the Temporal CLI: it runs in the e2e suite")
	}
	if os.Getenv("TMBRIDGE_E2E_TEMPORAL") == "external" {
		t.Skip("TMBRIDGE_E2E_TEMPORAL=external: the simulation stops and restarts dev servers of its own")
	}
	if _, err := devtemporal.CLIPath(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ss := seeds(t)
	var failed atomic.Int64
	// Cleanup runs once every seed's subtest has ended.
	t.Cleanup(func() {
		t.Logf("simulation: %d seeds, %d clean, %d failed, in %s", len(ss), int64(len(ss))-failed.Load(), failed.Load(), time.Since(start).Round(time.Second))
	})
	for _, seed := range ss {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			// Each seed has a world of its own (servers, ports, files) and
			// spends most of its time waiting on its timed faults: seeds
			// run side by side, -parallel at a time.
			t.Parallel()
			defer func() {
				if t.Failed() {
					failed.Add(1)
				}
			}()
			runSeed(t, seed)
		})
	}
}

// scenario is what a seed decides.
type scenario struct {
	style  devserver.Style
	tasks  []simTask
	events []event
}

type simTask struct {
	kind   string
	params params
	id     string
	huge   bool // over Temporal's payload limit: can never be started
}

// event is one fault, at a time after the tasks were created.
type event struct {
	at   time.Duration
	what string
	do   func(w *world, s *state)
}

// state is what the run learns while it goes, for the checker.
type state struct {
	cancelled     map[string]bool        // task ids whose workflow was cancelled
	cancelledAt   map[string][]time.Time // when each cancel was asked for, by task id
	tooLongFaults int                    // "Data too long" 500s injected
}

// chaos is how long faults are drawn for.
const chaos = 20 * time.Second

func plan(seed uint64) scenario {
	rng := rand.New(rand.NewPCG(seed, 0x7a5c))
	sc := scenario{style: devserver.StylePHP}
	if rng.IntN(3) == 0 {
		sc.style = devserver.StyleDocumented
	}
	n := 30 + rng.IntN(20)
	for i := range n {
		k := kinds[rng.IntN(len(kinds))]
		p := params{N: i}
		switch k {
		case kindSlow:
			p.Sleep = (claimTimeout + time.Duration(rng.IntN(3000))*time.Millisecond).Seconds()
		case kindOK, kindFlaky, kindFail:
			p.Sleep = float64(rng.IntN(300)) / 1000
		}
		sc.tasks = append(sc.tasks, simTask{kind: k, params: p})
	}
	if rng.IntN(2) == 0 { // tasks Temporal can never start
		for i := range 1 + rng.IntN(2) {
			sc.tasks = append(sc.tasks, simTask{kind: kindOK, params: params{N: n + i, Filler: strings.Repeat("x", 2_100_000)}, huge: true})
		}
	}

	// Multi-step tasks, drawn from an rng of their own, and not for the
	// regression seeds found before there were any: those keep the tasks
	// and faults they failed with (more tasks would change which runs
	// their cancels hit).
	srng := rand.New(rand.NewPCG(seed, 0x57e95))
	for i := range 3 + srng.IntN(4) {
		if slices.Contains(seedsBeforeSteps, seed) {
			break
		}
		k := stepKinds[srng.IntN(len(stepKinds))]
		sc.tasks = append(sc.tasks, simTask{kind: k, params: params{N: 1000 + i, Sleep: float64(200+srng.IntN(1300)) / 1000}})
	}

	// Long local tasks, from an rng of their own and not for the
	// regression seeds found before them: a local handler, or local steps,
	// running past the first workflow task's heartbeat (the SDK completes
	// a workflow task whose local activities run past 80 % of its 10 s
	// timeout), so that a bridge dying leaves the next one a replay of
	// that workflow task.
	lrng := rand.New(rand.NewPCG(seed, 0x10ca1))
	for i := range 1 + lrng.IntN(2) {
		if slices.Contains(seedsBeforeLongLocal, seed) {
			break
		}
		if lrng.IntN(2) == 0 {
			sc.tasks = append(sc.tasks, simTask{kind: kindFast, params: params{N: 2000 + i, Sleep: float64(8500+lrng.IntN(3000)) / 1000}})
		} else { // two steps one after the other, the second past 8 s
			sc.tasks = append(sc.tasks, simTask{kind: kindStepsLocal, params: params{N: 2000 + i, Sleep: float64(4500+lrng.IntN(1500)) / 1000}})
		}
	}

	at := time.Duration(0)
	for {
		at += time.Duration(300+rng.IntN(1700)) * time.Millisecond
		if at > chaos {
			break
		}
		sc.events = append(sc.events, drawEvent(rng, at))
	}
	return sc
}

// tmFault is a TaskManager fault a seed may draw.
type tmFault struct {
	name  string
	fault devserver.Fault
}

var tmFaults = []tmFault{
	{"complete: 503 before the write", devserver.Fault{Path: "/complete", Status: 503}},
	{"complete: answer lost after the write (502)", devserver.Fault{Path: "/complete", Status: 502, After: true}},
	{"complete: 429 Retry-After 1s", devserver.Fault{Path: "/complete", Status: 429, RetryAfter: time.Second}},
	{"complete: garbage 200 after the write", devserver.Fault{Path: "/complete", Status: 200, After: true, Body: `{"success":tr`}},
	{"complete: proxy's HTML 400 page", devserver.Fault{Path: "/complete", Status: 400, Body: "<html><body><h1>400 Bad Request</h1>nginx</body></html>"}},
	{"complete: slow answer (6s, past the client timeout)", devserver.Fault{Path: "/complete", Latency: 6 * time.Second}},
	{"complete: lands 6s late, after the client gave up", devserver.Fault{Path: "/complete", Latency: 6 * time.Second, Late: true}},
	{"claim: lands 6s late, after the client gave up", devserver.Fault{Path: "/tasks/claim", Latency: 6 * time.Second, Late: true}},
	{"claim: 503", devserver.Fault{Path: "/tasks/claim", Status: 503}},
	{"claim: answer lost after the claim (502)", devserver.Fault{Path: "/tasks/claim", Status: 502, After: true}},
	{"claim: garbage 200 after the claim", devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Body: "<html>oops</html>"}},
	{"get task: 503", devserver.Fault{Path: "/tasks/", Method: "GET", Status: 503}},
	{"get task: garbage 200", devserver.Fault{Path: "/tasks/", Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[{"id":`}},
	{"list: 500 HTML", devserver.Fault{Path: "/api/tasks", Method: "GET", Status: 500, Body: "<html>Internal Server Error</html>"}},
	{"progress: 503", devserver.Fault{Path: "/progress", Status: 503}},
	{"everything: 503 for 2s", devserver.Fault{Status: 503}},
}

func drawEvent(rng *rand.Rand, at time.Duration) event {
	switch r := rng.IntN(100); {
	case r < 55:
		f := tmFaults[rng.IntN(len(tmFaults))]
		fault := f.fault
		if fault.Path == "" && fault.Status == 503 {
			fault.Count = 0
		} else {
			fault.Count = 1 + rng.IntN(3)
		}
		return event{at, "TaskManager fault: " + f.name, func(w *world, s *state) {
			if fault.Count == 0 {
				fault.Until = time.Now().Add(2 * time.Second)
			}
			w.tm.InjectFault(fault)
		}}
	case r < 60:
		return event{at, "TaskManager fault: complete: 500 Data too long", func(w *world, s *state) {
			s.tooLongFaults++
			w.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 500, Count: 1,
				Body: `{"success":false,"error":"SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column 'result_json' at row 1"}`})
		}}
	case r < 72:
		down := time.Duration(200+rng.IntN(2500)) * time.Millisecond
		return event{at, "crash bridge A and restart it", func(w *world, s *state) {
			w.crashBridge("sim-a")
			time.Sleep(down)
			w.startBridge("sim-a")
		}}
	case r < 80:
		crash := rng.IntN(2) == 0
		return event{at, "second bridge B: start or stop", func(w *world, s *state) {
			switch {
			case !w.running("sim-b"):
				w.startBridge("sim-b")
			case crash:
				w.crashBridge("sim-b")
			default:
				_ = w.stopBridge("sim-b")
			}
		}}
	case r < 86:
		down := time.Duration(500+rng.IntN(2500)) * time.Millisecond
		return event{at, "restart Temporal", func(w *world, s *state) { w.restartTemporal(down) }}
	default:
		pick := rng.Uint64()
		return event{at, "cancel a running task workflow", func(w *world, s *state) {
			if id, asked := w.cancelOne(pick); id != "" {
				s.cancelled[id] = true
				s.cancelledAt[id] = append(s.cancelledAt[id], asked)
			}
		}}
	}
}

// runSeed runs one simulation and checks its invariants.
func runSeed(t *testing.T, seed uint64) {
	sc := plan(seed)
	w := newWorld(t, sc.style)
	w.note("seed %d: %d tasks, %d events, TaskManager style %s", seed, len(sc.tasks), len(sc.events), sc.style)
	ctx := context.Background()
	api := newAPI(t, w.tmURL)
	for _, k := range append(append(kinds, stepKinds...), kindStepsLocal) {
		register(t, api, k)
	}
	for i := range sc.tasks {
		sc.tasks[i].id = create(t, api, sc.tasks[i].kind, sc.tasks[i].params)
	}
	st := &state{cancelled: map[string]bool{}, cancelledAt: map[string][]time.Time{}}
	w.startBridge("sim-a")
	begin := time.Now()
	for _, ev := range sc.events {
		time.Sleep(time.Until(begin.Add(ev.at)))
		w.note("%s", ev.what)
		ev.do(w, st)
	}
	// Faults end: the run must now finish every task.
	w.tm.ClearFaults()
	if !w.running("sim-a") {
		w.startBridge("sim-a")
	}
	w.note("faults over: waiting for every task to be final")
	finished := waitFinal(ctx, w, sc.tasks, 4*time.Minute)
	stopErrs := w.stopAllBridges(false)
	rep := check(w, sc, st, finished, stopErrs)
	if len(rep.violations) > 0 {
		t.Errorf("seed %d broke %d invariant(s):\n  %s\n\nwhat happened:\n  %s\n\nreproduce: SIM_SEED=%d go test -count=1 -v -run TestSimulation ./e2e/sim/\nlogs: %s",
			seed, len(rep.violations), strings.Join(rep.violations, "\n  "), strings.Join(w.log, "\n  "), seed, w.dir)
		keepLogs(t, w)
	}
	t.Logf("seed %d: %s", seed, rep.summary)
}

// keepLogs copies the run's logs out of the test's temp dir.
func keepLogs(t *testing.T, w *world) {
	dst, err := os.MkdirTemp("", "tmbridge-sim-logs-*")
	if err != nil {
		return
	}
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		if data, err := os.ReadFile(w.dir + "/" + e.Name()); err == nil && !strings.HasSuffix(e.Name(), ".db") {
			_ = os.WriteFile(dst+"/"+e.Name(), data, 0o600)
		}
	}
	dumpHistories(w, dst)
	t.Logf("logs kept in %s", dst)
}

// dumpHistories writes every run's history, for a failed seed's report.
func dumpHistories(w *world, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := w.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: 1000})
	if err != nil {
		return
	}
	var b strings.Builder
	for _, ex := range resp.Executions {
		e := ex.GetExecution()
		fmt.Fprintf(&b, "=== %s %s %s\n", e.GetWorkflowId(), e.GetRunId(), ex.GetStatus())
		it := w.tc.GetWorkflowHistory(ctx, e.GetWorkflowId(), e.GetRunId(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				break
			}
			fmt.Fprintf(&b, "%4d %s %s\n", ev.GetEventId(), ev.GetEventTime().AsTime().Format("15:04:05.000"), ev.GetEventType())
		}
	}
	_ = os.WriteFile(dir+"/histories.txt", []byte(b.String()), 0o600)
}
