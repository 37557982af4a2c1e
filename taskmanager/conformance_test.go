package taskmanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

const testKey = "s3cret-key-never-logged"

type testBundle struct {
	srv    *devserver.Server
	client *taskmanager.Client
	url    string
	clock  *devserver.Clock
}

func setup(t *testing.T, style devserver.Style, opts ...func(*devserver.Options)) testBundle {
	t.Helper()
	clock := devserver.NewClock(time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC))
	o := devserver.Options{Style: style, APIKey: testKey, Now: clock.Now}
	for _, f := range opts {
		f(&o)
	}
	srv := devserver.New(o)
	url := srv.Start(t)
	c, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: testKey, Timeout: 5 * time.Second})
	require.NoError(t, err)
	return testBundle{srv: srv, client: c, url: url, clock: clock}
}

var echoSchema = json.RawMessage(`{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}`)

func (b testBundle) register(t *testing.T, name string) taskmanager.ID {
	t.Helper()
	r, err := b.client.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1.0.0", ParamSchema: echoSchema})
	require.NoError(t, err)
	require.NotEmpty(t, r.ID)
	return r.ID
}

func requireKind(t *testing.T, err error, kind error, status int) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, kind)
	var e *taskmanager.Error
	require.True(t, errors.As(err, &e), "want *taskmanager.Error, got %T", err)
	if status != 0 {
		require.Equal(t, status, e.Status, err.Error())
	}
	require.NotContains(t, err.Error(), testKey)
}

// TestConformance runs the whole client against the dev server in both answer styles.
func TestConformance(t *testing.T) {
	for _, style := range []devserver.Style{devserver.StyleDocumented, devserver.StylePHP} {
		t.Run(string(style), func(t *testing.T) {
			t.Parallel()
			runConformance(t, style)
		})
	}
}

func runConformance(t *testing.T, style devserver.Style) {
	ctx := context.Background()
	php := style == devserver.StylePHP

	t.Run("health_needs_no_key", func(t *testing.T) {
		b := setup(t, style)
		c, err := taskmanager.New(taskmanager.Options{BaseURL: b.url})
		require.NoError(t, err)
		h, err := c.Health(ctx)
		require.NoError(t, err)
		require.Equal(t, "healthy", h.Status)
	})

	t.Run("unauthorized", func(t *testing.T) {
		b := setup(t, style)
		c, err := taskmanager.New(taskmanager.Options{BaseURL: b.url, APIKey: "wrong-" + testKey})
		require.NoError(t, err)
		_, err = c.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: "1"})
		requireKind(t, err, taskmanager.ErrUnauthorized, 401)
		require.Contains(t, err.Error(), "Invalid or missing API key")
		require.True(t, taskmanager.Retryable(err))
	})

	t.Run("task_types", func(t *testing.T) {
		b := setup(t, style)
		id := b.register(t, "example.echo")
		again := b.register(t, "example.echo")
		require.Equal(t, id, again, "an update keeps the id")
		other := b.register(t, "example.other")
		require.NotEqual(t, id, other)

		tt, err := b.client.GetTaskType(ctx, "example.echo")
		require.NoError(t, err)
		require.Equal(t, id, tt.ID)
		require.Equal(t, "example.echo", tt.Name)
		require.True(t, bool(tt.IsActive))
		require.JSONEq(t, string(echoSchema), string(tt.ParamSchema))

		_, err = b.client.GetTaskType(ctx, "nope")
		requireKind(t, err, taskmanager.ErrNotFound, 0)

		list, err := b.client.ListTaskTypes(ctx, true)
		if php {
			requireKind(t, err, taskmanager.ErrTransient, 500)
			require.Contains(t, err.Error(), "resolve types one by one")
		} else {
			require.NoError(t, err)
			require.Len(t, list, 2)
		}
		resolved, err := b.client.ResolveTaskTypes(ctx, []string{"example.other", "example.echo"})
		require.NoError(t, err)
		require.Equal(t, []taskmanager.ID{other, id}, []taskmanager.ID{resolved[0].ID, resolved[1].ID})
		_, err = b.client.ResolveTaskTypes(ctx, []string{"example.echo", "missing.type"})
		requireKind(t, err, taskmanager.ErrNotFound, 0)
		require.Contains(t, err.Error(), "missing.type")

		_, err = b.client.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "bad"})
		requireKind(t, err, taskmanager.ErrValidation, 400)
	})

	t.Run("create_list_get", func(t *testing.T) {
		b := setup(t, style)
		b.register(t, "example.echo")
		cr, err := b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "hi"})
		require.NoError(t, err)
		require.NotEmpty(t, cr.ID)
		require.Equal(t, "pending", cr.Status)
		require.False(t, cr.Deduplicated)

		dup, err := b.client.CreateTask(ctx, "example.echo", json.RawMessage(`{ "message" : "hi" }`))
		require.NoError(t, err)
		require.True(t, dup.Deduplicated)
		require.Equal(t, cr.ID, dup.ID)

		_, err = b.client.CreateTask(ctx, "example.echo", map[string]any{"message": 5})
		requireKind(t, err, taskmanager.ErrValidation, 400)
		require.Contains(t, err.Error(), "Parameter validation failed")
		_, err = b.client.CreateTask(ctx, "example.echo", map[string]any{"other": "x"})
		requireKind(t, err, taskmanager.ErrValidation, 400)
		_, err = b.client.CreateTask(ctx, "unknown.type", map[string]any{"message": "x"})
		requireKind(t, err, taskmanager.ErrNotFound, 404)
		if php {
			_, err = b.client.CreateTask(ctx, "example.echo", map[string]any{})
			requireKind(t, err, taskmanager.ErrValidation, 400)
			require.Contains(t, err.Error(), "Field 'params' must be of type object")
		}

		_, err = b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "second"})
		require.NoError(t, err)
		all, err := b.client.ListTasks(ctx, taskmanager.TaskFilter{Type: "example.%", Limit: 10})
		require.NoError(t, err)
		require.Len(t, all, 2)
		pending, err := b.client.ListTasks(ctx, taskmanager.TaskFilter{Status: "completed"})
		require.NoError(t, err)
		require.Empty(t, pending)
		paged, err := b.client.ListTasks(ctx, taskmanager.TaskFilter{Limit: 1, Offset: 1})
		require.NoError(t, err)
		require.Len(t, paged, 1)

		got, err := b.client.GetTask(ctx, cr.ID)
		require.NoError(t, err)
		require.Equal(t, cr.ID, got.ID)
		require.Equal(t, "example.echo", got.Type)
		require.Equal(t, "pending", got.Status)
		require.JSONEq(t, `{"message":"hi"}`, string(got.Params))

		_, err = b.client.GetTask(ctx, "999")
		requireKind(t, err, taskmanager.ErrNotFound, 0)
	})

	t.Run("claim_progress_complete", func(t *testing.T) {
		b := setup(t, style)
		typeID := b.register(t, "example.echo")
		_, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typeID})
		if php {
			requireKind(t, err, taskmanager.ErrNoTask, 500)
		} else {
			requireKind(t, err, taskmanager.ErrNoTask, 404)
		}
		_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "77"})
		requireKind(t, err, taskmanager.ErrNoTask, 0)

		low, _ := b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "low"})
		high, _ := b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "high"})
		b.clock.Add(time.Second)

		_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typeID, SortBy: "bogus"})
		requireKind(t, err, taskmanager.ErrValidation, 400)

		task, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typeID, SortBy: "id", SortOrder: "DESC", TypePattern: "example.%"})
		require.NoError(t, err)
		require.Equal(t, high.ID, task.ID)
		require.Equal(t, "example.echo", task.Type)
		require.EqualValues(t, 1, task.Attempts)
		require.JSONEq(t, `{"message":"high"}`, string(task.Params))

		require.NoError(t, b.client.Progress(ctx, task.ID, "w1", 50, "half way"))
		err = b.client.Progress(ctx, task.ID, "w1", 101, "")
		requireKind(t, err, taskmanager.ErrValidation, 400)
		require.Contains(t, err.Error(), "must be at most 100")
		err = b.client.Progress(ctx, task.ID, "w2", 10, "")
		requireKind(t, err, taskmanager.ErrClaimedByOther, 403)
		err = b.client.Progress(ctx, low.ID, "w1", 10, "")
		requireKind(t, err, taskmanager.ErrNotClaimed, 400)
		err = b.client.Progress(ctx, "424242", "w1", 10, "")
		requireKind(t, err, taskmanager.ErrNotFound, 404)

		_, err = b.client.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w2", Success: true, Result: json.RawMessage(`{}`)})
		requireKind(t, err, taskmanager.ErrClaimedByOther, 403)
		status, err := b.client.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"echo":"high"}`)})
		require.NoError(t, err)
		require.Equal(t, "completed", status)
		_, err = b.client.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"echo":"high"}`)})
		requireKind(t, err, taskmanager.ErrNotClaimed, 400)
		require.Equal(t, 1, b.srv.Stats().DuplicateSuccesses)
		_, err = b.client.Complete(ctx, "424242", taskmanager.Completion{WorkerID: "w1", Success: true})
		requireKind(t, err, taskmanager.ErrNotFound, 404)

		done, err := b.client.GetTask(ctx, task.ID)
		require.NoError(t, err)
		require.Equal(t, "completed", done.Status)
		require.JSONEq(t, `{"echo":"high"}`, string(done.Result))

		// Failures are re-queued until the attempts run out.
		for attempt := 1; attempt <= 3; attempt++ {
			got, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typeID})
			require.NoError(t, err)
			require.Equal(t, low.ID, got.ID)
			require.EqualValues(t, attempt, got.Attempts)
			status, err := b.client.Complete(ctx, got.ID, taskmanager.Completion{WorkerID: "w1", Error: "boom"})
			require.NoError(t, err)
			if attempt < 3 {
				require.Equal(t, "pending (retry)", status)
			} else {
				require.Equal(t, "failed", status)
			}
		}
		failed, err := b.client.GetTask(ctx, low.ID)
		require.NoError(t, err)
		require.Equal(t, "failed", failed.Status)
		require.Equal(t, "boom", failed.Error)
	})

	t.Run("claim_timeout_lets_another_worker_claim", func(t *testing.T) {
		b := setup(t, style)
		typeID := b.register(t, "example.echo")
		cr, _ := b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "x"})
		first, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typeID})
		require.NoError(t, err)
		_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: typeID})
		requireKind(t, err, taskmanager.ErrNoTask, 0)
		b.clock.Add(301 * time.Second)
		second, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: typeID})
		require.NoError(t, err)
		require.Equal(t, cr.ID, first.ID)
		require.Equal(t, cr.ID, second.ID)
		require.EqualValues(t, 2, second.Attempts)
		_, err = b.client.Complete(ctx, cr.ID, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{}`)})
		requireKind(t, err, taskmanager.ErrClaimedByOther, 403)
	})

	t.Run("faults", func(t *testing.T) {
		b := setup(t, style, func(o *devserver.Options) { o.MaxBodyBytes = 1000; o.Now = nil })
		typeID := b.register(t, "example.echo")

		b.srv.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 503, Count: 1})
		_, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
		requireKind(t, err, taskmanager.ErrTransient, 503)
		require.True(t, taskmanager.Retryable(err))

		b.srv.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 429, RetryAfter: 7 * time.Second, Count: 1})
		_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
		requireKind(t, err, taskmanager.ErrRateLimited, 429)
		require.Equal(t, 7*time.Second, taskmanager.RetryAfter(err))

		_, err = b.client.CreateTask(ctx, "example.echo", map[string]any{"message": strings.Repeat("x", 2000)})
		requireKind(t, err, taskmanager.ErrPayloadTooLarge, 413)
		require.False(t, taskmanager.Retryable(err))

		for _, body := range []string{"<html><body>Fatal error</body></html>", " ", `{"success":true,"data":{"id":`, `{"success":true,"data":"nope"}`, `[1,2]`} {
			b.srv.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, Body: body, Count: 1})
			_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
			requireKind(t, err, taskmanager.ErrTransient, 200)
			b.srv.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 502, Body: body, Count: 1})
			_, err = b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
			requireKind(t, err, taskmanager.ErrTransient, 502)
		}

		slow, err := taskmanager.New(taskmanager.Options{BaseURL: b.url, APIKey: testKey, Timeout: 50 * time.Millisecond})
		require.NoError(t, err)
		b.srv.InjectFault(devserver.Fault{Path: "/tasks/claim", Latency: 5 * time.Second, Count: 1})
		_, err = slow.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
		requireKind(t, err, taskmanager.ErrTransient, 0)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		// A lost answer: the completion lands but the client sees a 502.
		b.srv.ClearFaults()
		b.client.CreateTask(ctx, "example.echo", map[string]any{"message": "lost"})
		task, err := b.client.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: typeID})
		require.NoError(t, err)
		b.srv.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})
		_, err = b.client.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w", Success: true, Result: json.RawMessage(`{"a":1}`)})
		requireKind(t, err, taskmanager.ErrTransient, 502)
		st, _ := b.srv.Task(string(task.ID))
		require.Equal(t, "completed", st.Status)
	})
}

func TestNew_rejects_bad_base_url(t *testing.T) {
	for _, u := range []string{"", "localhost:8000/api", "ftp://x/api", "http://"} {
		_, err := taskmanager.New(taskmanager.Options{BaseURL: u})
		require.Error(t, err, u)
	}
}

// /health needs no API key: a 401 (or 404) there means the URL is not the
// API's base, and the error says so, not only that the key was refused.
// (Found by a review: an api_url without /api read as a key problem.)
func TestHealth_refused_says_to_check_the_base_url(t *testing.T) {
	t.Parallel()
	for _, style := range []devserver.Style{devserver.StyleDocumented, devserver.StylePHP} {
		b := setup(t, style)
		c, err := taskmanager.New(taskmanager.Options{BaseURL: strings.TrimSuffix(b.url, "/api"), APIKey: testKey, Timeout: 5 * time.Second})
		require.NoError(t, err)
		_, err = c.Health(context.Background())
		require.ErrorContains(t, err, "/health needs no API key: is "+strings.TrimSuffix(b.url, "/api")+" the API's base URL? It usually ends in /api", style)
		_, err = b.client.Health(context.Background())
		require.NoError(t, err)
	}
}
