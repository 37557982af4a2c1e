package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"golang.org/x/time/rate"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// Bridge claims TaskManager tasks, starts one Temporal workflow per task and
// hosts the Temporal worker that runs them. Create it with New, call Run,
// then Stop.
type Bridge struct {
	cfg       Config
	log       *slog.Logger
	api       *taskmanager.Client
	tc        client.Client
	runs      temporalRuns // tc, or a fake in tests
	namespace string
	reg       *activities.Registry
	worker    worker.Worker
	acts      *activities.Activities
	metrics   *metrics
	auth      *keyRefusal // whether TaskManager refuses the API key now (readiness)

	adm    *admission    // the one owner of every claimed task
	calls  claimCalls    // claim calls under way, whose answers a sweep waits for
	sweeps chan struct{} // a sweep asked for (requestSweep)
	held   heldClaims    // tickets held until a sweep has looked
	swept  chan struct{} // closed after the first sweep that succeeded
	// undecodableFor: see strikes (tests shorten it).
	undecodableFor time.Duration
	gate           *gate
	scout          *scout      // finds pending work for idle claim loops
	closer         closerState // learns when open runs close (closer.go)
	types          []servedType

	// search attributes TaskType and TaskID, when the namespace has them
	searchAttrs atomic.Bool
	polling     atomic.Bool // the worker runs (for /readyz)
	fatal       chan error  // the worker stopped for good (workerFailed)
	ready       readyCache
	metricsURL  string // http://host:port of /metrics, once served

	mu         sync.Mutex
	stopClaims context.CancelFunc
	stopped    bool           // Stop was called: claiming never starts
	running    bool           // a Run is under way
	served     bool           // a Run started the worker: another Run is refused
	loops      sync.WaitGroup // claim loops and the sweeper
	claimLoops sync.WaitGroup
	starts     sync.WaitGroup  // starts and failures being reported
	bg         context.Context // watchers, starts and the health prober
	bgCancel   context.CancelFunc
	// stopDone is closed once Stop stopped the worker and its handlers had
	// their time: the health and metrics server answers until then.
	stopDone     chan struct{}
	stopDoneOnce sync.Once
}

// startsGrace is how long Stop lets claimed tasks' workflow starts finish.
const startsGrace = 5 * time.Second

// temporalRuns is the part of the Temporal client that starts, signals,
// finds and watches task runs. Tests of the claim bookkeeping replace it
// with a fake that can lose answers and go away.
type temporalRuns interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
	SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	GetWorkflow(ctx context.Context, workflowID, runID string) client.WorkflowRun
	ListWorkflow(ctx context.Context, request *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
	CheckHealth(ctx context.Context, request *client.CheckHealthRequest) (*client.CheckHealthResponse, error)
}

// MaxPendingStarts bounds the claimed tasks whose workflow is not started
// yet. Starts overlap with the next claims, but when Temporal is slow or
// unreachable, claiming stops after these few.
const MaxPendingStarts = 16

// ClaimsPerType is how many claim calls of one type may be under way at
// once: a busy type is claimed that much faster (a claim is a database
// transaction on TaskManager's side); an idle one makes no call at all.
const ClaimsPerType = 4

// Option is a setting of New beyond the config.
type Option func(*bridgeOptions)

// bridgeOptions are New's settings, gathered before anything is built.
type bridgeOptions struct {
	log        *slog.Logger
	workflows  map[string]any
	twice      []string             // workflow names given twice
	metricsReg *prometheus.Registry // nil: one of the bridge's own
}

// WithLogger sets the logger (default slog.Default(), also for a nil l).
func WithLogger(l *slog.Logger) Option {
	return func(o *bridgeOptions) {
		if l != nil {
			o.log = l
		}
	}
}

// WithWorkflow registers a Go workflow under name, for types configured
// with `workflow: name`. It receives an activities.HandlerInput and returns
// the task's result; the bridge still claims the task and reports its
// outcome. New refuses a name given twice, an empty name or one with
// spaces around it, a nil function, a name starting with tmbridge. and a
// function Temporal cannot register. A
// panic in it, or in a coroutine it started, fails the task's attempt
// (workflows.FailOnPanic, workflows.GoroutinePanics).
func WithWorkflow(name string, fn any) Option {
	return func(o *bridgeOptions) {
		if _, ok := o.workflows[name]; ok {
			o.twice = append(o.twice, name)
		}
		o.workflows[name] = fn
	}
}

// New checks the config (Config.Validate), and the handlers and routes
// against it, and builds the Temporal worker. It runs reg's handlers and
// the config's exec and http ones; once it succeeds, reg is sealed
// (Registry.Seal): a handler added later would never be served.
func New(cfg Config, reg *activities.Registry, tc client.Client, opts ...Option) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tc == nil {
		return nil, errors.New("bridge.New: a nil Temporal client (client.Dial)")
	}
	o := bridgeOptions{log: slog.Default(), workflows: map[string]any{}}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if len(o.twice) > 0 {
		return nil, fmt.Errorf("bridge.WithWorkflow: %q given twice", o.twice)
	}
	m := newMetrics(o.metricsReg)
	auth := new(keyRefusal)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: cfg.APIURL, APIKey: cfg.APIKey.Reveal(), Timeout: cfg.APITimeout, Observe: apiObserver(m, auth)})
	if err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	b := &Bridge{
		cfg: cfg, log: o.log, api: api, tc: tc, runs: tc, namespace: cmp.Or(cfg.Temporal.Namespace, client.DefaultNamespace),
		adm: newAdmission(cfg.MaxInFlight, cfg.MaxRuns), sweeps: make(chan struct{}, 1), gate: newGate(), scout: newScout(),
		undecodableFor: defaultUndecodableFor,
		bg:             bg, bgCancel: cancel, metrics: m, auth: auth, fatal: make(chan error, 1), stopDone: make(chan struct{}),
	}
	b.adm.finished = m.runFinished
	if b.reg, err = cfg.Registry(reg); err != nil {
		return nil, err
	}
	wopts := worker.Options{
		MaxConcurrentActivityExecutionSize:      cfg.Temporal.MaxConcurrentActivities,
		MaxConcurrentLocalActivityExecutionSize: cfg.Temporal.MaxConcurrentActivities,
		MaxConcurrentWorkflowTaskPollers:        4,
		MaxConcurrentActivityTaskPollers:        4,
		MaxHeartbeatThrottleInterval:            activities.MaxHeartbeatThrottleInterval,
		WorkerStopTimeout:                       cfg.ShutdownGrace,
		Identity:                                cfg.WorkerID + "@" + cfg.Temporal.TaskQueue,
		OnFatalError:                            b.workerFailed,
	}
	if len(o.workflows) > 0 {
		// A panic in a coroutine of a Go workflow handler fails its run.
		wopts.Interceptors = []interceptor.WorkerInterceptor{workflows.GoroutinePanics()}
	}
	if err := checkWorkflowRoutes(cfg, o.workflows); err != nil {
		cancel()
		return nil, err
	}
	b.worker = worker.New(tc, cfg.Temporal.TaskQueue, wopts)
	for _, name := range slices.Sorted(maps.Keys(o.workflows)) {
		if err := workflows.RegisterGo(b.worker, name, o.workflows[name]); err != nil {
			cancel()
			return nil, fmt.Errorf("bridge.WithWorkflow: %w", err)
		}
	}
	b.worker.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	b.closer.on.Store(true)
	b.acts = &activities.Activities{Registry: b.reg, TaskManager: api, Logger: b.log, CurrentClaim: b.currentClaim, Reported: b.reported,
		ProgressBudget: rate.NewLimiter(rate.Limit(cfg.ProgressRate), cfg.ProgressRate)}
	b.acts.RegisterOn(b.worker)
	if reg != nil {
		reg.Seal() // its handlers are taken: one added later would never be served
	}
	m.registerState(b.adm, cfg.MaxInFlight, cfg.ClaimTimeout) // served on metrics_addr, or by the program (WithMetricsRegistry)
	return b, nil
}

// checkWorkflowRoutes makes sure every type routed to a Go workflow on
// this bridge's task queue has it registered (WithWorkflow): else its
// tasks would be claimed and their runs stuck ("unable to find workflow
// type"), their claims held.
func checkWorkflowRoutes(cfg Config, registered map[string]any) error {
	var errs []error
	for _, name := range sortedKeys(cfg.Types) {
		if o := cfg.TypeOptions(name); workflowMissing(o, registered) {
			errs = append(errs, fmt.Errorf("config: types.%s.workflow: no Go workflow %q is registered in this bridge (bridge.WithWorkflow), and no task_queue routes it to another worker", name, o.Workflow))
		}
	}
	return errors.Join(errs...)
}

// workflowMissing reports whether o routes to a Go workflow that must run
// on this bridge's task queue and is not among registered.
func workflowMissing(o workflows.TypeOptions, registered map[string]any) bool {
	_, ok := registered[o.Workflow]
	return o.Workflow != "" && o.TaskQueue == "" && !ok
}

// Errors of Run that say what may come next (errors.Is).
var (
	// ErrStartCheck: a check before the worker started failed (TaskManager
	// or Temporal not answering as they should, metrics_addr taken, the
	// types to serve not resolved). Run may be called again.
	ErrStartCheck = errors.New("tmbridge: a start check failed")
	// ErrRunOnce: Run is running already on this Bridge, or ran: build a
	// new one (New) to run again.
	ErrRunOnce = errors.New("tmbridge: Run runs once per Bridge")
	// ErrWorkerStopped: the Temporal worker stopped for good (its
	// namespace gone, polling refused); the process should exit, so that
	// its supervisor restarts it.
	ErrWorkerStopped = errors.New("tmbridge: the Temporal worker stopped for good")
)

// startCheckError is an error of Run before the worker started: its
// message as it was, and errors.Is(err, ErrStartCheck).
type startCheckError struct{ error }

func (e startCheckError) Unwrap() error        { return e.error }
func (e startCheckError) Is(target error) bool { return target == ErrStartCheck }

// Run checks TaskManager and Temporal, resolves the types to serve, starts
// the worker and claims tasks until ctx ends or MaxRuns tasks are done
// (then it waits for them). It returns with claiming stopped and the
// worker still running: call Stop. A Run whose start checks failed
// (ErrStartCheck) may be called again; a second Run while one runs, or
// after one started the worker, returns ErrRunOnce. A worker that stopped
// for good ends Run with ErrWorkerStopped.
func (b *Bridge) Run(ctx context.Context) error {
	b.mu.Lock()
	switch {
	case b.running:
		b.mu.Unlock()
		return fmt.Errorf("%w: it is running already on this Bridge", ErrRunOnce)
	case b.served:
		b.mu.Unlock()
		return fmt.Errorf("%w: it ran already on this Bridge: build a new one (New) to run again", ErrRunOnce)
	}
	b.running = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
	}()
	if err := b.serveMetrics(); err != nil {
		return startCheckError{err}
	}
	if err := b.healthCheck(ctx); err != nil {
		return startCheckError{err}
	}
	types, err := b.resolveTypes(ctx)
	if err != nil {
		return startCheckError{err}
	}
	b.types = types
	b.metrics.serveTypes(types)
	b.searchAttrs.Store(b.cfg.Temporal.SearchAttributes && b.hasSearchAttributes(ctx))
	// Not after Stop: the SDK panics when a stopped worker is started.
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil // Stop came first (an embedder's): nothing to run
	}
	err = b.worker.Start()
	b.served = true
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("start Temporal worker: %w", err)
	}
	b.polling.Store(true)
	return b.serve(ctx)
}

// workerFailed is told by the SDK that the worker stopped for good (its
// namespace gone, polling refused): the bridge is no longer ready, claiming
// stops and Run returns the error, so that the process exits and its
// supervisor restarts it. Before, it went on claiming tasks no worker
// would run, and /readyz still said ok.
func (b *Bridge) workerFailed(err error) {
	b.polling.Store(false)
	b.log.Error("the Temporal worker stopped for good: claiming stops and the bridge exits", "err", err)
	select {
	case b.fatal <- err:
	default:
	}
}

// workerError is the error Run returns when the worker stopped for good.
type workerError struct{ err error }

func (e *workerError) Error() string        { return "Temporal worker stopped: " + e.err.Error() }
func (e *workerError) Unwrap() error        { return e.err }
func (e *workerError) Is(target error) bool { return target == ErrWorkerStopped }

// serve claims and starts tasks until ctx ends, the worker stops for good
// (its error is returned), or max_runs claims are made, their outcomes
// landed and their runs closed: first it counts this worker's open runs and
// recovers its claims left without a run, then it runs one claim loop per
// type and the sweeper.
func (b *Bridge) serve(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	go func() {
		select {
		case err := <-b.fatal:
			cancel(&workerError{err})
		case <-ctx.Done():
		}
	}()
	err := b.claimUntil(ctx)
	if we := (*workerError)(nil); errors.As(context.Cause(ctx), &we) {
		return we
	}
	return err
}

// claimUntil is serve's body.
func (b *Bridge) claimUntil(ctx context.Context) error {
	b.recoverRuns(ctx)
	claimCtx, stop := context.WithCancel(ctx)
	b.mu.Lock()
	b.stopClaims = stop
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		stop()
		return nil // Stop came first (an embedder's): claim nothing
	}
	// Claims of this worker whose run never started (a crash between claim
	// and start, an answer lost) are found before new claims are made: the
	// claim loops wait for the first sweep that succeeds.
	b.swept = make(chan struct{})
	b.requestSweep()
	b.loops.Add(1)
	go func() {
		defer b.loops.Done()
		b.sweeper(claimCtx)
	}()
	b.loops.Add(1)
	go func() {
		defer b.loops.Done()
		b.runScout(claimCtx)
	}()
	b.closer.once.Do(func() { go b.runCloser(b.bg) })
	for _, t := range b.types {
		for range ClaimsPerType {
			b.loops.Add(1)
			b.claimLoops.Add(1)
			go func() {
				defer b.loops.Done()
				defer b.claimLoops.Done()
				b.claimLoop(claimCtx, t)
			}()
		}
	}
	b.log.Info("claiming", "types", len(b.types), "max_in_flight", b.cfg.MaxInFlight)
	loopsDone := make(chan struct{})
	go func() { b.claimLoops.Wait(); close(loopsDone) }()
	select {
	case <-ctx.Done():
		stop()
		b.loops.Wait()
		return nil
	case <-loopsDone:
	}
	stop() // the sweeper too
	b.loops.Wait()
	b.mu.Lock()
	stopped = b.stopped
	b.mu.Unlock()
	if stopped {
		return nil // Stop ended the claim loops (an embedder's): it hands over
	}
	b.log.Info("max runs reached: claiming stopped, waiting for the claimed tasks", "max_runs", b.cfg.MaxRuns)
	// A Stop (an embedder's) ends the wait too: it stops the worker the
	// runs need (b.bg ends with it).
	ctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	defer context.AfterFunc(b.bg, cancelWait)()
	if err := b.adm.idle(ctx); err != nil {
		return nil // stopped while waiting; Stop hands over
	}
	// Outcomes landed; their runs close in a moment, once this worker
	// completes their last workflow task: exit with none of them open, or
	// say which are left after closeWait (Temporal unreachable, a run
	// whose last workflow task fails): every outcome is in TaskManager.
	wctx, cancel := context.WithTimeout(ctx, closeWait)
	left := b.waitClosed(wctx, b.adm.closingIDs())
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	if left > 0 {
		b.log.Warn("outcomes reported, but some runs have not closed in Temporal; exiting anyway (a bridge of this task queue finishes them)", "runs", left, "waited", closeWait)
	}
	b.log.Info("all claimed tasks finished", "tasks", b.adm.claimed())
	return nil
}

// closeWait bounds how long --max-runs waits for its runs to close once
// their outcomes landed.
const closeWait = time.Minute

// waitClosed waits until Temporal says each run of ids closed (or serves
// another worker's claim), asking about closeWaiters at once, or until ctx
// ends; it returns how many it did not see closed.
func (b *Bridge) waitClosed(ctx context.Context, ids []string) int {
	slices.Sort(ids)
	ids = slices.Compact(ids) // a task claimed again is listed once per landed outcome
	var left atomic.Int64
	sem := make(chan struct{}, closeWaiters)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for failures := 0; ; failures++ {
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				closed, err := b.describeClosed(dctx, id)
				cancel()
				if err == nil && closed {
					return
				}
				if err != nil {
					b.log.Debug("cannot tell whether the run closed; asking again", "workflow_id", id, "err", err)
				}
				sleep(ctx, min(50*time.Millisecond<<min(failures, 5), time.Second))
				if ctx.Err() != nil {
					left.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	return int(left.Load())
}

// closeWaiters is how many runs waitClosed asks about at once.
const closeWaiters = 16

// cancelledReportGrace is how long Stop lets handlers cancelled at the end
// of the shutdown grace return, so that their attempts are reported.
const cancelledReportGrace = 15 * time.Second

// Stop stops claiming, lets pending workflow starts finish (for a few
// seconds at most: a claim not started by then is recovered by the next
// start of this worker), then stops the worker: running handlers get the
// shutdown grace to finish, after which they are cancelled, get 15 s to
// return so that their attempts are reported, and Temporal retries them
// elsewhere or after a restart.
//
// If ctx ends first, Stop returns ctx's error, and the stop goes on in the
// background without the grace: the handlers still running are cancelled
// as soon as the worker stops polling (their attempts are still reported,
// so Temporal retries them).
func (b *Bridge) Stop(ctx context.Context) error {
	b.mu.Lock()
	b.stopped = true
	if b.stopClaims != nil {
		b.stopClaims()
	}
	b.mu.Unlock()
	b.polling.Store(false) // not ready: stopping
	defer b.bgCancel()
	done := make(chan struct{})
	go func() {
		b.loops.Wait()
		started := make(chan struct{})
		go func() { b.starts.Wait(); close(started) }()
		select {
		case <-started:
		case <-time.After(startsGrace):
		case <-ctx.Done():
		}
		b.bgCancel() // watches end; starts still retrying give up
		<-started
		// The SDK gives local and then regular activities the shutdown
		// grace each: regular handlers are cancelled when the first one
		// ends (see activities.Activities.CancelHandlers), or when ctx
		// does. Not before the worker stops: it would still poll, and each
		// handler it started would be cancelled at once, spending a retry.
		stopped := make(chan struct{})
		go func() {
			grace := time.NewTimer(b.cfg.ShutdownGrace)
			defer grace.Stop()
			select {
			case <-grace.C:
			case <-ctx.Done():
			case <-stopped:
				return
			}
			b.acts.CancelHandlers()
		}()
		b.worker.Stop()
		close(stopped)
		// Handlers still running were cancelled: let them return so that
		// their attempts are reported and retried at once.
		idle, cancel := context.WithTimeout(ctx, cancelledReportGrace)
		defer cancel()
		if b.acts.Idle(idle) == nil {
			select { // the SDK's failure report
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		b.stopDoneOnce.Do(func() { close(b.stopDone) })
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop: %w", ctx.Err())
	}
}

func (b *Bridge) healthCheck(ctx context.Context) error {
	hctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	defer cancel()
	h, err := b.api.Health(hctx)
	if err != nil {
		return fmt.Errorf("TaskManager health check at %s failed: %w", b.api.BaseURL(), err)
	}
	b.log.Info("✓ TaskManager health check passed", "status", h.Status)
	if _, err := b.runs.CheckHealth(hctx, &client.CheckHealthRequest{}); err != nil {
		return fmt.Errorf("temporal health check failed: %w", err)
	}
	b.log.Info("✓ Temporal health check passed", "namespace", b.namespace)
	return nil
}

// Search attribute names set on each run, where the namespace has them
// (unless temporal.search_attributes is false).
const (
	SearchAttrTaskType = "TaskType"
	SearchAttrTaskID   = "TaskID"
)

// hasSearchAttributes says whether the namespace has TaskType and TaskID
// as Keyword search attributes. (An operator call, made on the client
// itself: temporalRuns fakes only the runs' bookkeeping.)
func (b *Bridge) hasSearchAttributes(ctx context.Context) bool {
	resp, err := b.tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: b.namespace})
	if err != nil {
		b.log.Debug("cannot list search attributes", "err", err)
		return false
	}
	ok := resp.CustomAttributes[SearchAttrTaskType] == enums.INDEXED_VALUE_TYPE_KEYWORD &&
		resp.CustomAttributes[SearchAttrTaskID] == enums.INDEXED_VALUE_TYPE_KEYWORD
	if !ok {
		b.log.Info("namespace has no Keyword search attributes TaskType and TaskID: runs are found by memo and id only")
	}
	return ok
}

// currentClaim asks a task's workflow who holds the task now (a query,
// made on the client itself: temporalRuns' fake runs no workflow code).
func (b *Bridge) currentClaim(ctx context.Context, workflowID string) (string, error) {
	v, err := b.tc.QueryWorkflow(ctx, workflowID, "", workflows.ClaimQueryName)
	if err != nil {
		return "", err
	}
	var c workflows.Claim
	if err := v.Get(&c); err != nil {
		return "", err
	}
	return c.WorkerID, nil
}
