package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// world is one simulation's servers and bridge processes, all on 127.0.0.1.
type world struct {
	t        testing.TB
	dir      string
	tm       *devserver.Server
	tmURL    string
	temporal *devtemporal.Server
	port     int
	dbFile   string
	tc       client.Client
	queue    string
	obs      *observer
	obsURL   string
	config   string

	mu      sync.Mutex
	closing bool                   // the run is stopping its bridges
	bridges map[string]*bridgeProc // by worker id
	log     []string               // what the simulation did, in order
	start   time.Time
}

const (
	apiKey       = "sim-secret-key"
	maxInFlight  = 6
	claimTimeout = 3 * time.Second
	// workflowPrefix: a task's workflow id is this and its id.
	workflowPrefix = "t-"
)

func newWorld(t testing.TB, style devserver.Style) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir, bridges: map[string]*bridgeProc{}, start: time.Now(), queue: "sim", dbFile: filepath.Join(dir, "temporal.db")}
	w.tm = devserver.New(devserver.Options{Style: style, APIKey: apiKey, ClaimTimeout: claimTimeout})
	w.tmURL = w.tm.Start(t)
	w.obs = newObserver(w.tm)
	srv := httptest.NewServer(w.obs)
	t.Cleanup(srv.Close)
	w.obsURL = srv.URL
	w.config = filepath.Join(dir, "tmbridge.yaml")
	if err := os.WriteFile(w.config, []byte(simConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	w.startTemporal()
	t.Cleanup(func() {
		w.stopAllBridges(true)
		if w.temporal != nil {
			w.temporal.Stop()
		}
	})
	tc, err := client.Dial(client.Options{HostPort: w.temporal.Address, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	w.tc = tc
	return w
}

// note adds a line to the simulation's log (shown with any violation).
func (w *world) note(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, fmt.Sprintf("%6.2fs  ", time.Since(w.start).Seconds())+fmt.Sprintf(format, args...))
}

// startTemporal starts the dev server, on the world's port and database
// once it has them. A start that does not answer is tried again (three
// attempts in all): the harness's restart, not the bridge, is at fault then,
// and the note says so.
func (w *world) startTemporal() {
	w.t.Helper()
	logf, _ := os.OpenFile(filepath.Join(w.dir, "temporal.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	var srv *devtemporal.Server
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		srv, err = devtemporal.Start(ctx, devtemporal.Options{Port: w.port, DBFile: w.dbFile, Log: logf})
		cancel()
		if err == nil {
			break
		}
		w.note("harness: Temporal start attempt %d failed: %v", attempt, err)
	}
	if err != nil {
		w.mu.Lock()
		log := strings.Join(w.log, "\n  ")
		w.mu.Unlock()
		w.t.Fatalf("start Temporal: %v\nwhat happened:\n  %s", err, log)
	}
	w.temporal = srv
	if w.port == 0 {
		_, p, _ := splitPort(srv.Address)
		w.port = p
	}
}

// restartTemporal stops the Temporal server and starts it again on the
// same database after down.
func (w *world) restartTemporal(down time.Duration) {
	w.note("Temporal: stopped (restarts in %s)", down.Round(time.Millisecond))
	w.temporal.Stop()
	time.Sleep(down)
	w.startTemporal()
	w.note("Temporal: running again")
}

func splitPort(addr string) (string, int, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			p, err := strconv.Atoi(addr[i+1:])
			return addr[:i], p, err
		}
	}
	return addr, 0, fmt.Errorf("no port in %q", addr)
}

// bridgeProc is one bridge process.
type bridgeProc struct {
	worker  string
	cmd     *exec.Cmd
	done    chan error
	logf    string
	logFile *os.File
}

// startBridge starts a bridge process for worker.
func (w *world) startBridge(worker string) {
	// One process per worker id at a time (the supervisor and an event may
	// both start one): checked and registered under the lock.
	w.mu.Lock()
	if w.bridges[worker] != nil || w.closing {
		w.mu.Unlock()
		return
	}
	p, err := w.spawn(worker)
	if err == nil {
		w.bridges[worker] = p
	}
	w.mu.Unlock()
	if err != nil {
		w.t.Errorf("bridge %s: %v", worker, err)
		return
	}
	w.note("bridge %s: started (pid %d)", worker, p.cmd.Process.Pid)
	go w.supervise(p)
}

// spawn starts a bridge process; w.mu is held.
func (w *world) spawn(worker string) (*bridgeProc, error) {
	logf := filepath.Join(w.dir, fmt.Sprintf("bridge-%s-%d.log", worker, time.Now().UnixNano()))
	f, err := os.Create(logf)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0],
		"--config="+w.config, "--api-url="+w.tmURL, "--temporal-address=127.0.0.1:"+strconv.Itoa(w.port),
		"--task-queue="+w.queue, "--workflow-id-prefix="+workflowPrefix, "--worker-id="+worker, "--poll-interval=0.2", "--api-timeout=5s",
		"--max-in-flight="+strconv.Itoa(maxInFlight), "--claim-timeout="+claimTimeout.String(), "--shutdown-grace=2s", "--log-format=json")
	cmd.Env = append(os.Environ(), childEnv+"=1", observerEnv+"="+w.obsURL, "TASKMANAGER_API_KEY="+apiKey)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	return &bridgeProc{worker: worker, cmd: cmd, done: make(chan error, 1), logf: logf, logFile: f}, nil
}

// supervise waits for a bridge process to exit.
func (w *world) supervise(p *bridgeProc) {
	worker, cmd := p.worker, p.cmd
	err := cmd.Wait()
	p.logFile.Close()
	p.done <- err
	// Like a supervisor (systemd, Kubernetes): a bridge that exits on its
	// own (it exits 1 when Temporal is down at its start) is started again.
	w.mu.Lock()
	mine := w.bridges[worker] == p && !w.closing
	if mine {
		delete(w.bridges, worker)
	}
	w.mu.Unlock()
	if mine {
		w.obs.processDied(cmd.Process.Pid)
		w.note("bridge %s: exited on its own (%v); restarting it", worker, err)
		time.Sleep(time.Second)
		w.startBridge(worker) // unless an event started it meanwhile
	}
}

// crashBridge kills a bridge process with SIGKILL.
func (w *world) crashBridge(worker string) {
	w.mu.Lock()
	p := w.bridges[worker]
	delete(w.bridges, worker)
	w.mu.Unlock()
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	w.obs.processDied(p.cmd.Process.Pid)
	w.note("bridge %s: crashed (SIGKILL)", worker)
}

// waitUp waits until the bridge has logged its banner (it catches
// signals by then) or exited, for a minute at most: a SIGTERM that comes
// before a process runs its main kills it by the default action, as it
// would any program, and says nothing of the bridge's stop.
func (p *bridgeProc) waitUp() {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-p.done:
			p.done <- err // exited: put it back for the caller
			return
		default:
		}
		if out, err := os.ReadFile(p.logf); err == nil && bytes.Contains(out, []byte("PrismQ TaskManager bridge (tmbridge)")) {
			return
		}
	}
}

// stopBridge stops a bridge process with SIGTERM and returns its exit
// error (nil for a clean exit).
func (w *world) stopBridge(worker string) error {
	w.mu.Lock()
	p := w.bridges[worker]
	delete(w.bridges, worker)
	w.mu.Unlock()
	if p == nil {
		return nil
	}
	p.waitUp()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(time.Minute):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		err = fmt.Errorf("bridge %s did not stop within a minute of SIGTERM", worker)
		<-p.done
	}
	w.obs.processDied(p.cmd.Process.Pid)
	w.note("bridge %s: stopped (SIGTERM): %v", worker, err)
	return err
}

func (w *world) running(worker string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bridges[worker] != nil
}

func (w *world) stopAllBridges(kill bool) []error {
	w.mu.Lock()
	w.closing = true
	var workers []string
	for k := range w.bridges {
		workers = append(workers, k)
	}
	w.mu.Unlock()
	var errs []error
	for _, k := range workers {
		if kill {
			w.crashBridge(k)
		} else if err := w.stopBridge(k); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", k, err))
		}
	}
	return errs
}

// observer hears from every handler as it starts and ends, and checks at
// each start that TaskManager still has the task claimed: a handler that
// runs for a task that is not claimed runs for a claim that no longer
// holds it.
type observer struct {
	tm *devserver.Server

	mu         sync.Mutex
	running    map[string]map[runningKey]int // task id → handlers running, by process and run
	startedAt  map[string][]time.Time        // task id → when its handlers started
	violations []string
	starts     int
	overlaps   int // a handler started while another ran for the task
	// otherRun counts the overlaps with a handler of another run of the
	// task: a run that reported while its handler still worked. Counted,
	// not checked: a local handler, and one on a bridge cut off from
	// Temporal (restarted), do not hear the cancel.
	otherRun int
}

// runningKey is a live process and the task run its handler serves.
type runningKey struct {
	pid int
	run string
}

func newObserver(tm *devserver.Server) *observer {
	return &observer{tm: tm, running: map[string]map[runningKey]int{}, startedAt: map[string][]time.Time{}}
}

func (o *observer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev handlerEvent
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch ev.What {
	case "start":
		o.starts++
		o.startedAt[ev.TaskID] = append(o.startedAt[ev.TaskID], time.Now())
		st, ok := o.tm.Task(ev.TaskID)
		if !ok || st.Status != "claimed" {
			o.violations = append(o.violations, fmt.Sprintf("at %s task %s: a handler started (pid %d, claim of %s at attempt %d) while the task was %q (claimed by %q, attempt %d)",
				time.Now().Format("15:04:05.000"), ev.TaskID, ev.PID, ev.WorkerID, ev.Attempt, st.Status, st.ClaimedBy, st.Attempts))
		}
		if len(o.running[ev.TaskID]) > 0 {
			o.overlaps++
			for k := range o.running[ev.TaskID] {
				if k.run != ev.RunID {
					o.otherRun++
					break
				}
			}
		}
		if o.running[ev.TaskID] == nil {
			o.running[ev.TaskID] = map[runningKey]int{}
		}
		o.running[ev.TaskID][runningKey{ev.PID, ev.RunID}]++
	case "end":
		if m := o.running[ev.TaskID]; m != nil {
			k := runningKey{ev.PID, ev.RunID}
			if m[k]--; m[k] <= 0 {
				delete(m, k)
			}
		}
	}
}

// processDied forgets the handlers of a process that is gone.
func (o *observer) processDied(pid int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, m := range o.running {
		for k := range m {
			if k.pid == pid {
				delete(m, k)
			}
		}
	}
}

type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}
