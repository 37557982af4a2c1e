package workflows

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
)

// How a multi-step task shows its progress, without one event in history
// per update.
//
// In Temporal Web, the run's current details (workflow.SetCurrentDetails)
// say how many steps are done and which run or wait; the ProgressQueryName
// query returns the same as a StepProgress.
//
// In TaskManager, runs with changeProgressInHandlers leave the posting to
// the activities they run anyway: each step's handler activity posts, as
// its first attempt starts, the steps done so far (HandlerInput.Progress);
// a step that runs alone (a top-level handler step without for_each)
// posts, when its handler succeeds, the progress its completion makes
// (HandlerInput.ProgressDone); the report posts the last progress with a
// successful outcome when no step did. The workflow hands out each value
// once and only above the last one handed out, and a process never posts
// a value below one it posted, so TaskManager sees progress only go
// forward. Older runs post with one progress local activity per step
// done, as their histories hold.

// ProgressQueryName is the query that returns a multi-step task's
// progress as a StepProgress (`temporal workflow query --type
// tmbridge.progress`, or Temporal Web's Queries tab).
const ProgressQueryName = "tmbridge.progress"

// StepProgress is how far a multi-step task is.
type StepProgress struct {
	// Percent is the steps done, in percent of all the counted steps.
	Percent int `json:"percent"`
	// Message is the first line of the run's current details
	// ("1/3 steps done").
	Message string `json:"message"`
	Done    int    `json:"done"`
	Total   int    `json:"total"`
	// Running are the summaries of the steps whose handler runs
	// ("step b · example.sleep running"), in name order.
	Running []string `json:"running,omitempty"`
	// Waiting say what each waiting step waits for.
	Waiting []string `json:"waiting,omitempty"`
}

// percent is the steps done, in percent.
func (p *pipeline) percent() int {
	return min(p.done*100/max(p.total, 1), 100)
}

func (p *pipeline) stepProgress() StepProgress {
	sp := StepProgress{Percent: p.percent(), Done: p.done, Total: p.total,
		Message: fmt.Sprintf("%d/%d steps done", p.done, p.total)}
	for _, n := range slices.Sorted(maps.Keys(p.running)) {
		sp.Running = append(sp.Running, p.running[n]+" running")
	}
	for _, n := range slices.Sorted(maps.Keys(p.waits)) {
		sp.Waiting = append(sp.Waiting, p.waits[n])
	}
	return sp
}

// showProgress sets the run's current details (Temporal Web's "Current
// Details"): the steps done, then each step running or waiting.
func (p *pipeline) showProgress(ctx workflow.Context) {
	sp := p.stepProgress()
	lines := append(append([]string{sp.Message}, sp.Running...), sp.Waiting...)
	workflow.SetCurrentDetails(ctx, strings.Join(lines, "\n"))
}

// started and ended mark a handler step (or for_each item) name running.
func (p *pipeline) started(ctx workflow.Context, name, summary string) {
	p.running[name] = summary
	p.showProgress(ctx)
}

func (p *pipeline) ended(ctx workflow.Context, name string) {
	delete(p.running, name)
	delete(p.landing, name)
	p.showProgress(ctx)
}

// postsHere reports whether s's handler runs on the bridge's own task
// queue, where handlers post the progress handed to them. A handler routed
// to another queue (a worker in another SDK) may not: it is handed none,
// so the next handler here, or the report, posts what it would have.
func (p *pipeline) postsHere(s Step) bool { return s.options(p.opts, !p.exact).TaskQueue == "" }

// startProgress is the task's progress a handler of step (or item) name
// posts as it starts: the steps done so far, when above what was handed
// out before; else nil.
func (p *pipeline) startProgress(name string) *activities.Progress {
	if !p.inHandlers || p.percent() <= p.shown {
		return nil
	}
	p.shown = p.percent()
	return &activities.Progress{Percent: p.shown, Message: fmt.Sprintf("step %s started (%d/%d steps done)", name, p.done, p.total)}
}

// doneProgress is the task's progress the handler of s posts when it
// succeeds, for a step that runs alone: no other step ends meanwhile.
// record takes it as shown once the step's result is in.
func (p *pipeline) doneProgress(s Step) *activities.Progress {
	if !p.inHandlers || !p.alone[s.Name] {
		return nil
	}
	pct := min((p.done+1)*100/max(p.total, 1), 100)
	if pct <= p.shown {
		return nil
	}
	return &activities.Progress{Percent: pct, Message: fmt.Sprintf("step %s done (%d/%d)", s.Name, p.done+1, p.total)}
}

// finalProgress is the task's last progress, for the report of a success
// to post, when no step posted it.
func (p *pipeline) finalProgress() *activities.Progress {
	if !p.inHandlers || p.percent() <= p.shown {
		return nil
	}
	return &activities.Progress{Percent: p.percent(), Message: fmt.Sprintf("%d/%d steps done", p.done, p.total)}
}

// The progress of runs older than changeProgressInHandlers: one progress
// local activity per step done. Their histories hold these activities,
// so they keep running them.

// reportProgress tells TaskManager how far the steps are; best effort.
func (p *pipeline) reportProgress(ctx workflow.Context, message string) {
	in := activities.ProgressInput{
		TaskID: p.in.Task.ID, WorkerID: p.claims.current.WorkerID,
		Percent: p.percent(), Message: message,
	}
	if p.poster != nil {
		p.poster.SendAsync(in)
		return
	}
	_ = workflow.ExecuteLocalActivity(progressContext(ctx), activities.ProgressActivityName, in).Get(ctx, nil)
}

func progressContext(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
		Summary:             "progress",
	})
}

// startPoster starts the one poster of the task's progress: it posts in
// order, the latest only, and never a value below one it posted, so
// TaskManager never sees progress go back (parallel steps finish in any
// order, and their posts would race).
func (p *pipeline) startPoster(ctx workflow.Context) {
	p.poster = workflow.NewBufferedChannel(ctx, 1024)
	done, settle := workflow.NewFuture(ctx)
	p.posted = done
	workflow.Go(ctx, func(c workflow.Context) {
		defer settle.Set(nil, nil)
		last := -1
		var in activities.ProgressInput
		for p.poster.Receive(c, &in) {
			for p.poster.ReceiveAsync(&in) { // only the latest
			}
			if in.Percent <= last {
				continue
			}
			last = in.Percent
			_ = workflow.ExecuteLocalActivity(progressContext(c), activities.ProgressActivityName, in).Get(c, nil)
		}
	})
}

// flushPoster lets the poster post what is left, before the report.
func (p *pipeline) flushPoster(ctx workflow.Context) {
	p.poster.Close()
	_ = p.posted.Get(ctx, nil)
}
