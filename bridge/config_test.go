package bridge

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
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
	require.True(t, cfg.Temporal.SearchAttributes, "set where the namespace has them")
}

func TestLoad_search_attributes_can_be_turned_off(t *testing.T) {
	t.Parallel()
	for name, load := range map[string]func() (Config, error){
		"flag": func() (Config, error) { return Load([]string{"--search-attributes=false"}, nil, &bytes.Buffer{}) },
		"env": func() (Config, error) {
			return Load(nil, []string{"TEMPORAL_SEARCH_ATTRIBUTES=false"}, &bytes.Buffer{})
		},
	} {
		cfg, err := load()
		require.NoError(t, err, name)
		require.False(t, cfg.Temporal.SearchAttributes, name)
	}
}

func TestLoad_progress_rate(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 10, cfg.ProgressRate, "default")
	for name, c := range map[string]struct {
		args, env []string
		want      int
	}{
		"flag":    {args: []string{"--progress-rate=0"}, want: 0},
		"env":     {env: []string{"PROGRESS_RATE=50"}, want: 50},
		"in file": {env: []string{"TMBRIDGE_CONFIG=" + writeFile(t, "progress_rate: 3\n")}, want: 3},
	} {
		cfg, err := Load(c.args, c.env, &bytes.Buffer{})
		require.NoError(t, err, name)
		require.Equal(t, c.want, cfg.ProgressRate, name)
	}
	_, err = Load([]string{"--progress-rate=-1"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "progress_rate")
}

func TestTemporalOptions_grpc_compression(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  []string
		want client.GrpcCompression
	}{
		{want: nil}, // the SDK's default: gzip
		{args: []string{"--grpc-compression=none"}, want: &client.GrpcCompressionNone{}},
		{env: []string{"TEMPORAL_GRPC_COMPRESSION=none"}, want: &client.GrpcCompressionNone{}},
		{args: []string{"--grpc-compression=gzip"}, env: []string{"TEMPORAL_GRPC_COMPRESSION=none"}, want: nil},
	} {
		cfg, err := Load(c.args, c.env, &bytes.Buffer{})
		require.NoError(t, err)
		opts, err := ClientOptions(cfg, c.env, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.Equal(t, c.want, opts.ConnectionOptions.GrpcCompression, "%v %v", c.args, c.env)
	}
	_, err := Load([]string{"--grpc-compression=zstd"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, `temporal.grpc_compression: want gzip or none, got "zstd"`)
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

// A setting given by its worker name and its TMBRIDGE_ name takes the
// TMBRIDGE_ one, whichever comes first in the environment. Before, the
// later one won.
func TestLoad_tmbridge_name_wins_whatever_the_order(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{
		{"WORKER_ID=worker-name", "TMBRIDGE_WORKER_ID=tmbridge-name"},
		{"TMBRIDGE_WORKER_ID=tmbridge-name", "WORKER_ID=worker-name"},
	} {
		cfg, err := Load(nil, env, &bytes.Buffer{})
		require.NoError(t, err)
		require.Equal(t, "tmbridge-name", cfg.WorkerID, env)
	}
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

// An empty variable (WORKER_ID= in an env file written for the reference
// worker, `- WORKER_ID=${WORKER_ID}` in a compose file with it unset) is
// as if unset: the config file's value or the default holds. Before, some were taken as their
// default (TASK_TYPE_IDS=, DEBUG=) and others stopped tmbridge with a config error
// (WORKER_ID=, POLL_INTERVAL=, TASKMANAGER_API_URL=).
func TestLoad_empty_variables_are_unset(t *testing.T) {
	t.Parallel()
	var env []string
	for _, name := range []string{"TASKMANAGER_API_URL", "WORKER_ID", "TASK_TYPE_IDS", "POLL_INTERVAL", "MAX_RUNS", "DEBUG", "TMBRIDGE_MAX_IN_FLIGHT", "TMBRIDGE_TEMPORAL__TASK_QUEUE"} {
		env = append(env, name+"=")
	}
	cfg, err := Load(nil, env, &bytes.Buffer{})
	require.NoError(t, err)
	defaults, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	cfg.WorkerID, defaults.WorkerID = "", "" // a fresh default each time
	require.Equal(t, defaults, cfg)

	// Over the file's values too, empty by default or not (a review of
	// a first version found it wiped them). Only an empty workflow id
	// prefix (workflow id = task id) is a setting: runs keep their ids.
	file := writeFile(t, "api_key: secret\ntask_types: [a.b]\nmetrics_addr: 127.0.0.1:9464\ntemporal: { address: temporal.internal:7233, namespace: prod, workflow_id_prefix: wf- }\n")
	cfg, err = Load([]string{"--config=" + file}, []string{"TASKMANAGER_API_KEY=", "TASK_TYPES=", "METRICS_ADDR=", "TEMPORAL_ADDRESS=", "TEMPORAL_NAMESPACE=", "WORKFLOW_ID_PREFIX="}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "secret", cfg.APIKey.Reveal())
	require.Equal(t, []string{"a.b"}, cfg.TaskTypes)
	require.Equal(t, "127.0.0.1:9464", cfg.MetricsAddr)
	require.Equal(t, "temporal.internal:7233", cfg.Temporal.Address)
	require.Equal(t, "prod", cfg.Temporal.Namespace)
	require.Empty(t, cfg.Temporal.WorkflowIDPrefix)
}

// A key in another case than the documented one is an error. Before, it
// was ignored without a word: koanf kept it beside the lower-case key's
// default, which mapstructure took.
func TestLoad_keys_in_another_case_are_refused(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "API_URL: https://tm.example/api\nPoll_Interval: 7s\nTemporal: { Task_Queue: custom }\n"+
		"type_defaults: { start_to_close_timeout: 2m }\ntypes:\n  example.echo:\n    Start_To_Close_Timeout: 7s\n")
	_, err := Load([]string{"--config=" + file}, nil, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{
		"API_URL: unknown key: keys are written in lower case (api_url)",
		"Poll_Interval: unknown key: keys are written in lower case (poll_interval)",
		"Temporal: unknown key: keys are written in lower case (temporal)",
		"types.example.echo.Start_To_Close_Timeout: unknown key: keys are written in lower case (start_to_close_timeout)",
	} {
		require.Contains(t, err.Error(), want)
	}
	file = writeFile(t, "Types:\n  example.echo: { local: true }\n")
	_, err = Load([]string{"--config=" + file}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "Types: unknown key: keys are written in lower case (types)")
}

// A secret key's value of the wrong kind is described in the error (which
// goes to the logs), never shown. Before, a header written as one string
// was quoted: want a map of keys to values, got "Authorization: Bearer …".
func TestLoad_errors_do_not_show_secret_values(t *testing.T) {
	t.Parallel()
	for _, file := range []string{
		"types:\n  a.b:\n    http:\n      url: https://x.example/h\n      headers: \"Authorization: Bearer s3cr3tT0ken\"\n",
		"types:\n  a.b:\n    http:\n      url: https://x.example/h\n      headers: { Authorization: [s3cr3tT0ken] }\n",
		"types:\n  a.b:\n    exec:\n      command: [echo]\n      env: [[TOKEN=s3cr3tT0ken]]\n",
		"types:\n  a.b:\n    exec:\n      command: [echo]\n      env: [{ TOKEN: s3cr3tT0ken }]\n",
		"api_key: [s3cr3tT0ken]\n",
		"api_key: { k: s3cr3tT0ken }\n",
	} {
		_, err := Load([]string{"--config=" + writeFile(t, file)}, nil, &bytes.Buffer{})
		require.Error(t, err, file)
		require.NotContains(t, err.Error(), "s3cr3t", file)
	}
	_, err := Load([]string{"--config=" + writeFile(t, "poll_interval: ten seconds\n")}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, `"ten seconds"`, "other values are still shown")
}

func TestLoad_api_key_file(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(path, []byte("from-file-key\n"), 0o600))
	cfg, err := Load([]string{"--api-key-file=" + path}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "from-file-key", cfg.APIKey.Reveal())
	require.Equal(t, "[redacted]", cfg.APIKey.String())

	// Both set, in whatever layers: an error, not a silent pick. Before,
	// the file's key won over TASKMANAGER_API_KEY, against the documented
	// order (file < env < flags).
	for _, c := range []struct {
		args, env []string
	}{
		{args: []string{"--api-key-file=" + path}, env: []string{"TASKMANAGER_API_KEY=from-env-key"}},
		{args: []string{"--config=" + writeFile(t, "api_key_file: "+path+"\n")}, env: []string{"TASKMANAGER_API_KEY=from-env-key"}},
		{args: []string{"--config=" + writeFile(t, "api_key: from-file\n")}, env: []string{"TASKMANAGER_API_KEY_FILE=" + path}},
	} {
		_, err := Load(c.args, c.env, &bytes.Buffer{})
		require.ErrorContains(t, err, "api_key and api_key_file are both set")
		require.NotContains(t, err.Error(), "from-")
	}
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
		{file: "types:\n  x:\n    retry: { backoff_coefficient: 0.1 }\n", want: "types.x.retry.backoff_coefficient"},
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

// Every typo in a config file is reported at once, each by its full path
// and with the nearest valid key there, from the top level, type_defaults,
// each type and each step alike.
func TestLoad_reports_every_config_error_at_once(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
poll_intervall: 3s
temporal: { task_queu: q }
type_defaults:
  retry: { maximum_atempts: 4 }
types:
  example.echo:
    locl: true
  demo.pipeline:
    steps:
      - { name: shout, handler: example.uppercase }
      - { nmae: count, handler: example.echo }
      - parallel: [{ name: a, handler: h, retri: {} }]
`)
	_, err := Load([]string{"--config", file}, nil, &bytes.Buffer{})
	require.Error(t, err)
	require.Equal(t, strings.Join([]string{
		"config: poll_intervall: unknown key (did you mean poll_interval?)",
		"config: temporal.task_queu: unknown key (did you mean task_queue?)",
		"config: type_defaults.retry.maximum_atempts: unknown key (did you mean maximum_attempts?)",
		"config: types.demo.pipeline.steps[1].nmae: unknown key (did you mean name?)",
		"config: types.demo.pipeline.steps[2].parallel[0].retri: unknown key (did you mean retry?)",
		"config: types.example.echo.locl: unknown key (did you mean local?)",
	}, "\n"), err.Error(), "once each: type_defaults' typo is not repeated for the two types merged over it")
}

// A value of the wrong type is named by its path, in the config's words,
// with the typos beside it.
func TestLoad_reports_wrong_types_by_path(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
poll_interval: soon
max_runs: lots
temporal: { max_concurrent_activities: [1] }
type_defaults:
  start_to_close_timeout: forever
  exec: { command: [x] }
types:
  a: { retry: 5, steps: [{ handler: h, heartbeat_timeout: never }] }
  b: 7
  c: { steps: { handler: h, nmae: x } }
`)
	_, err := Load([]string{"--config", file}, nil, &bytes.Buffer{})
	require.Error(t, err)
	require.Equal(t, strings.Join([]string{
		"config: max_runs: want a whole number, got \"lots\"",
		"config: poll_interval: want a duration such as 90s, 2m or 10 (seconds), got \"soon\"",
		"config: temporal.max_concurrent_activities: want a whole number, got a list",
		"config: type_defaults.exec: unknown key: exec is set per type, under types.<name>, not in type_defaults",
		"config: type_defaults.start_to_close_timeout: want a duration such as 90s, 2m or 10 (seconds), got \"forever\"",
		"config: types.a.retry: want a map of keys to values, got a number",
		"config: types.a.steps[0].heartbeat_timeout: want a duration such as 90s, 2m or 10 (seconds), got \"never\"",
		"config: types.b: want a map of keys to values, got a number",
		"config: types.c.steps[0].nmae: unknown key (did you mean name?)",
	}, "\n"), err.Error())

	_, err = Load([]string{"--poll-interval=soon"}, []string{"MAX_RUNS=lots"}, &bytes.Buffer{})
	require.EqualError(t, err, "config: max_runs: want a whole number, got \"lots\"\nconfig: poll_interval: want a duration such as 90s, 2m or 10 (seconds), got \"soon\"", "env and flags too")
}

// A setting out of range in type_defaults is reported once, not again for
// every type that inherits it; each type's own errors each name the type.
func TestLoad_reports_type_defaults_range_errors_once(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
type_defaults: { start_to_close_timeout: 1ms }
types:
  a: { heartbeat_timeout: 1000h, retry: { backoff_coefficient: 1000 } }
  b: {}
`)
	_, err := Load([]string{"--config", file}, nil, &bytes.Buffer{})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3, err.Error())
	require.Contains(t, lines[0], "config: type_defaults.start_to_close_timeout: must be between 1s and")
	require.Contains(t, lines[1], "config: types.a.heartbeat_timeout: must be between")
	require.Contains(t, lines[2], "config: types.a.retry.backoff_coefficient: must be between 1 and 100")
}

func TestClosest(t *testing.T) {
	t.Parallel()
	keys := []string{"local", "name", "dir", "task_queue", "TMBRIDGE_MAX_IN_FLIGHT"}
	require.Equal(t, "local", closest("locl", keys))
	require.Equal(t, "name", closest("nmae", keys))
	require.Equal(t, "local", closest("Local", keys), "case does not count")
	require.Equal(t, "TMBRIDGE_MAX_IN_FLIGHT", closest("TMBRIDGE_MAX_INFLIGHT", keys))
	require.Empty(t, closest("foo", keys), "a short key is not near every other short key")
	require.Empty(t, closest("something_else", keys))
}

// Durations in JSON logs read as durations, as in text logs.
func TestNewLogger_writes_durations_as_durations(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := NewLogger(&out, "json", false)
	log.Info("x", "grace", 30*time.Second, slog.Group("g", "wait", 1500*time.Millisecond), "n", 3)
	require.Contains(t, out.String(), `"grace":"30s"`)
	require.Contains(t, out.String(), `"g":{"wait":"1.5s"}`)
	require.Contains(t, out.String(), `"n":3`, "other numbers stay numbers")

	out.Reset()
	NewLogger(&out, "text", false).Info("x", "grace", 30*time.Second)
	require.Contains(t, out.String(), "grace=30s")
}

// The start-up banner shows poll_interval as a duration.
func TestBanner_shows_poll_interval_as_a_duration(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	var out bytes.Buffer
	banner(NewLogger(&out, "json", false), cfg, client.Options{HostPort: "localhost:7233", Namespace: "default"})
	require.Contains(t, out.String(), `"poll_interval":"10s"`)
}

// TypeConfig encodes as one JSON object, exec and http beside the type
// options (TypeOptions' own JSON methods would otherwise be promoted and
// drop them), and reads back the same.
func TestTypeConfig_JSON_round_trip(t *testing.T) {
	in := TypeConfig{
		TypeOptions: workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{StartToCloseTimeout: time.Minute}, ClaimWait: 90 * time.Second},
		Exec:        &activities.ExecConfig{Command: []string{"python3", "wc.py"}, Env: []string{"HOME"}},
		HTTP:        &activities.HTTPConfig{URL: "https://x.example/hook", HeadersFromEnv: map[string]string{"Authorization": "HOOK_TOKEN"}},
	}
	raw, err := json.Marshal(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"start_to_close_timeout":"1m0s","claim_wait":"1m30s",
		"exec":{"command":["python3","wc.py"],"env":["HOME"]},
		"http":{"url":"https://x.example/hook","headers_from_env":{"Authorization":"HOOK_TOKEN"}}}`, string(raw))
	var out TypeConfig
	require.NoError(t, json.Unmarshal(raw, &out))
	require.Equal(t, in, out)
}
