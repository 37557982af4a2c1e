package activities_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
)

// An exec or http handler built in Go from a config that does not hold
// fails every task for good, saying why. Before, Exec with no command
// panicked on each run (retried as a panic), and HTTP with no URL failed
// with a retryable error that no retry could fix. (Found by a review.)
func TestExecAndHTTP_misconfigured_fail_for_good(t *testing.T) {
	for name, h := range map[string]activities.Handler{
		"exec, no command":  activities.Exec(activities.ExecConfig{}),
		"exec, blank":       activities.Exec(activities.ExecConfig{Command: []string{" "}}),
		"http, no URL":      activities.HTTP(activities.HTTPConfig{}, nil),
		"http, not http(s)": activities.HTTP(activities.HTTPConfig{URL: "ftp://127.0.0.1/x"}, nil),
		"http, bad header":  activities.HTTP(activities.HTTPConfig{URL: "http://127.0.0.1:1/x", Headers: map[string]string{"X-Token": "a\r\nb"}}, nil),
	} {
		_, err := h.Handle(context.Background(), json.RawMessage(`{}`))
		require.ErrorContains(t, err, "handler misconfigured", name)
		var app *temporal.ApplicationError
		require.ErrorAs(t, err, &app, name)
		require.True(t, app.NonRetryable(), name)
		require.Equal(t, activities.ErrTypePermanent, app.Type(), name)
	}
}
