// Package gohandlers holds Go workflow handlers that the tests of several
// packages share: the e2e tests run them on a real server and record their
// histories, which the workflows tests replay.
package gohandlers

import (
	"encoding/json"
	"slices"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
)

// GoroutinesName is the task type (and workflow name) Goroutines serves.
const GoroutinesName = "demo.goroutines"

// Goroutines runs its work in coroutines of its own: two uppercase
// activities, each followed by a short timer, whose results come back on
// a channel. Its histories must replay whatever runs its coroutines.
func Goroutines(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	ch := workflow.NewChannel(ctx)
	for i, text := range []string{"left", "right"} {
		workflow.Go(ctx, func(gctx workflow.Context) {
			params, _ := json.Marshal(map[string]string{"text": text})
			var up activities.UppercaseResult
			if err := workflow.ExecuteActivity(gctx, activities.TypeUppercase, activities.HandlerInput{TaskID: in.TaskID, TaskType: activities.TypeUppercase, Params: params}).Get(gctx, &up); err != nil {
				ch.Send(gctx, "error: "+err.Error())
				return
			}
			_ = workflow.Sleep(gctx, time.Duration(i+1)*10*time.Millisecond)
			ch.Send(gctx, up.Uppercase)
		})
	}
	var got []string
	for range 2 {
		var s string
		ch.Receive(ctx, &s)
		got = append(got, s)
	}
	slices.Sort(got)
	return map[string]any{"results": got}, nil
}
