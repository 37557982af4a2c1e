package bridge

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestLoad_defaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "http://localhost:8000/api", cfg.APIURL)
	require.Equal(t, 10*time.Second, cfg.PollInterval)
	require.Equal(t, 100, cfg.MaxInFlight, "sized to the worker's capacity")
	require.Equal(t, "tmbridge", cfg.Temporal.TaskQueue)
	require.Equal(t, "taskmanager-task-", cfg.Temporal.WorkflowIDPrefix)
	require.Contains(t, cfg.WorkerID, "tmbridge-")
}

func TestLoad_precedence_defaults_file_env_flags(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "api_url: http://file/api\nworker_id: from-file\npoll_interval: 3\nmax_runs: 7\ntemporal:\n  task_queue: file-q\n")
	env := []string{"TMBRIDGE_CONFIG=" + file, "WORKER_ID=from-env", "POLL_INTERVAL=5", "TASKMANAGER_API_KEY=k1", "TMBRIDGE_TEMPORAL__TASK_QUEUE=env-q",
		"TMBRIDGE_TEMPORAL_CLI=/some/path", "TMBRIDGE_SOMETHING_ELSE=x"} // not config keys: ignored
	cfg, err := Load([]string{"--poll-interval=1m", "--task-type-ids=3,4"}, env, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "http://file/api", cfg.APIURL, "file over default")
	require.Equal(t, "from-env", cfg.WorkerID, "env over file")
	require.Equal(t, time.Minute, cfg.PollInterval, "flag over env")
	require.Equal(t, 7, cfg.MaxRuns)
	require.Equal(t, "env-q", cfg.Temporal.TaskQueue)
	require.Equal(t, []string{"3", "4"}, cfg.TaskTypeIDs)
	require.Equal(t, "k1", cfg.APIKey.Reveal())
}

func TestLoad_reference_worker_env(t *testing.T) {
	t.Parallel()
	env := []string{"TASKMANAGER_API_URL=http://tm:8000/api", "WORKER_ID=w", "TASK_TYPE_IDS=1,2,3", "POLL_INTERVAL=10", "MAX_RUNS=0", "DEBUG=true"}
	cfg, err := Load(nil, env, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "http://tm:8000/api", cfg.APIURL)
	require.Equal(t, []string{"1", "2", "3"}, cfg.TaskTypeIDs)
	require.Equal(t, 10*time.Second, cfg.PollInterval)
	require.True(t, cfg.Debug)
}

func TestLoad_api_key_file(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(path, []byte("from-file-key\n"), 0o600))
	cfg, err := Load([]string{"--api-key-file=" + path}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "from-file-key", cfg.APIKey.Reveal())
	require.Equal(t, "[redacted]", cfg.APIKey.String())
}

func TestLoad_types_merge_over_defaults(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
type_defaults:
  local: true
  start_to_close_timeout: 20s
  retry: { maximum_attempts: 4 }
types:
  example.echo: {}
  example.sleep:
    local: false
    heartbeat_timeout: 5
  demo.pipeline:
    steps:
      - name: shout
        handler: example.uppercase
      - name: count
        handler: example.echo
        params: { message: "{{ .steps.shout.uppercase }}" }
      - parallel:
          - { name: a, handler: example.math.add, params: { a: 1, b: 2 } }
          - { name: b, handler: example.sleep, params: { duration: 1 } }
`)
	cfg, err := Load([]string{"--config", file}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	echo := cfg.Types["example.echo"]
	require.True(t, echo.IsLocal())
	require.Equal(t, 20*time.Second, echo.StartToCloseTimeout)
	require.EqualValues(t, 4, echo.Retry.MaximumAttempts)
	sleep := cfg.Types["example.sleep"]
	require.False(t, sleep.IsLocal(), "an explicit false beats the default")
	require.NotNil(t, sleep.Local)
	require.Equal(t, 5*time.Second, sleep.HeartbeatTimeout)
	steps := cfg.Types["demo.pipeline"].Steps
	require.Len(t, steps, 3)
	require.Equal(t, "{{ .steps.shout.uppercase }}", steps[1].Params["message"])
	require.Len(t, steps[2].Parallel, 2)
	require.Equal(t, "example.sleep", steps[2].Parallel[1].Handler)
}

func TestLoad_errors_name_the_key(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		file string
		want string
	}{
		{args: []string{"--poll-interval=-1s"}, want: "poll_interval"},
		{args: []string{"--claim-sort-order=UP"}, want: "claim_sort_order"},
		{args: []string{"--api-url=localhost"}, want: "api_url"},
		{args: []string{"--task-type-ids=a"}, want: "task_type_ids"},
		{args: []string{"--poll-interval=soon"}, want: "poll_interval"},
		{file: "pol_interval: 3\n", want: "pol_interval"},
		{file: "types:\n  x:\n    locl: true\n", want: "locl"},
		{file: "types:\n  x:\n    retry: { backoff_coefficient: 0.1 }\n", want: "types: x: retry.backoff_coefficient"},
		{file: "types:\n  x:\n    exec: { command: [] }\n", want: "exec.command"},
		{file: "types:\n  x:\n    http: { url: nope }\n", want: "http.url"},
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
	}
	for _, c := range cases {
		args := c.args
		if c.file != "" {
			args = append(args, "--config="+writeFile(t, c.file))
		}
		_, err := Load(args, nil, &bytes.Buffer{})
		require.Error(t, err, c.want)
		require.Contains(t, err.Error(), c.want)
	}
}

func TestLoad_help_documents_every_flag(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := Load([]string{"--help"}, nil, &out)
	require.ErrorIs(t, err, ErrHelp)
	for _, o := range options() {
		if o.flag != "" {
			require.Contains(t, out.String(), "--"+o.flag)
		}
		for _, e := range o.env {
			require.Contains(t, out.String(), e)
		}
	}
}
