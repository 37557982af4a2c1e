package workflows

import (
	"fmt"
	"reflect"
	"runtime/debug"

	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
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
// workflow.GoNamed): those are seen with GoroutinePanics among the
// worker's interceptors (the bridge's worker has it); without it, only
// a panic of the workflow's own coroutine is. The wrapper adds no command:
// runs started by an older bridge replay.
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
			defer sink.catch()
			in := append([]reflect.Value{reflect.ValueOf(gctx)}, args[1:]...)
			out = v.Call(in)
		})
		// Disconnected: a cancel of the run is the workflow's to handle.
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		_ = workflow.Await(dctx, func() bool { return out != nil || sink.err != nil })
		if sink.err != nil {
			return failed(sink.err)
		}
		return out
	}).Interface()
}

// panicSink holds the first panic of a Go workflow handler's coroutines.
type panicSink struct {
	workflow string
	err      error
}

type panicSinkKey struct{}

// catch, deferred in a coroutine, turns its panic into the run's error.
func (s *panicSink) catch() {
	r := recover() // nil for the SDK's runtime.Goexit of a coroutine
	if r == nil || s.err != nil {
		return
	}
	s.err = temporal.NewApplicationErrorWithOptions(fmt.Sprintf("workflow %s panicked: %v", s.workflow, r), activities.ErrTypePanic,
		temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{string(debug.Stack())}})
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
		defer sink.catch()
		f(gctx)
	})
}
