package activities_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A read-first report of claim 1 posts a failure; between
// its read and its post the claim timed out and this same worker claimed
// the task again (claim 2, a renewal). TaskManager takes the post for
// claim 2, which is over. The read after the post is what tells the
// workflow so (newerClaimOver); when that read fails (one 503), Report
// still answers success with no ReadStatus/ReadAttempts, and the workflow
// continued as new for claim 2 (task.go: newerClaimOver is false), running
// the handler for a task that is pending, not claimed. Now the report says
// the read back failed (the workflow reads the task itself). (Found by a
// review; a report retried instead, another review found, judged a task
// that may have moved on since: another worker's outcome read as ours
// not landing.)
func TestReport_read_after_the_post_fails(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k", ClaimTimeout: time.Second, Now: clock.Now})
	base := tm.Start(t)
	direct, err := taskmanager.New(taskmanager.Options{BaseURL: base, APIKey: "k"})
	require.NoError(t, err)
	ctx := context.Background()
	task := claimed(t, direct, "test.a", map[string]any{"x": 1})
	typ, err := direct.GetTaskType(ctx, "test.a")
	require.NoError(t, err)
	var posted, readFailed atomic.Bool
	hooked := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/complete") && !posted.Swap(true):
			// On its way in, claim 1 times out and this worker claims
			// the task again: the post lands on claim 2.
			clock.Add(2 * time.Second)
			again, err := direct.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typ.ID})
			if err != nil || again.Attempts != 2 {
				t.Errorf("claim again: %v (attempts %d)", err, again.Attempts)
			}
		case r.Method == http.MethodGet && posted.Load() && !readFailed.Swap(true):
			// The read after the post fails once.
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"success":false,"error":"busy"}`)), Request: r}, nil
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: base, APIKey: "k", HTTPClient: &http.Client{Transport: hooked}})
	require.NoError(t, err)
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "boom", ReadFirst: true}
	out, err := activities.Report(ctx, api, in)
	require.NoError(t, err, "the outcome landed")
	st, _ := tm.Task(string(task.ID))
	require.Equal(t, "pending", st.Status, "the old post ended claim 2")
	require.True(t, readFailed.Load())
	require.Equal(t, "pending (retry)", out.Status)
	require.True(t, out.ReadBackFailed, "which claim the post ended is not known: the workflow reads")
	require.Empty(t, out.ReadStatus)
}
