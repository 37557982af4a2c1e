package bridge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/trace"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/prismq/tmbridge/workflows"
)

// fakeTemporal is an in-memory Temporal for the claim bookkeeping: runs are
// created by starts and closed by the test; it can lose a start's answer
// after creating the run, refuse starts for good, and go unreachable.
type fakeTemporal struct {
	mu   sync.Mutex
	runs map[string][]*fakeRun // by workflow id, oldest first
	n    int

	// loseStartAnswers: the next starts create their run, then answer
	// Unavailable (the answer was lost).
	loseStartAnswers int
	// refuse, when it returns an error for a start's input, refuses it.
	refuse func(in workflows.TaskInput) error
	// beforeSignal is called (f.mu held) as a signal of a claim arrives,
	// before it is delivered.
	beforeSignal func(id string, claim workflows.Claim)
	// noSearchAttributes: the namespace lacks TaskType and TaskID; a start
	// that sets them is refused, as Temporal refuses it.
	noSearchAttributes bool
	// closeOnStart closes each run as soon as it starts (a fast handler).
	closeOnStart bool
	// down: every call fails as if Temporal were unreachable.
	down bool
	// changed is closed and replaced whenever runs change.
	changed chan struct{}
	// lists are the list queries asked, and rows the runs they returned.
	lists []string
	rows  int
	// refuseNamedLists: a list naming workflow ids answers InvalidArgument.
	refuseNamedLists bool
}

type fakeRun struct {
	id, runID string
	memo      map[string]any
	input     workflows.TaskInput
	closed    chan struct{}
	signals   []workflows.Claim
	span      trace.SpanContext // the trace span the start was made under
}

func newFakeTemporal() *fakeTemporal {
	return &fakeTemporal{runs: map[string][]*fakeRun{}, changed: make(chan struct{})}
}

var errDown = serviceerror.NewUnavailable("fake Temporal is down")

func (f *fakeTemporal) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeTemporal) latest(id string) *fakeRun {
	rs := f.runs[id]
	if len(rs) == 0 {
		return nil
	}
	return rs[len(rs)-1]
}

func isClosed(r *fakeRun) bool {
	select {
	case <-r.closed:
		return true
	default:
		return false
	}
}

func (f *fakeTemporal) ExecuteWorkflow(ctx context.Context, opts client.StartWorkflowOptions, _ any, args ...any) (client.WorkflowRun, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	in := args[0].(workflows.TaskInput)
	if f.noSearchAttributes && opts.TypedSearchAttributes.Size() > 0 {
		return nil, serviceerror.NewInvalidArgument("Namespace default has no mapping defined for search attribute TaskType")
	}
	if f.refuse != nil {
		if err := f.refuse(in); err != nil {
			return nil, err
		}
	}
	if r := f.latest(opts.ID); r != nil && !isClosed(r) {
		return nil, serviceerror.NewWorkflowExecutionAlreadyStarted("already started", "", r.runID)
	}
	f.n++
	r := &fakeRun{id: opts.ID, runID: fmt.Sprintf("run-%d", f.n), memo: opts.Memo, input: in, closed: make(chan struct{}), span: trace.SpanContextFromContext(ctx)}
	f.runs[opts.ID] = append(f.runs[opts.ID], r)
	if f.closeOnStart {
		close(r.closed)
	}
	f.notify()
	if f.loseStartAnswers > 0 {
		f.loseStartAnswers--
		return nil, errDown
	}
	return fakeWorkflowRun{f: f, id: opts.ID, runID: r.runID}, nil
}

func (f *fakeTemporal) SignalWorkflow(ctx context.Context, id, runID, _ string, arg any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	if f.beforeSignal != nil {
		f.beforeSignal(id, arg.(workflows.Claim))
	}
	if runID == "" { // the latest run, as Temporal takes it
		if r := f.latest(id); r != nil {
			runID = r.runID
		}
	}
	for _, r := range f.runs[id] {
		if r.runID == runID && !isClosed(r) {
			r.signals = append(r.signals, arg.(workflows.Claim))
			f.notify()
			return nil
		}
	}
	return serviceerror.NewNotFound("no open run")
}

func (f *fakeTemporal) DescribeWorkflowExecution(ctx context.Context, id, _ string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	r := f.latest(id)
	if r == nil {
		return nil, serviceerror.NewNotFound("no such workflow")
	}
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: r.info()}, nil
}

func (r *fakeRun) info() *workflowpb.WorkflowExecutionInfo {
	memo := &commonpb.Memo{Fields: map[string]*commonpb.Payload{}}
	for k, v := range r.memo {
		p, _ := converter.GetDefaultDataConverter().ToPayload(v)
		memo.Fields[k] = p
	}
	status := enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	if isClosed(r) {
		status = enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED
	}
	return &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: r.id, RunId: r.runID},
		Status:    status, Memo: memo,
	}
}

func (f *fakeTemporal) GetWorkflow(ctx context.Context, id, runID string) client.WorkflowRun {
	return fakeWorkflowRun{f: f, id: id, runID: runID}
}

func (f *fakeTemporal) ListWorkflow(ctx context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	q := req.GetQuery()
	f.lists = append(f.lists, q)
	if f.refuseNamedLists && strings.Contains(q, "WorkflowId IN") {
		return nil, serviceerror.NewInvalidArgument("operator IN not supported")
	}
	wantClosed := strings.Contains(q, "ExecutionStatus != 'Running'")
	var named []string // WorkflowId IN ('a','b'), as the closer writes it
	if _, in, ok := strings.Cut(q, "WorkflowId IN ('"); ok {
		in, _, _ = strings.Cut(in, "')")
		named = strings.Split(in, "','")
	}
	resp := &workflowservice.ListWorkflowExecutionsResponse{}
	for id := range f.runs {
		if r := f.latest(id); isClosed(r) == wantClosed && (named == nil || slices.Contains(named, id)) {
			resp.Executions = append(resp.Executions, r.info())
		}
	}
	f.rows += len(resp.Executions)
	return resp, nil
}

func (f *fakeTemporal) CheckHealth(ctx context.Context, _ *client.CheckHealthRequest) (*client.CheckHealthResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	return &client.CheckHealthResponse{}, nil
}

// setDown makes Temporal unreachable or reachable again.
// openRun adds an open run, as one a bridge started earlier.
func (f *fakeTemporal) openRun(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.runs[id] = append(f.runs[id], &fakeRun{id: id, runID: fmt.Sprintf("run-%d", f.n), closed: make(chan struct{})})
	f.notify()
}

func (f *fakeTemporal) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	f.notify()
}

// close closes the latest run of id.
func (f *fakeTemporal) close(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.latest(id); r != nil && !isClosed(r) {
		close(r.closed)
	}
	f.notify()
}

// snapshot returns a copy of the runs of id.
func (f *fakeTemporal) snapshot(id string) []fakeRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRun
	for _, r := range f.runs[id] {
		c := *r
		c.signals = append([]workflows.Claim(nil), r.signals...)
		out = append(out, c)
	}
	return out
}

// runCount returns how many runs were started in all.
func (f *fakeTemporal) runCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

type fakeWorkflowRun struct {
	f         *fakeTemporal
	id, runID string
}

func (r fakeWorkflowRun) GetID() string    { return r.id }
func (r fakeWorkflowRun) GetRunID() string { return r.runID }
func (r fakeWorkflowRun) Get(ctx context.Context, _ any) error {
	for {
		r.f.mu.Lock()
		down, run, changed := r.f.down, r.f.latest(r.id), r.f.changed
		if r.runID != "" {
			for _, x := range r.f.runs[r.id] {
				if x.runID == r.runID {
					run = x
				}
			}
		}
		r.f.mu.Unlock()
		if down {
			return errDown // the history long poll fails while Temporal is away
		}
		if run == nil {
			return serviceerror.NewNotFound("no such workflow")
		}
		select {
		case <-run.closed:
			return nil
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
func (r fakeWorkflowRun) GetWithOptions(ctx context.Context, v any, _ client.WorkflowRunGetOptions) error {
	return r.Get(ctx, v)
}
func (r fakeWorkflowRun) GetFirstExecutionRunID() string { return r.runID }
