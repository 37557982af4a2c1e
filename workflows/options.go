package workflows

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/internal/valid"
)

// TypeOptions are the per-type options a task's workflow runs with. They
// travel in the workflow input, so adding or changing a type never changes
// workflow code. The bridge resolves them (Config.TypeOptions: merged over
// type_defaults, then WithDefaults) before a run starts; the workflow takes
// them as they are.
type TypeOptions struct {
	// Handler is the activity that runs the task; default: the task type
	// name (each registered handler is an activity named after its type).
	Handler string `json:"handler,omitempty" koanf:"handler"`
	// ActivityOptions say how the handler (and each step) runs.
	ActivityOptions `koanf:",squash"`
	// ClaimWait is how long the report waits for a new claim after
	// TaskManager says the task is claimed by another worker (403) before
	// it gives up with "claim lost", and how long a multi-step run waits
	// for the signal of a claim a read showed past its own. Default 2m.
	ClaimWait time.Duration `json:"claim_wait,omitempty" koanf:"claim_wait"`
	// Workflow, when set, runs the task as a child workflow of that
	// registered type instead of one handler activity.
	Workflow string `json:"workflow,omitempty" koanf:"workflow"`
	// Steps, when set, run the task as a sequence of steps (see Step).
	Steps []Step `json:"steps,omitempty" koanf:"steps"`
}

// ActivityOptions say where and how a handler runs: a type's, and a step's
// overrides of them (a step's unset fields take its type's).
type ActivityOptions struct {
	// TaskQueue the handler runs on; default: the bridge's own. Another
	// queue lets a worker written with any Temporal SDK serve the type.
	TaskQueue string `json:"task_queue,omitempty" koanf:"task_queue"`
	// Local runs the handler and the report as local activities: far less
	// load on Temporal per task, for handlers that finish in seconds.
	// Default false.
	Local *bool `json:"local,omitempty" koanf:"local"`
	// StartToCloseTimeout bounds one attempt of the handler. Default 5m.
	StartToCloseTimeout time.Duration `json:"start_to_close_timeout,omitempty" koanf:"start_to_close_timeout"`
	// ScheduleToCloseTimeout bounds all attempts together; 0: no bound.
	ScheduleToCloseTimeout time.Duration `json:"schedule_to_close_timeout,omitempty" koanf:"schedule_to_close_timeout"`
	// HeartbeatTimeout: a handler attempt not heard from for this long is
	// retried elsewhere (handlers heartbeat automatically). Default 10s.
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout,omitempty" koanf:"heartbeat_timeout"`
	// Retry is the handler's retry policy.
	Retry RetryOptions `json:"retry,omitzero" koanf:"retry"`
}

// IsLocal reports whether the handler runs as a local activity.
func (o ActivityOptions) IsLocal() bool { return o.Local != nil && *o.Local }

// Bool returns a pointer to v, for ActivityOptions.Local.
func Bool(v bool) *bool { return &v }

// over returns o with each unset field taken from base. A step routed to
// another task queue is not local unless it says so.
func (o ActivityOptions) over(base ActivityOptions) ActivityOptions {
	if o.TaskQueue != "" && o.Local == nil {
		o.Local = Bool(false)
	}
	o.TaskQueue = cmp.Or(o.TaskQueue, base.TaskQueue)
	o.Local = cmp.Or(o.Local, base.Local)
	o.StartToCloseTimeout = cmp.Or(o.StartToCloseTimeout, base.StartToCloseTimeout)
	o.ScheduleToCloseTimeout = cmp.Or(o.ScheduleToCloseTimeout, base.ScheduleToCloseTimeout)
	o.HeartbeatTimeout = cmp.Or(o.HeartbeatTimeout, base.HeartbeatTimeout)
	o.Retry = o.Retry.over(base.Retry)
	return o
}

// RetryOptions is a Temporal retry policy. Zero fields take the defaults.
type RetryOptions struct {
	InitialInterval        time.Duration `json:"initial_interval,omitempty" koanf:"initial_interval"`                   // default 1s
	BackoffCoefficient     float64       `json:"backoff_coefficient,omitempty" koanf:"backoff_coefficient"`             // default 2
	MaximumInterval        time.Duration `json:"maximum_interval,omitempty" koanf:"maximum_interval"`                   // default 1m, or initial_interval if longer
	MaximumAttempts        int32         `json:"maximum_attempts,omitempty" koanf:"maximum_attempts"`                   // default 3; -1: unlimited
	NonRetryableErrorTypes []string      `json:"non_retryable_error_types,omitempty" koanf:"non_retryable_error_types"` // matched on ApplicationError types
}

// over returns r with each unset field taken from base. An inherited
// maximum_interval shorter than r's own initial_interval is raised to it:
// backoff never waits less than the first wait.
func (r RetryOptions) over(base RetryOptions) RetryOptions {
	ownMax := r.MaximumInterval != 0
	r.InitialInterval = cmp.Or(r.InitialInterval, base.InitialInterval)
	r.BackoffCoefficient = cmp.Or(r.BackoffCoefficient, base.BackoffCoefficient)
	r.MaximumInterval = cmp.Or(r.MaximumInterval, base.MaximumInterval)
	r.MaximumAttempts = cmp.Or(r.MaximumAttempts, base.MaximumAttempts)
	if r.NonRetryableErrorTypes == nil {
		r.NonRetryableErrorTypes = base.NonRetryableErrorTypes
	}
	if !ownMax && r.MaximumInterval < r.InitialInterval {
		r.MaximumInterval = r.InitialInterval
	}
	return r
}

// isZero reports whether no retry option is set.
func (r RetryOptions) isZero() bool {
	return r.InitialInterval == 0 && r.BackoffCoefficient == 0 && r.MaximumInterval == 0 && r.MaximumAttempts == 0 && r.NonRetryableErrorTypes == nil
}

// Defaults of TypeOptions.
const (
	DefaultStartToCloseTimeout = 5 * time.Minute
	DefaultHeartbeatTimeout    = 10 * time.Second
	DefaultClaimWait           = 2 * time.Minute
	DefaultMaximumAttempts     = 3
	// MinHeartbeatTimeout is the shortest heartbeat_timeout accepted. The
	// bridge sends a handler's heartbeats to Temporal every 0.7 ×
	// heartbeat_timeout (another worker's SDK, at most every 0.8 ×), so
	// what is left for a slow network or a pause is about 1.4 s at this
	// bound (1 s on another worker): too little to send a beat again
	// after a call that failed, as the bridge does with longer timeouts.
	MinHeartbeatTimeout = 5 * time.Second
)

// defaultActivityOptions are what an unset field of a type's
// ActivityOptions becomes (a remote handler's heartbeat aside).
var defaultActivityOptions = ActivityOptions{
	Local:               Bool(false),
	StartToCloseTimeout: DefaultStartToCloseTimeout,
	Retry: RetryOptions{
		InitialInterval: time.Second, BackoffCoefficient: 2,
		MaximumInterval: time.Minute, MaximumAttempts: DefaultMaximumAttempts,
	},
}

// DefaultTypeOptions returns the options a type gets when none are set.
func DefaultTypeOptions() TypeOptions { return TypeOptions{}.WithDefaults() }

// WithDefaults returns o with every unset field set to its default and
// every step named: the one place defaults are filled. The bridge calls it
// once per type (Config.TypeOptions).
func (o TypeOptions) WithDefaults() TypeOptions {
	o.ActivityOptions = o.ActivityOptions.over(defaultActivityOptions).withHeartbeat()
	o.ClaimWait = cmp.Or(o.ClaimWait, DefaultClaimWait)
	o.Steps = resolveSteps(o.Steps, o.ActivityOptions)
	return o
}

// withHeartbeat gives a handler that runs elsewhere than in the bridge's
// own workflow task (not local) the default heartbeat timeout.
func (o ActivityOptions) withHeartbeat() ActivityOptions {
	if o.HeartbeatTimeout == 0 && !o.IsLocal() {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	return o
}

// resolveSteps names each step and resolves its options over its type's
// (a parallel group's steps: over the group's, then the type's), so that
// the workflow takes them as they are. It never writes into the caller's
// slices.
func resolveSteps(steps []Step, parent ActivityOptions) []Step {
	steps = slices.Clone(steps)
	for i, s := range steps {
		s.Name = s.name()
		if s.Handler != "" {
			s.ActivityOptions = s.ActivityOptions.over(parent).withHeartbeat()
		}
		s.Parallel = resolveSteps(s.Parallel, s.ActivityOptions.over(parent))
		s.OnFailure = resolveSteps(s.OnFailure, parent)
		steps[i] = s
	}
	return steps
}

// HandlerFor is the activity that runs a task of taskType with these
// options: Handler, or the type's own name.
func (o TypeOptions) HandlerFor(taskType string) string { return cmp.Or(o.Handler, taskType) }

// Validate reports every invalid option, each naming its key by its path
// (retry.maximum_attempts, steps[1].params.message).
func (o TypeOptions) Validate() error {
	errs := o.ActivityOptions.validate()
	if err := valid.RangeOrZero("claim_wait", o.ClaimWait, time.Second, valid.Day); err != nil {
		errs = append(errs, err)
	}
	if o.Workflow != "" && len(o.Steps) > 0 {
		errs = append(errs, errors.New("workflow: set workflow or steps, not both"))
	}
	all := map[string]bool{}
	signals := map[string]bool{}
	for _, s := range named(o.Steps) {
		if all[s.name()] {
			errs = append(errs, fmt.Errorf("steps: name %q is used twice (give the steps distinct names)", s.name()))
		}
		all[s.name()] = true
		if w := s.WaitFor; w != nil {
			if signals[w.Signal] {
				errs = append(errs, fmt.Errorf("steps: two wait_for steps wait for signal %q: one signal would end both", w.Signal))
			}
			signals[w.Signal] = true
		}
	}
	before := map[string]bool{}
	for i, s := range o.Steps {
		for _, err := range s.validate(scope{before: before, all: all}) {
			errs = append(errs, fmt.Errorf("steps[%d].%w", i, err))
		}
		for _, l := range named([]Step{s}) {
			before[l.name()] = true
		}
	}
	// Retry intervals are checked as they will run: merged over the
	// type's (a step's) and the defaults.
	res := o.WithDefaults()
	errs = append(errs, res.Retry.check("")...)
	var walk func(path string, steps []Step)
	walk = func(path string, steps []Step) {
		for i, s := range steps {
			at := fmt.Sprintf("%s[%d].", path, i)
			if s.Handler != "" {
				errs = append(errs, s.Retry.check(at)...)
			}
			walk(at+"parallel", s.Parallel)
			walk(at+"on_failure", s.OnFailure)
		}
	}
	walk("steps", res.Steps)
	return errors.Join(errs...)
}

// named returns every step with a result entry: the steps that run
// something, fallbacks, and named parallel groups.
func named(steps []Step) []Step {
	var out []Step
	for _, s := range steps {
		if len(s.Parallel) == 0 || s.Name != "" {
			out = append(out, s)
		}
		out = append(out, named(s.Parallel)...)
		out = append(out, named(s.OnFailure)...)
	}
	return out
}

// check reports resolved retry options that Temporal would refuse.
func (r RetryOptions) check(path string) []error {
	if r.MaximumInterval < r.InitialInterval {
		return []error{fmt.Errorf("%sretry.maximum_interval: must be at least retry.initial_interval (%s), got %s", path, r.InitialInterval, r.MaximumInterval)}
	}
	return nil
}

// validate checks each option against its valid range.
func (o ActivityOptions) validate() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(valid.RangeOrZero("start_to_close_timeout", o.StartToCloseTimeout, time.Second, 30*valid.Day))
	add(valid.RangeOrZero("schedule_to_close_timeout", o.ScheduleToCloseTimeout, time.Second, 365*valid.Day))
	if o.HeartbeatTimeout != 0 && o.HeartbeatTimeout < MinHeartbeatTimeout {
		add(fmt.Errorf("heartbeat_timeout: must be at least %s, got %s: Temporal hears a handler's heartbeats every 0.7 × heartbeat_timeout plus a call's round trip (0.8 × on another worker), so a shorter one times out attempts that are alive", MinHeartbeatTimeout, o.HeartbeatTimeout))
	} else {
		add(valid.RangeOrZero("heartbeat_timeout", o.HeartbeatTimeout, MinHeartbeatTimeout, valid.Day))
	}
	add(valid.RangeOrZero("retry.initial_interval", o.Retry.InitialInterval, 10*time.Millisecond, valid.Day))
	add(valid.RangeOrZero("retry.maximum_interval", o.Retry.MaximumInterval, 10*time.Millisecond, 7*valid.Day))
	add(valid.RangeOrZero("retry.backoff_coefficient", o.Retry.BackoffCoefficient, 1, 100))
	add(valid.Range("retry.maximum_attempts", o.Retry.MaximumAttempts, -1, 10_000))
	if o.IsLocal() && o.TaskQueue != "" {
		add(errors.New("local: a local handler runs in the bridge itself, so it cannot have a task_queue"))
	}
	return errs
}

func (r RetryOptions) policy() *temporal.RetryPolicy {
	attempts := r.MaximumAttempts
	if attempts < 0 {
		attempts = 0 // Temporal: 0 means unlimited
	}
	return &temporal.RetryPolicy{
		InitialInterval:        r.InitialInterval,
		BackoffCoefficient:     r.BackoffCoefficient,
		MaximumInterval:        r.MaximumInterval,
		MaximumAttempts:        attempts,
		NonRetryableErrorTypes: r.NonRetryableErrorTypes,
	}
}

// activityContext returns ctx with the activity or local activity options
// of o, ready for ExecuteActivity or ExecuteLocalActivity. summary is what
// Temporal Web shows for the activity (user metadata: replay ignores it).
func (o ActivityOptions) activityContext(ctx workflow.Context, summary string) workflow.Context {
	if o.IsLocal() {
		return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout:    o.StartToCloseTimeout,
			ScheduleToCloseTimeout: o.localScheduleToClose(),
			RetryPolicy:            o.Retry.policy(),
			Summary:                summary,
		})
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              o.TaskQueue,
		StartToCloseTimeout:    o.StartToCloseTimeout,
		ScheduleToCloseTimeout: o.ScheduleToCloseTimeout,
		HeartbeatTimeout:       o.HeartbeatTimeout,
		RetryPolicy:            o.Retry.policy(),
		Summary:                summary,
	})
}

// localScheduleToClose bounds a local activity's attempts together. The SDK
// would take the start-to-close timeout, leaving no room for retries, so
// without a set value it allows every attempt its full time and backoff.
func (o ActivityOptions) localScheduleToClose() time.Duration {
	if o.ScheduleToCloseTimeout > 0 {
		return o.ScheduleToCloseTimeout
	}
	if o.Retry.MaximumAttempts <= 0 {
		return 24 * time.Hour
	}
	n := time.Duration(o.Retry.MaximumAttempts)
	per := o.StartToCloseTimeout + o.Retry.MaximumInterval
	if per > 0 && n > maxLocalScheduleToClose/per {
		return maxLocalScheduleToClose // n × per would overflow, or near it
	}
	return n * per
}

// maxLocalScheduleToClose caps localScheduleToClose: valid options (720h
// start-to-close, 10,000 attempts) would overflow a time.Duration, which
// the SDK then refuses as negative.
const maxLocalScheduleToClose = 10 * 365 * 24 * time.Hour

// executeHandler is execute for a task's handler or a step's: when its
// activity is cancelled (the run is, or the step's group), a regular
// activity's future is ready only once the handler stopped
// (WaitForCancellation), so that the run goes on after it, and a new
// claim's run cannot start while it still runs.
func (o ActivityOptions) executeHandler(ctx workflow.Context, summary, name string, args ...any) workflow.Future {
	if o.IsLocal() {
		return o.execute(ctx, summary, name, args...)
	}
	return workflow.ExecuteActivity(workflow.WithWaitForCancellation(o.activityContext(ctx, summary), true), name, args...)
}

// execute runs the named activity with o's options, locally or not, under
// summary (see activityContext).
func (o ActivityOptions) execute(ctx workflow.Context, summary, name string, args ...any) workflow.Future {
	ctx = o.activityContext(ctx, summary)
	if o.IsLocal() {
		return workflow.ExecuteLocalActivity(ctx, name, args...)
	}
	return workflow.ExecuteActivity(ctx, name, args...)
}
