package bridge

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// Absurd values are refused with their valid range, naming the key.
func TestLoad_refuses_values_out_of_range(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		file string
		want string
	}{
		{args: []string{"--api-timeout=1ns"}, want: "api_timeout: must be between 100ms and 10m0s, got 1ns"},
		{args: []string{"--poll-interval=1000h"}, want: "poll_interval: must be between"},
		{args: []string{"--claim-timeout=0.001"}, want: "claim_timeout: must be between 1s and"},
		{args: []string{"--shutdown-grace=100h"}, want: "shutdown_grace: must be between"},
		{args: []string{"--max-in-flight=10000000"}, want: "max_in_flight: must be between 1 and 100000"},
		{args: []string{"--max-concurrent-activities=-3"}, want: "temporal.max_concurrent_activities"},
		{args: []string{"--max-runs=-1"}, want: "max_runs"},
		{args: []string{"--worker-id=w1\r"}, want: `worker_id: must not begin or end with spaces or hold control characters, got "w1\r"`},
		{args: []string{"--worker-id= w1"}, want: `worker_id: must not begin or end with spaces`},
		{args: []string{"--task-type-ids=1,07"}, want: `task_type_ids: "07" is not a positive integer as TaskManager writes it`},
		{args: []string{"--task-type-ids=+7"}, want: `task_type_ids: "+7" is not a positive integer`},
		{args: []string{"--task-type-ids=1", "--task-types=example.echo"}, want: "task_type_ids: set task_types or task_type_ids, not both"},
		{file: "temporal: { task_queue: \"a'b\" }\n", want: `temporal.task_queue: must not hold quotes, backslashes or control characters, got "a'b"`},
		{file: "type_defaults: { start_to_close_timeout: 1ms }\n", want: "type_defaults.start_to_close_timeout: must be between 1s and 720h0m0s, got 1ms (or 0 for the default)"},
		{file: "types:\n  x: { heartbeat_timeout: 100ms }\n", want: "types.x.heartbeat_timeout: must be at least 5s, got 100ms: Temporal hears a handler's heartbeats every 0.7 × heartbeat_timeout plus a call's round trip (0.8 × on another worker)"},
		{file: "types:\n  x: { heartbeat_timeout: 1000h }\n", want: "heartbeat_timeout: must be between 5s and 24h0m0s"},
		{file: "types:\n  x: { schedule_to_close_timeout: 100000h }\n", want: "schedule_to_close_timeout"},
		{file: "types:\n  x: { claim_wait: 1ns }\n", want: "claim_wait"},
		{file: "types:\n  x: { retry: { maximum_attempts: 1000000 } }\n", want: "retry.maximum_attempts: must be between -1 and 10000"},
		{file: "types:\n  x: { retry: { maximum_attempts: -2 } }\n", want: "retry.maximum_attempts"},
		{file: "types:\n  x: { retry: { backoff_coefficient: 1000 } }\n", want: "retry.backoff_coefficient: must be between 1 and 100"},
		{file: "types:\n  x: { retry: { initial_interval: 1ns } }\n", want: "retry.initial_interval"},
		{file: "types:\n  x: { retry: { initial_interval: 2m, maximum_interval: 1m } }\n", want: "retry.maximum_interval: must be at least retry.initial_interval (2m0s), got 1m0s"},
		{file: "types:\n  x: { retry: { maximum_interval: 100ms } }\n", want: "retry.maximum_interval: must be at least retry.initial_interval (1s), got 100ms"},
		{file: "types:\n  x:\n    steps:\n      - { handler: h, heartbeat_timeout: 10ms }\n", want: `types.x.steps[0].heartbeat_timeout: must be at least 5s`},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			args := c.args
			if c.file != "" {
				args = append(args, "--config="+writeFile(t, c.file))
			}
			_, err := Load(args, nil, &bytes.Buffer{})
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

// Templates are checked at load: what they read must exist and run before.
func TestLoad_checks_step_templates(t *testing.T) {
	t.Parallel()
	steps := func(body string) string { return "types:\n  demo.flow:\n    steps:\n" + body }
	cases := []struct{ file, want string }{
		{steps(`
      - handler: example.uppercase
      - handler: example.echo
        params: { message: "{{ .steps.example.uppercase.uppercase }}" }
`), `types.demo.flow.steps[1].params.message: "{{ .steps.example.uppercase.uppercase }}": .steps.example.uppercase.uppercase: step "example.uppercase" has dots in its name, which a template path cannot hold: write {{ index .steps "example.uppercase" }}`},
		{steps(`
      - { name: shout, handler: example.uppercase }
      - { name: echo, handler: example.echo, params: { message: "{{ .steps.shuot.uppercase }}" } }
`), `steps[1].params.message: "{{ .steps.shuot.uppercase }}": no step "shuot" (the steps before this one: shout)`},
		{steps(`
      - { name: echo, handler: example.echo, params: { message: "{{ .steps.shout.uppercase }}" } }
      - { name: shout, handler: example.uppercase }
`), `step "shout" runs later or at the same time`},
		{steps(`
      - parallel:
          - { name: a, handler: example.echo }
          - { name: b, handler: example.echo, params: { m: "{{ index .steps \"a\" }}" } }
`), `steps[0].parallel[1].params.m: "{{ index .steps \"a\" }}": step "a" runs later or at the same time`},
		{steps(`
      - { name: echo, handler: example.echo, params: { m: "{{ .parms.x }}" } }
`), `.parms: a template reads .params (the task's params) and .steps`},
		{steps(`
      - { name: echo, handler: example.echo, params: { deep: { list: [1, "{{ .steps.x }}"] } } }
`), `steps[0].params.deep.list[1]: "{{ .steps.x }}": no step "x": no step runs before this one`},
		{steps(`
      - { name: echo, handler: example.echo, params: { m: "{{ .params.x " } }
`), `params.m: template: params:1: unclosed action`},
	}
	for _, c := range cases {
		_, err := Load([]string{"--config=" + writeFile(t, c.file)}, nil, &bytes.Buffer{})
		require.Error(t, err, c.want)
		require.Contains(t, err.Error(), c.want)
	}

	ok := steps(`
      - handler: example.uppercase
      - name: echo
        handler: example.echo
        params:
          message: "{{ index .steps \"example.uppercase\" \"uppercase\" }}"
          both: "{{ range .params.items }}{{ .name }}{{ end }} {{ with .params.x }}{{ .y }}{{ end }} {{ $.steps }}"
`)
	_, err := Load([]string{"--config=" + writeFile(t, ok)}, nil, &bytes.Buffer{})
	require.NoError(t, err, "index reaches a dotted name; dot inside range and with is the item")
}

// A TMBRIDGE_ variable that names no setting is a warning, with the
// nearest setting; the tools' own variables are not.
func TestLoad_warns_of_unknown_TMBRIDGE_variables(t *testing.T) {
	t.Setenv("TMBRIDGE_HOOK_TOKEN", "t")
	file := writeFile(t, "types:\n  x: { http: { url: \"http://127.0.0.1:1/\", headers_from_env: { X-Token: TMBRIDGE_HOOK_TOKEN } } }\n  y: { exec: { command: [x], env: [TMBRIDGE_PASSED, TMBRIDGE_SET=1] } }\n")
	cfg, err := Load([]string{"--config=" + file}, []string{"TMBRIDGE_POLL_INTERVALL=3", "TMBRIDGE_NOTHING_LIKE_IT=1", "TMBRIDGE_TEMPORAL_CLI=/x", "TMBRIDGE_POLL_INTERVAL=4", "OTHER_THING=1",
		"TMBRIDGE_HOOK_TOKEN=t", "TMBRIDGE_PASSED=p", "TMBRIDGE_SET=s"}, &bytes.Buffer{}) // handed to handlers by the config: not warned of
	require.NoError(t, err)
	require.Equal(t, []string{
		"environment: TMBRIDGE_POLL_INTERVALL names no setting and is ignored (did you mean TMBRIDGE_POLL_INTERVAL?)",
		"environment: TMBRIDGE_NOTHING_LIKE_IT names no setting and is ignored",
	}, cfg.Warnings)

	var stderr bytes.Buffer
	code := run([]string{"--temporal-address=127.0.0.1:1", "--log-format=json"}, []string{"TMBRIDGE_MAX_INFLIGHT=3"}, &bytes.Buffer{}, &stderr, nil)
	require.NotZero(t, code, "nothing listens on port 1")
	require.Contains(t, stderr.String(), `"level":"WARN","msg":"environment: TMBRIDGE_MAX_INFLIGHT names no setting and is ignored (did you mean TMBRIDGE_MAX_IN_FLIGHT?)"`)
}

// A bad api_url is named without what it may carry (userinfo, query).
func TestLoad_api_url_error_shows_no_credentials(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"--api-url=ftp://user:hunter2@tm.example/api?key=s3cret#frag"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, `api_url: want an http(s) URL, got "ftp://tm.example/api"`)
	for _, secret := range []string{"hunter2", "s3cret", "user", "frag"} {
		require.NotContains(t, err.Error(), secret)
	}
}

// api_key_file is read up to 64 KiB: a bigger file is not a key.
func TestLoad_api_key_file_is_bounded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(path, []byte(strings.Repeat("k", maxKeyFile+1)), 0o600))
	_, err := Load([]string{"--api-key-file=" + path}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "api_key_file: the file it names is larger than 64 KiB")
	require.NotContains(t, err.Error(), "kkkk")
	_, err = Load([]string{"--api-key-file=/dev/zero"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "api_key_file: the file it names is not a regular file", "an endless file does not hang the start")
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err = Load([]string{"--api-key-file=" + fifo}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "is not a regular file", "nor does a pipe no one writes to")
}

// A typo and a value out of range are reported in one go.
func TestLoad_reports_decode_and_range_errors_at_once(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "poll_intervall: 3s\nclaim_sort_by: nope\napi_timeout: 1ns\ntypes:\n  x: { locl: true, retry: { maximum_attempts: -5 } }\n")
	_, err := Load([]string{"--config=" + file}, nil, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{
		"config: poll_intervall: unknown key (did you mean poll_interval?)",
		"config: types.x.locl: unknown key (did you mean local?)",
		`config: claim_sort_by: want created_at, priority, id or attempts, got "nope"`,
		"config: api_timeout: must be between 100ms and 10m0s, got 1ns",
		"config: types.x.retry.maximum_attempts: must be between -1 and 10000, got -5",
	} {
		require.Contains(t, err.Error(), want)
	}
}

// Retry intervals are checked as they run: a step's over its type's.
func TestLoad_checks_step_retry_as_merged(t *testing.T) {
	t.Parallel()
	steps := func(typeRetry, stepRetry string) string {
		return "types:\n  x:\n    retry: " + typeRetry + "\n    steps:\n      - { handler: h, retry: " + stepRetry + " }\n"
	}
	_, err := Load([]string{"--config=" + writeFile(t, steps("{}", "{ initial_interval: 2m }"))}, nil, &bytes.Buffer{})
	require.NoError(t, err, "an inherited maximum_interval is raised to the step's own initial_interval")
	_, err = Load([]string{"--config=" + writeFile(t, steps("{ initial_interval: 10ms }", "{ maximum_interval: 500ms }"))}, nil, &bytes.Buffer{})
	require.NoError(t, err, "the step's maximum is over the type's initial interval")
	_, err = Load([]string{"--config=" + writeFile(t, steps("{ initial_interval: 2m }", "{ maximum_interval: 30s }"))}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: types.x.steps[0].retry.maximum_interval: must be at least retry.initial_interval (2m0s), got 30s")
}

// The composition config of the README loads as written.
func TestLoad_composition_example(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--config=../examples/flow.yaml"}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	steps := cfg.TypeOptions("demo.flow").Steps
	require.Len(t, steps, 8)
	require.Equal(t, "params.numbers", steps[3].ForEach)
	require.Equal(t, "fallback", steps[4].OnFailure[0].Name)
	require.Equal(t, "remote.job", steps[5].Enqueue.Type)
	require.Equal(t, 10*time.Minute, steps[6].WaitFor.Timeout)
}

// Mistakes in composition stop tmbridge at start, naming the key.
func TestLoad_checks_composition(t *testing.T) {
	t.Parallel()
	flow := func(body string) string { return "types:\n  demo.flow:\n    steps:\n" + body }
	cases := []struct{ file, want string }{
		{flow("      - { name: a, handler: h, when: \"size(steps.\" }\n"), "types.demo.flow.steps[0].when: \"size(steps.\": ERROR"},
		{flow("      - { name: a, handler: h, when: \"params.n + 1\" }\n"), "steps[0].when: \"params.n + 1\": gives "},
		{flow("      - { name: a, handler: h, when: \"nope > 1\" }\n"), "undeclared reference to 'nope'"},
		{flow("      - { name: a, handler: h, when: \"steps.b.x > 1\" }\n      - { name: b, handler: h }\n"), `steps[0].when: "steps.b.x > 1": step "b" runs later or at the same time`},
		{flow("      - { name: a, handler: h, when: \"steps['x.y'] == 1\" }\n"), `no step "x.y"`},
		{flow("      - { name: a, handler: h, for_each: \"1 + 2\" }\n"), `steps[0].for_each: "1 + 2": gives int, want list(dyn)`},
		{flow("      - { name: a, for_each: \"params.l\", wait_for: { signal: s } }\n"), "for_each: runs a handler per item: set handler"},
		{flow("      - { name: a, handler: h, max_parallel: 3 }\n"), "steps[0].max_parallel: applies to for_each only"},
		{flow("      - { name: a, handler: h, params: { x: \"{{ .item }}\" } }\n"), ".item: a template reads .params"},
		{flow("      - { name: a, handler: h, on_failure: [{ name: b, handler: h, params: { m: \"{{ .item }}\" } }] }\n"), "steps[0].on_failure[0].params.m"},
		{flow("      - { name: a, handler: h, on_failure: [{ name: a, handler: h }] }\n"), `name "a" is used twice`},
		{flow("      - { name: a, enqueue: { params: { n: 1 } } }\n"), "steps[0].enqueue.type: name the task type to create"},
		{flow("      - { name: a, enqueue: { type: t, params: { n: \"{{ .steps.zz }}\" } } }\n"), `steps[0].enqueue.params.n`},
		{flow("      - { name: a, wait_for: { timeout: 1m } }\n"), "steps[0].wait_for.signal: name the signal"},
		{flow("      - { name: a, wait_for: { signal: tmbridge.claim } }\n"), "the bridge's own signal"},
		{flow("      - { wait_for: { signal: s } }\n"), "steps[0].name: an enqueue, wait_for or on_failure step needs a name"},
		{flow("      - { name: a, handler: h, wait_for: { signal: s } }\n"), "set one of handler, parallel, enqueue and wait_for"},
		{flow("      - { name: a, enqueue: { type: t }, params: { n: 1 } }\n"), "steps[0].params: an enqueue step's params are enqueue.params"},
		{flow("      - { name: a, wait_for: { signal: s }, retry: { maximum_attempts: 2 } }\n"), "steps[0].retry: task_queue, local, timeouts and retry are for handler steps"},
		{flow("      - { name: a, wait_for: { signal: s } }\n      - { name: b, wait_for: { signal: s } }\n"), `two wait_for steps wait for signal "s"`},
		{flow("      - { name: g, parallel: [{ name: x, handler: h }] }\n      - { name: g, handler: h }\n"), `name "g" is used twice`},
	}
	for _, c := range cases {
		_, err := Load([]string{"--config=" + writeFile(t, c.file)}, nil, &bytes.Buffer{})
		require.Error(t, err, c.want)
		require.Contains(t, err.Error(), c.want)
	}
}

// Every handler a step names, fallbacks included, must be registered;
// enqueue and wait_for steps need none.
func TestRegistry_checks_the_handlers_of_every_step(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--config=../examples/flow.yaml"}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	_, err = cfg.Registry(reg)
	require.NoError(t, err)

	file := writeFile(t, "types:\n  x:\n    steps:\n      - { name: a, handler: example.echo, on_failure: [{ name: b, handler: nope }] }\n")
	cfg, err = Load([]string{"--config=" + file}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	_, err = cfg.Registry(reg)
	require.ErrorContains(t, err, `config: types.x.steps[0].on_failure[0].handler: no handler "nope" is registered`)
}

// The README shows examples/flow.yaml as it is.
func TestREADME_shows_the_composition_example(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	file, err := os.ReadFile("../examples/flow.yaml")
	require.NoError(t, err)
	block := regexp.MustCompile("(?s)<!-- examples/flow.yaml -->\n```yaml\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, block)
	body := string(file)
	require.Equal(t, body[strings.Index(body, "types:"):], string(block[1]))
}

// metrics_addr and api_key mistakes are config errors, found by Load (and
// by `tmbridge check`): before, a bare port (METRICS_ADDR=9464) and a key
// read from an env file with CRLF line ends loaded, `check` passed, and
// the bridge exited 1 at start, restarted for ever. The key is not shown.
// (Found by a review.)
func TestLoad_metrics_addr_and_api_key_mistakes_are_config_errors(t *testing.T) {
	_, err := Load([]string{"--metrics-addr=9464"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, `config: metrics_addr: want host:port or :port with a port of 0–65535 (":9464"), got "9464"`)
	for _, addr := range []string{"127.0.0.1:99999", "127.0.0.1:abc", ":-1"} {
		_, err = Load([]string{"--metrics-addr", addr}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, "config: metrics_addr: want host:port", addr)
	}
	for _, addr := range []string{":9464", "127.0.0.1:0", ":http"} {
		_, err = Load([]string{"--metrics-addr", addr}, nil, &bytes.Buffer{})
		require.NoError(t, err, addr)
	}
	_, err = Load(nil, []string{"TASKMANAGER_API_KEY=sekrit\r"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: api_key: must not hold control characters")
	require.NotContains(t, err.Error(), "sekrit")
}

// A Temporal address the dial cannot use (a URL, a port out of range,
// spaces from an env file) is a config error naming its key, whether from
// the config, TEMPORAL_ADDRESS or Temporal's config profile: before, it
// loaded, `check` passed, and the bridge exited 1 at its dial. gRPC
// targets and a host without a port (gRPC dials 443) pass. (Found by a
// review.)
func TestLoad_temporal_address_mistakes_are_config_errors(t *testing.T) {
	for _, addr := range []string{"http://127.0.0.1:7233", "HTTPS://temporal.example.com:7233", "127.0.0.1:7233 ", "temporal:72330", "temporal:0", "temporal:x", ":7233"} {
		_, err := Load([]string{"--temporal-address", addr}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, "config: temporal.address: ", addr)
		_, err = Load(nil, []string{"TEMPORAL_ADDRESS=" + addr}, &bytes.Buffer{})
		require.ErrorContains(t, err, "config: temporal.address: ", addr)
	}
	for _, addr := range []string{"127.0.0.1:7233", "localhost:7233", "temporal:7233", "temporal.example.com", "[::1]:7233", "[fe80::1%eth0]:7233",
		"dns:///temporal:7233", "dns:127.0.0.1:7233", "passthrough:///temporal:7233", "unix:///run/temporal.sock", "unix-abstract:temporal"} {
		cfg, err := Load([]string{"--temporal-address", addr}, nil, &bytes.Buffer{})
		require.NoError(t, err, addr)
		opts, err := ClientOptions(cfg, nil, slog.New(slog.DiscardHandler))
		require.NoError(t, err, addr)
		require.Equal(t, addr, opts.HostPort)
	}
	profile := filepath.Join(t.TempDir(), "temporal.toml")
	require.NoError(t, os.WriteFile(profile, []byte("[profile.default]\naddress = \"http://temporal.example.com:7233\"\n"), 0o600))
	env := []string{"TEMPORAL_CONFIG_FILE=" + profile}
	cfg, err := Load(nil, env, &bytes.Buffer{})
	require.NoError(t, err)
	_, err = ClientOptions(cfg, env, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "the address of Temporal's config profile: want host:port")
}

// A task queue with spaces around it (an env file's) is refused, as a
// worker id is: it would name another queue. (Found by a review.)
func TestLoad_task_queue_with_spaces_around_it_is_refused(t *testing.T) {
	_, err := Load(nil, []string{"TEMPORAL_TASK_QUEUE=tmbridge "}, &bytes.Buffer{})
	require.ErrorContains(t, err, `config: temporal.task_queue: must not begin or end with spaces, got "tmbridge "`)
}

// Temporal's own variables set empty are as if unset, as the bridge's are:
// envconfig took TEMPORAL_NAMESPACE= as the namespace "" (then "default",
// not the profile's), TEMPORAL_ADDRESS= as no address (then
// localhost:7233), and an empty TLS path as TLS on. (Found by a review.)
func TestTemporalOptions_empty_variables_are_as_if_unset(t *testing.T) {
	toml := filepath.Join(t.TempDir(), "temporal.toml")
	require.NoError(t, os.WriteFile(toml, []byte("[profile.default]\naddress = \"temporal.internal:7233\"\nnamespace = \"prod\"\n"), 0o600))
	for _, extra := range [][]string{nil, {"TEMPORAL_ADDRESS=", "TEMPORAL_NAMESPACE=", "TEMPORAL_TLS_SERVER_CA_CERT_PATH=", "TEMPORAL_TLS="}} {
		env := append([]string{"TEMPORAL_CONFIG_FILE=" + toml}, extra...)
		cfg, err := Load(nil, env, &bytes.Buffer{})
		require.NoError(t, err)
		opts, err := ClientOptions(cfg, env, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.Equal(t, "temporal.internal:7233", opts.HostPort, extra)
		require.Equal(t, "prod", opts.Namespace, extra)
		require.Nil(t, opts.ConnectionOptions.TLS, extra)
	}
}

// A section of the file left empty (its keys commented out) and a key
// left empty are as if unset, as an empty environment variable is: the
// defaults stay. Before, `temporal:` alone wiped every temporal default,
// and errors named keys the user never wrote. (Found by a review.)
func TestLoad_empty_keys_in_the_file_keep_the_defaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--config=" + writeFile(t, "temporal:\n#  address: temporal.internal:7233\nworker_id:\npoll_interval:\n")}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	def, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, def.Temporal, cfg.Temporal)
	require.Equal(t, def.WorkerID, cfg.WorkerID)
	require.Equal(t, def.PollInterval, cfg.PollInterval)
}

// A value YAML reads as a number but written otherwise than in plain
// decimal keeps its text in a string key: api_key: 0123 is "0123", not
// "83". A number key refuses what is not a whole decimal number, and a
// fraction where a whole number goes, as the environment does. Before,
// the key 0123 was sent as 83, and max_runs: 2.5 ran 2. (Found by a
// review.)
func TestLoad_values_keep_what_was_written(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]string{
		"0123": "0123", "0x1F": "0x1F", "1e5": "1e5", "1_000": "1_000", "12345678901234567890123": "12345678901234567890123",
		"True": "True", "true": "true", "42": "42", "-7": "-7", "1.50": "1.50", "1.5": "1.5",
	} {
		cfg, err := Load([]string{"--config=" + writeFile(t, "api_key: "+text+"\nworker_id: "+text+"\n")}, nil, &bytes.Buffer{})
		require.NoError(t, err, text)
		require.Equal(t, want, cfg.APIKey.Reveal(), text)
		require.Equal(t, want, cfg.WorkerID, text)
	}
	for _, body := range []string{"max_runs: 2.5\n", "max_in_flight: 0x10\n", "max_runs: 1e400\n", "type_defaults: { retry: { maximum_attempts: 1.5 } }\n"} {
		_, err := Load([]string{"--config=" + writeFile(t, body)}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, "want a whole number", body)
	}
	cfg, err := Load([]string{"--config=" + writeFile(t, "max_runs: 010\nmax_in_flight: \"7\"\ntask_type_ids: [1, 2]\n")}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 10, cfg.MaxRuns, "in decimal, not octal")
	require.Equal(t, 7, cfg.MaxInFlight)
	require.Equal(t, []string{"1", "2"}, cfg.TaskTypeIDs)
}

// A list written as one string is trimmed inside types too, as
// task_types is: " KeyError" never matched an error type. (Found by a
// review.)
func TestLoad_lists_written_as_one_string_are_trimmed(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--config=" + writeFile(t, "type_defaults:\n  retry:\n    non_retryable_error_types: \"ValueError, KeyError,\"\n")}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"ValueError", "KeyError"}, cfg.TypeDefaults.Retry.NonRetryableErrorTypes)
}

// A type option written as 0 is refused, with what to write: 0 means
// "not set" there (the default, or type_defaults'), not Temporal's
// "unlimited" or "no timeout". Before, maximum_attempts: 0 ran 3 attempts,
// over a type_defaults of 5. A step's params are data, not options.
// (Found by a review.)
func TestLoad_type_options_written_as_zero_are_refused(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		"type_defaults: { retry: { maximum_attempts: 5 } }\ntypes:\n  example.echo: { retry: { maximum_attempts: 0 } }\n": "config: types.example.echo.retry.maximum_attempts: 0 is not a count of attempts here: write -1 for unlimited",
		"type_defaults: { heartbeat_timeout: 0s }\n":                                                        "config: type_defaults.heartbeat_timeout: 0 is not \"no heartbeat timeout\" here",
		"types:\n  x:\n    steps:\n      - { name: a, handler: example.echo, start_to_close_timeout: 0 }\n": "config: types.x.steps[0].start_to_close_timeout: 0 is not \"no timeout\" here",
	} {
		_, err := Load([]string{"--config=" + writeFile(t, body)}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, want, body)
	}
	_, err := Load([]string{"--config=" + writeFile(t, "types:\n  x:\n    steps:\n      - { name: a, handler: example.echo, params: { maximum_attempts: 0, heartbeat_timeout: 0 } }\n")}, nil, &bytes.Buffer{})
	require.NoError(t, err)
}

// An exec command written as one string is refused, without showing it
// (an argument may be a token). Before, it ran as a program named by the
// whole string, and its error quoted it. (Found by a review.)
func TestLoad_exec_command_as_one_string_is_refused(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"--config=" + writeFile(t, "types:\n  my.job:\n    exec: { command: \"python3 handler.py --token SECRETXYZ\" }\n")}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: types.my.job.exec.command: want a list, the program then each argument ([python3, handler.py]), got one string")
	require.NotContains(t, err.Error(), "SECRETXYZ")
}

// The file cannot name another config file: `config:` in it was dropped
// without a word, while every other unknown key is refused. (Found by a
// review.)
func TestLoad_config_key_in_the_file_is_refused(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"--config=" + writeFile(t, "config: other.yaml\n")}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: a config file cannot name another one")
}

// task_types naming a type this bridge cannot run is a config error (exit
// 78), known before any connection. Before, it was found after
// TaskManager's health check, and the bridge exited 1: systemd restarted
// it every 10 s for ever. (Found by a review.)
func TestRun_task_types_without_a_handler_exit_78(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	var out, errb bytes.Buffer
	code := run([]string{"--task-types=my.custom.task", "--api-url=http://127.0.0.1:1/api", "--temporal-address=127.0.0.1:1"}, nil, &out, &errb, reg)
	require.Equal(t, ExitConfig, code, errb.String())
	require.Contains(t, errb.String(), `task_types: \"my.custom.task\" has no handler or route in this bridge`)
}

// A key pasted where its file's path goes is not shown in the error: not
// the TaskManager key in api_key_file, not a private key in
// TEMPORAL_TLS_CLIENT_KEY_PATH, nor a short flag's argument. Before,
// each was printed in full. (Found by a review.)
func TestLoad_a_key_pasted_where_a_path_goes_is_not_shown(t *testing.T) {
	t.Parallel()
	for _, in := range [][2][]string{
		{{"--api-key-file=tm_live_s3cr3tT0ken"}, nil},
		{nil, {"TASKMANAGER_API_KEY_FILE=tm_live_s3cr3tT0ken"}},
		{{"-ks3cr3tT0ken"}, nil},
	} {
		_, err := Load(in[0], in[1], &bytes.Buffer{})
		require.Error(t, err, in)
		require.NotContains(t, err.Error(), "s3cr3t", in)
	}
	_, err := Load([]string{"--api-key-file=tm_live_s3cr3tT0ken"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: api_key_file: cannot read the file it names: no such file or directory (its value is not shown")

	pem := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOLtBzMiajWx6ikRAySbPMkuDjj83KIvurWcQ61BlgCD\n-----END PRIVATE KEY-----"
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	_, err = ClientOptions(cfg, []string{"TEMPORAL_TLS_CLIENT_KEY_PATH=" + pem, "TEMPORAL_TLS_CLIENT_CERT_PATH=/etc/hostname"}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "<TEMPORAL_TLS_CLIENT_KEY_PATH: 118 bytes that look like a key or certificate, not a path: use TEMPORAL_TLS_CLIENT_KEY_DATA")
	require.NotContains(t, err.Error(), "MC4CAQAw")
}

// What the bridge would take silently is refused: TEMPORAL_TLS=yes (TLS
// off, as envconfig reads it), a TEMPORAL_CONFIG_FILE that is not there;
// a typo in temporal.toml is warned of. (Found by a review.)
func TestTemporalOptions_refuse_what_envconfig_ignores(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	toml := filepath.Join(t.TempDir(), "temporal.toml")
	require.NoError(t, os.WriteFile(toml, []byte("[profile.default]\naddress = \"127.0.0.1:7233\"\napi_kye = \"x\"\n"), 0o600))
	for env, want := range map[string]string{
		"TEMPORAL_TLS=yes":                          "TEMPORAL_TLS: want true or false (or 1, 0), got",
		"TEMPORAL_TLS_DISABLE_HOST_VERIFICATION=on": "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: want true or false",
		"TEMPORAL_CONFIG_FILE=/nonexistent.toml":    "TEMPORAL_CONFIG_FILE: stat /nonexistent.toml: no such file or directory",
	} {
		_, err := ClientOptions(cfg, []string{env}, slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, want, env)
	}
	// A key temporal.toml's reader does not know is said (a typo, or a
	// tool's own field: not refused).
	var logs bytes.Buffer
	_, err = ClientOptions(cfg, []string{"TEMPORAL_CONFIG_FILE=" + toml}, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	require.Contains(t, logs.String(), "api_kye")
	opts, err := ClientOptions(cfg, []string{"TEMPORAL_TLS=TRUE"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NotNil(t, opts.ConnectionOptions.TLS)
}

// A refusal says what to use instead: the API key is not a flag,
// Temporal's key and TLS are not in the file, types are not in the
// environment, and `tmbridge version` is --version. (Found by a review.)
func TestLoad_refusals_say_what_to_use_instead(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"--api-key=x"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "unknown flag: --api-key (the API key is not a flag")
	_, err = Load([]string{"--config=" + writeFile(t, "temporal:\n  api_key: x\n")}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "config: temporal.api_key: unknown key: Temporal's API key and TLS are set with TEMPORAL_API_KEY")
	require.NotContains(t, err.Error(), ": x")
	cfg, err := Load(nil, []string{"TMBRIDGE_TYPES__EXAMPLE_ECHO__LOCAL=true"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Contains(t, strings.Join(cfg.Warnings, "\n"), "TMBRIDGE_TYPES__EXAMPLE_ECHO__LOCAL names no setting and is ignored (types and type_defaults are set in the config file only)")
	_, err = Load([]string{"version"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "(did you mean tmbridge --version?)")
}

// Values that loaded before the parser kept what was written still load:
// an empty workflow_id_prefix (workflow id = task id: another prefix would
// start a second run of each open task), a one-program exec command,
// whole numbers written 5.0 or 1e1, an empty number, and Temporal config
// files with a tool's own profile fields (warned of, not refused). Flags
// read numbers in decimal, as the file and the environment do. (Found by
// a review of the parser.)
func TestLoad_what_loaded_before_still_loads(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--config=" + writeFile(t, "temporal:\n  workflow_id_prefix:\ntypes:\n  x:\n    exec: { command: /bin/true }\nmax_runs: 5.0\nprogress_rate: 1e1\ntask_type_ids: [1, 2]\nmax_in_flight: \"\"\n")}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Empty(t, cfg.Temporal.WorkflowIDPrefix)
	require.Equal(t, []string{"/bin/true"}, cfg.Types["x"].Exec.Command)
	require.Equal(t, 5, cfg.MaxRuns)
	require.Equal(t, 10, cfg.ProgressRate)
	require.Equal(t, []string{"1", "2"}, cfg.TaskTypeIDs)

	cfg, err = Load([]string{"--max-runs=010"}, []string{"MAX_IN_FLIGHT=010"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 10, cfg.MaxRuns)
	require.Equal(t, 10, cfg.MaxInFlight)
	_, err = Load([]string{"--max-in-flight=0x10"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "want a whole number in decimal")

	toml := filepath.Join(t.TempDir(), "temporal.toml")
	require.NoError(t, os.WriteFile(toml, []byte("[profile.default]\naddress = \"127.0.0.1:7233\"\n\n[profile.cloud]\naddress = \"x.tmprl.cloud:7233\"\ncolor = \"red\"\n"), 0o600))
	var logs bytes.Buffer
	opts, err := ClientOptions(cfg, []string{"TEMPORAL_CONFIG_FILE=" + toml}, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7233", opts.HostPort)
	require.Contains(t, logs.String(), "profile.cloud.color")
}

// A key pasted base64-encoded where a path goes is not shown either, nor
// a flag's value with three dashes; a short key is not hunted for in
// words of the message. (Found by a review.)
func TestLoad_more_keys_pasted_where_they_do_not_go_are_not_shown(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, nil, &bytes.Buffer{})
	require.NoError(t, err)
	b64 := "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1DNENBUUF3QlFZREsyVndCQ0lFSU9MdEJ6TWlhald4Nmlr"
	_, err = ClientOptions(cfg, []string{"TEMPORAL_TLS_CLIENT_KEY_PATH=" + b64, "TEMPORAL_TLS_CLIENT_CERT_PATH=/etc/hostname"}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "LS0tLS1CRUdJTi")
	_, err = ClientOptions(cfg, []string{"TEMPORAL_TLS_CLIENT_KEY_PATH=/nonexistent/client.key", "TEMPORAL_TLS_CLIENT_CERT_PATH=/etc/hostname"}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "/nonexistent/client.key", "a path is shown")
	_, err = Load([]string{"---api-key=s3cr3tT0ken"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "bad flag syntax: ---api-key")
	require.NotContains(t, err.Error(), "s3cr3t")
	_, err = Load([]string{"--api_key=s3cr3tT0ken"}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "the API key is not a flag")
	require.NotContains(t, err.Error(), "s3cr3t")
}

// A config file that is not a map of keys (the API key file given as -c)
// is refused without quoting it: yaml's own error showed its first
// characters. An empty or null file is no config. (Found by a review.)
func TestLoad_config_file_that_is_not_a_map_is_refused_unquoted(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"key": "Zq8xK2mP9wLs4vN7\n", "list": "- Zq8xK2mP9wLs4vN7\n"} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		_, err := Load([]string{"-c", p}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, "the file is not a YAML map of keys", name)
		require.NotContains(t, err.Error(), "Zq8x", name)
	}
	for name, body := range map[string]string{"empty": "", "null": "~\n", "comment": "# nothing yet\n"} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		_, err := Load([]string{"-c", p}, nil, &bytes.Buffer{})
		require.NoError(t, err, name)
	}
}

// An http handler's header that net/http would refuse on every request (a
// name with a space, a value with a line end, from the file or from env)
// is a config error naming it, its value unshown. (Found by a review.)
func TestLoad_http_header_net_http_refuses_is_a_config_error(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_TOKEN_CRLF", "Bearer s3cr3t-token\r")
	for headers, want := range map[string]string{
		`headers: {"Bad Header": v}`:                                  `types.x.y.http.headers: "Bad Header" is not a valid header name`,
		`headers: {X-Ok: "s3cr3t-a\nb"}`:                              `types.x.y.http.headers: X-Ok: the value holds a character a header may not`,
		`headers_from_env: {Authorization: TMBRIDGE_TEST_TOKEN_CRLF}`: `types.x.y.http.headers_from_env: Authorization: env var TMBRIDGE_TEST_TOKEN_CRLF holds a character a header may not`,
	} {
		file := writeFile(t, "types:\n  x.y:\n    http:\n      url: http://h/x\n      "+headers+"\n")
		_, err := Load([]string{"-c", file}, nil, &bytes.Buffer{})
		require.ErrorContains(t, err, want)
		require.NotContains(t, err.Error(), "s3cr3t")
	}
}
