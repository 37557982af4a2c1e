package bridge

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// The Go API's edges, each found by a review: what a program that builds
// a bridge in Go may pass, and what it gets.

// DefaultConfig is what Load gives with nothing set: valid as it is.
func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	require.Equal(t, "http://localhost:8000/api", c.APIURL)
	require.Equal(t, "tmbridge", c.Temporal.TaskQueue)
	require.NotEmpty(t, c.WorkerID)
}

// The API key never shows through fmt, whatever the verb: %#v of a Config
// (a testify diff, a debug print) showed it before.
func TestSecret_every_fmt_verb_hides_it(t *testing.T) {
	c := DefaultConfig()
	c.APIKey = "hunter2"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		require.NotContains(t, fmt.Sprintf(verb, c), "hunter2", verb)
		require.NotContains(t, fmt.Sprintf(verb, c.APIKey), "hunter2", verb)
		require.NotContains(t, fmt.Sprintf(verb, &c), "hunter2", verb)
	}
	require.Equal(t, `"[redacted]"`, fmt.Sprintf("%q", c.APIKey))
	require.Equal(t, "hunter2", c.APIKey.Reveal())
}

// A nil logger is the default one, a nil option is skipped, and a nil
// client is an error: before, Run panicked on the first, New on the two
// others.
func TestNew_nil_logger_option_and_client(t *testing.T) {
	b, err := New(newTestConfig(nil), nil, lazyClient(t), WithLogger(nil), nil)
	require.NoError(t, err)
	require.Same(t, slog.Default(), b.log)

	_, err = New(newTestConfig(nil), nil, nil)
	require.ErrorContains(t, err, "nil Temporal client")
}

// A Go workflow's name must be one a config can name: not empty, no spaces
// around it (before, "" registered the wrapper under its function's name).
func TestNew_refuses_workflow_names_no_config_can_reach(t *testing.T) {
	fn := func() {}
	for _, name := range []string{"", " ", " custom", "custom\n"} {
		_, err := New(newTestConfig(nil), nil, lazyClient(t), WithWorkflow(name, fn))
		require.ErrorContains(t, err, "spaces around it", "%q", name)
	}
}

// The zero Registry is ready to use, and a name with spaces around it,
// which no task type would match, is refused.
func TestRegistry_zero_value_and_padded_names(t *testing.T) {
	var r activities.Registry
	require.NoError(t, r.Add("image.resize", activities.Exec(activities.ExecConfig{Command: []string{"true"}})))
	_, ok := r.Lookup("image.resize")
	require.True(t, ok)
	require.ErrorContains(t, r.Add(" image.resize", activities.Exec(activities.ExecConfig{Command: []string{"true"}})), "spaces around")
}
