package workflows

import (
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"

	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
)

// FailOnPanic wraps a Go workflow that handles a task type (`workflow:` in
// the config) so that a panic in it fails its run with the panic's
// message (error type activities.ErrTypePanic, the stack in its details),
// as a handler activity's panic fails its attempt: the task is reported
// failed. Left to the SDK's default panic policy, the run would retry its
// workflow task forever and the task would never be reported.
//
// The workflow runs in a coroutine of the wrapper, which waits for it to
// return or for a panic in any coroutine it started (workflow.Go,
// workflow.GoNamed; not those of an update handler, which the SDK starts):
// those are seen with GoroutinePanics among the worker's interceptors (the
// bridge's worker has it); without it, only a panic of the workflow's own
// coroutine is. The SDK's own panics (a nondeterminism error) and a panic
// after the workflow's result was decided are left to the SDK, which
// retries the workflow task. The wrapper adds no command: runs started by
// an older bridge replay.
//
// fn must be a workflow function whose last result is an error; anything
// else is returned as it is, for the worker's registration to refuse.
func FailOnPanic(name string, fn any) any {
	v := reflect.ValueOf(fn)
	if !v.IsValid() {
		return fn
	}
	t := v.Type()
	errType := reflect.TypeFor[error]()
	ctxType := reflect.TypeFor[workflow.Context]()
	if t.Kind() != reflect.Func || t.NumIn() == 0 || t.In(0) != ctxType || t.NumOut() == 0 || t.Out(t.NumOut()-1) != errType {
		return fn
	}
	failed := func(err error) []reflect.Value {
		out := make([]reflect.Value, t.NumOut())
		for i := range t.NumOut() - 1 {
			out[i] = reflect.Zero(t.Out(i))
		}
		out[len(out)-1] = reflect.ValueOf(&err).Elem()
		return out
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		ctx := args[0].Interface().(workflow.Context)
		sink := &panicSink{workflow: name}
		ctx = workflow.WithValue(ctx, panicSinkKey{}, sink)
		var out []reflect.Value
		workflow.Go(ctx, func(gctx workflow.Context) {
			defer sink.catch(gctx)
			in := append([]reflect.Value{reflect.ValueOf(gctx)}, args[1:]...)
			out = v.Call(in)
		})
		// Disconnected: a cancel of the run is the workflow's to handle.
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		_ = workflow.Await(dctx, func() bool { return out != nil || sink.err != nil })
		sink.closed = true
		if sink.err != nil {
			return failed(sink.err)
		}
		if err, _ := out[len(out)-1].Interface().(error); err != nil {
			out[len(out)-1] = reflect.ValueOf(activities.ValidUTF8Error(err)).Convert(errType)
		}
		return out
	}).Interface()
}

// panicSink holds the first panic of a Go workflow handler's coroutines.
type panicSink struct {
	workflow string
	err      error
	closed   bool // the run's result is decided: a later panic is the SDK's
}

type panicSinkKey struct{}

// catch, deferred in a coroutine, turns its panic into the run's error.
// The SDK's own panics (a nondeterminism error is one) and a panic after
// the run's result was decided go on to the SDK, which fails the
// workflow task and retries it, as without the wrapper: a run whose code
// does not fit its history must wait for code that does, not fail.
func (s *panicSink) catch(ctx workflow.Context) {
	r := recover() // nil for the SDK's runtime.Goexit of a coroutine
	if r == nil {
		return
	}
	if s.closed || sdkPanic(r) {
		panic(r)
	}
	if s.err != nil {
		return // the first panic fails the run
	}
	stack := taskmanager.ValidUTF8(string(debug.Stack()))
	workflow.GetLogger(ctx).Error("Go workflow handler panicked", "workflow", s.workflow, "panic", fmt.Sprint(r), "stack", stack)
	// Valid UTF-8, or Temporal could not take the failure (see
	// activities.ValidUTF8Error).
	s.err = temporal.NewApplicationErrorWithOptions(taskmanager.ValidUTF8(fmt.Sprintf("workflow %s panicked: %v", s.workflow, r)), activities.ErrTypePanic,
		temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{stack}})
}

// sdkPanic reports whether a panic value is one of the Temporal SDK's own
// (its nondeterminism panic, stateMachineIllegalStatePanic, among them).
func sdkPanic(r any) bool {
	t := reflect.TypeOf(r)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && strings.HasPrefix(t.PkgPath(), "go.temporal.io/sdk/")
}

// GoroutinePanics returns the worker interceptor that lets FailOnPanic
// see a panic in a coroutine that a Go workflow handler started
// (workflow.Go, workflow.GoNamed): its run fails with it, as with a panic
// of the handler's own coroutine. It changes nothing for other workflows.
func GoroutinePanics() interceptor.WorkerInterceptor { return &goroutinePanics{} }

type goroutinePanics struct {
	interceptor.WorkerInterceptorBase
}

func (*goroutinePanics) InterceptWorkflow(_ workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	return &panicsInbound{WorkflowInboundInterceptorBase: interceptor.WorkflowInboundInterceptorBase{Next: next}}
}

type panicsInbound struct {
	interceptor.WorkflowInboundInterceptorBase
}

func (i *panicsInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	return i.Next.Init(&panicsOutbound{WorkflowOutboundInterceptorBase: interceptor.WorkflowOutboundInterceptorBase{Next: outbound}})
}

type panicsOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
}

// Go starts f in a coroutine that, in a Go workflow handler's run, hands
// its panic to the run's sink.
func (o *panicsOutbound) Go(ctx workflow.Context, name string, f func(ctx workflow.Context)) workflow.Context {
	sink, ok := ctx.Value(panicSinkKey{}).(*panicSink)
	if !ok {
		return o.Next.Go(ctx, name, f)
	}
	return o.Next.Go(ctx, name, func(gctx workflow.Context) {
		defer sink.catch(gctx)
		f(gctx)
	})
}

// Registrar is the part of a Temporal worker (or test environment) that
// registers workflows.
type Registrar interface {
	RegisterWorkflowWithOptions(w any, options workflow.RegisterOptions)
}

// RegisterGo registers fn as the Go workflow handler name, wrapped in
// FailOnPanic, on r (whose worker must have GoroutinePanics among its
// interceptors). It refuses an empty name or one with spaces around it, a
// name of the bridge's own (tmbridge.), a nil function, and what the SDK
// refuses (a function it cannot take, a name taken), with an error
// instead of the SDK's panic.
func RegisterGo(r Registrar, name string, fn any) (err error) {
	if strings.TrimSpace(name) == "" || strings.TrimSpace(name) != name {
		return fmt.Errorf("workflow %q: an empty name, or spaces around it", name)
	}
	if strings.HasPrefix(name, activities.ReservedPrefix) {
		return fmt.Errorf("workflow %q: names starting with %q are the bridge's own", name, activities.ReservedPrefix)
	}
	if v := reflect.ValueOf(fn); !v.IsValid() || (v.Kind() == reflect.Func && v.IsNil()) {
		return fmt.Errorf("workflow %q: nil workflow function", name)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("workflow %q: %v", name, p)
		}
	}()
	r.RegisterWorkflowWithOptions(FailOnPanic(name, fn), workflow.RegisterOptions{Name: name})
	return nil
}
