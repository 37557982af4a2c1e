package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agnivade/levenshtein"
	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/internal/valid"
	"github.com/prismq/tmbridge/workflows"
)

// Config is everything the bridge is told. Load fills it from defaults, a
// YAML file, environment variables and flags, in that order of precedence.
// Each field's comment names its key, flag and env var.
type Config struct {
	// api_url, --api-url, TASKMANAGER_API_URL: TaskManager API base URL.
	APIURL string `koanf:"api_url"`
	// api_key, TASKMANAGER_API_KEY: sent as X-API-Key. Prefer the env var
	// or api_key_file; it is never logged.
	APIKey Secret `koanf:"api_key"`
	// api_key_file, --api-key-file, TASKMANAGER_API_KEY_FILE: file holding the API key.
	APIKeyFile string `koanf:"api_key_file"`
	// api_timeout, --api-timeout: bound on each TaskManager call.
	APITimeout time.Duration `koanf:"api_timeout"`
	// worker_id, --worker-id, WORKER_ID: the id tasks are claimed with.
	// Keep it stable across restarts (the default is from the host name).
	WorkerID string `koanf:"worker_id"`
	// task_type_ids, --task-type-ids, TASK_TYPE_IDS: type ids to serve.
	TaskTypeIDs []string `koanf:"task_type_ids"`
	// task_types, --task-types, TASK_TYPES: type names to serve (resolved
	// one by one). Default, with no ids either: every type with a handler
	// or a configured route.
	TaskTypes []string `koanf:"task_types"`
	// poll_interval, --poll-interval, POLL_INTERVAL: wait after a type came
	// up empty (plain numbers are seconds).
	PollInterval time.Duration `koanf:"poll_interval"`
	// max_runs, --max-runs, MAX_RUNS: stop claiming after this many tasks,
	// wait for them, exit. 0: unlimited.
	MaxRuns int `koanf:"max_runs"`
	// max_in_flight, --max-in-flight, MAX_IN_FLIGHT: most claimed tasks
	// unfinished at once. Default: temporal.max_concurrent_activities.
	MaxInFlight int `koanf:"max_in_flight"`
	// claim_timeout, --claim-timeout, TASK_CLAIM_TIMEOUT: TaskManager's
	// claim timeout. A claim older than half of it may have been handed
	// out again (to this very worker id), so its outcome is posted only
	// after reading the task.
	ClaimTimeout time.Duration `koanf:"claim_timeout"`
	// claim_sort_by, --claim-sort-by: created_at, priority, id or attempts.
	ClaimSortBy string `koanf:"claim_sort_by"`
	// claim_sort_order, --claim-sort-order: ASC or DESC.
	ClaimSortOrder string `koanf:"claim_sort_order"`
	// debug, --debug, DEBUG: debug logging.
	Debug bool `koanf:"debug"`
	// log_format, --log-format, LOG_FORMAT: auto (text on a terminal,
	// JSON otherwise), text or json.
	LogFormat string `koanf:"log_format"`
	// shutdown_grace, --shutdown-grace: how long a stop waits for running
	// handlers before handing them back to Temporal.
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
	// metrics_addr, --metrics-addr, METRICS_ADDR: serve Prometheus metrics
	// on this address (e.g. 127.0.0.1:9464). Empty: off.
	MetricsAddr string `koanf:"metrics_addr"`
	// temporal: the Temporal side. Connection settings (TLS, API key,
	// profiles) come from Temporal's own env vars and config file.
	Temporal TemporalConfig `koanf:"temporal"`
	// type_defaults: options every type starts from.
	TypeDefaults workflows.TypeOptions `koanf:"type_defaults"`
	// types: per-type options and routes, by task type name.
	Types map[string]TypeConfig `koanf:"types"`

	// Warnings are doubts Load had about settings it accepted (a
	// TMBRIDGE_ variable that names no setting); Main logs them.
	Warnings []string `koanf:"-"`
}

// TemporalConfig is the Temporal side of Config.
type TemporalConfig struct {
	// address, --temporal-address, TEMPORAL_ADDRESS: host:port.
	Address string `koanf:"address"`
	// namespace, --temporal-namespace, TEMPORAL_NAMESPACE.
	Namespace string `koanf:"namespace"`
	// task_queue, --task-queue, TEMPORAL_TASK_QUEUE: the bridge's queue.
	TaskQueue string `koanf:"task_queue"`
	// workflow_id_prefix, --workflow-id-prefix: workflow id = prefix + task id.
	WorkflowIDPrefix string `koanf:"workflow_id_prefix"`
	// max_concurrent_activities, --max-concurrent-activities: handlers run
	// at once by this bridge's worker.
	MaxConcurrentActivities int `koanf:"max_concurrent_activities"`
}

// TypeConfig configures one task type: its workflow options and, for types
// without a Go handler, a route (another task queue, steps, a child
// workflow) or an external handler (exec, http).
type TypeConfig struct {
	workflows.TypeOptions `koanf:",squash"`
	// Exec runs a command as the handler.
	Exec *activities.ExecConfig `koanf:"exec"`
	// HTTP posts to a URL as the handler.
	HTTP *activities.HTTPConfig `koanf:"http"`
}

// Secret is a string that never shows in logs, errors or JSON.
type Secret string

// String returns "[redacted]" (or "" when empty).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps the secret out of JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, s.String()), nil }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// ErrHelp is returned by Load when --help was asked; the usage is written.
var ErrHelp = pflag.ErrHelp

// delim separates nested koanf keys; type names contain dots.
const delim = "::"

// option documents one setting: key, flag, env vars, default, help.
type option struct {
	key, flag, short string
	env              []string
	def              any
	help             string
}

func options() []option {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return []option{
		{key: "config", flag: "config", short: "c", env: []string{"TMBRIDGE_CONFIG"}, def: "", help: "YAML config file"},
		{key: "api_url", flag: "api-url", env: []string{"TASKMANAGER_API_URL"}, def: "http://localhost:8000/api", help: "TaskManager API base URL"},
		{key: "api_key", env: []string{"TASKMANAGER_API_KEY"}, def: "", help: "TaskManager API key (env or file only, never a flag)"},
		{key: "api_key_file", flag: "api-key-file", env: []string{"TASKMANAGER_API_KEY_FILE"}, def: "", help: "file holding the TaskManager API key"},
		{key: "api_timeout", flag: "api-timeout", env: []string{"TASKMANAGER_API_TIMEOUT"}, def: 30 * time.Second, help: "timeout of each TaskManager call"},
		{key: "worker_id", flag: "worker-id", env: []string{"WORKER_ID"}, def: "tmbridge-" + host, help: "worker id tasks are claimed with"},
		{key: "task_type_ids", flag: "task-type-ids", env: []string{"TASK_TYPE_IDS"}, def: []string{}, help: "comma-separated task type ids to serve"},
		{key: "task_types", flag: "task-types", env: []string{"TASK_TYPES"}, def: []string{}, help: "comma-separated task type names to serve (default: every type with a handler or route)"},
		{key: "poll_interval", flag: "poll-interval", env: []string{"POLL_INTERVAL"}, def: 10 * time.Second, help: "wait after a type came up empty (plain numbers are seconds)"},
		{key: "max_runs", flag: "max-runs", env: []string{"MAX_RUNS"}, def: 0, help: "stop claiming after this many tasks, wait for them, exit (0: unlimited)"},
		{key: "max_in_flight", flag: "max-in-flight", env: []string{"MAX_IN_FLIGHT"}, def: 0, help: "most claimed tasks unfinished at once (0: max-concurrent-activities)"},
		{key: "claim_timeout", flag: "claim-timeout", env: []string{"TASK_CLAIM_TIMEOUT"}, def: 300 * time.Second, help: "TaskManager's claim timeout (its TASK_CLAIM_TIMEOUT): a report of a claim older than half of it reads the task first"},
		{key: "claim_sort_by", flag: "claim-sort-by", env: []string{"CLAIM_SORT_BY"}, def: "created_at", help: "claim order: created_at, priority, id or attempts"},
		{key: "claim_sort_order", flag: "claim-sort-order", env: []string{"CLAIM_SORT_ORDER"}, def: "ASC", help: "claim order: ASC or DESC"},
		{key: "debug", flag: "debug", env: []string{"DEBUG"}, def: false, help: "debug logging"},
		{key: "log_format", flag: "log-format", env: []string{"LOG_FORMAT"}, def: "auto", help: "auto (text on a terminal, else json), text or json"},
		{key: "shutdown_grace", flag: "shutdown-grace", env: []string{"SHUTDOWN_GRACE"}, def: 30 * time.Second, help: "on stop, wait this long for running handlers"},
		{key: "metrics_addr", flag: "metrics-addr", env: []string{"METRICS_ADDR"}, def: "", help: "serve Prometheus metrics on this address (empty: off)"},
		{key: "temporal::address", flag: "temporal-address", env: []string{"TEMPORAL_ADDRESS"}, def: "", help: "Temporal host:port (default: Temporal's env/config file, else localhost:7233)"},
		{key: "temporal::namespace", flag: "temporal-namespace", env: []string{"TEMPORAL_NAMESPACE"}, def: "", help: "Temporal namespace (default: Temporal's env/config file, else default)"},
		{key: "temporal::task_queue", flag: "task-queue", env: []string{"TEMPORAL_TASK_QUEUE"}, def: "tmbridge", help: "the bridge's Temporal task queue"},
		{key: "temporal::workflow_id_prefix", flag: "workflow-id-prefix", env: []string{"WORKFLOW_ID_PREFIX"}, def: "taskmanager-task-", help: "workflow id = prefix + task id"},
		{key: "temporal::max_concurrent_activities", flag: "max-concurrent-activities", env: []string{"MAX_CONCURRENT_ACTIVITIES"}, def: 100, help: "handlers this bridge runs at once"},
	}
}

// FlagSet returns the command's flags, documented with env vars and defaults.
func FlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	for _, o := range options() {
		if o.flag == "" {
			continue
		}
		help := fmt.Sprintf("%s (env %s)", o.help, strings.Join(o.env, ", "))
		switch d := o.def.(type) {
		case string:
			fs.StringP(o.flag, o.short, d, help)
		case int:
			fs.Int(o.flag, d, help)
		case bool:
			fs.Bool(o.flag, d, help)
		case time.Duration:
			fs.String(o.flag, d.String(), help)
		case []string:
			fs.StringSlice(o.flag, d, help)
		}
	}
	return fs
}

// Load reads the config: defaults < YAML file (--config / TMBRIDGE_CONFIG)
// < environment < flags. It validates the result and names the key of the
// first thing wrong. On --help it writes the usage to out and returns ErrHelp.
func Load(args, environ []string, out io.Writer) (Config, error) {
	opts := options()
	fs := FlagSet("tmbridge")
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "tmbridge runs PrismQ TaskManager tasks as Temporal workflows.\n\nUsage:\n  tmbridge [flags]\n\nFlags:\n%s\n", fs.FlagUsages())
		fmt.Fprint(out, "Environment only: TASKMANAGER_API_KEY; Temporal's TEMPORAL_* variables (TLS, API key, profile).\nPer-type options: see the config file's types: section in the README.\n")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}

	k := koanf.New(delim)
	defaults := map[string]any{}
	envKeys := map[string]string{}
	flagKeys := map[string]string{}
	for _, o := range opts {
		defaults[o.key] = o.def
		for _, e := range o.env {
			envKeys[e] = o.key
		}
		// Every option also as TMBRIDGE_<KEY>, e.g. TMBRIDGE_TEMPORAL__TASK_QUEUE;
		// other TMBRIDGE_ variables are not the bridge's config and are ignored.
		if o.key != "config" {
			envKeys["TMBRIDGE_"+strings.ToUpper(strings.ReplaceAll(o.key, delim, "__"))] = o.key
		}
		if o.flag != "" {
			flagKeys[o.flag] = o.key
		}
	}
	warnings := unknownEnv(environ, envKeys)
	envProvider := env.Provider(delim, env.Opt{
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			return envKeys[name], value // "" (ignored) for any other variable
		},
	})
	if err := k.Load(confmap.Provider(defaults, delim), nil); err != nil {
		return Config{}, err
	}
	envOnly := koanf.New(delim)
	if err := envOnly.Load(envProvider, nil); err != nil {
		return Config{}, err
	}
	path := envOnly.String("config")
	if f := fs.Lookup("config"); f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := k.Merge(envOnly); err != nil {
		return Config{}, err
	}
	if err := k.Load(posflag.ProviderWithFlag(fs, delim, k, func(f *pflag.Flag) (string, any) {
		if !f.Changed {
			return "", nil
		}
		return flagKeys[f.Name], posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return Config{}, err
	}
	k.Delete("config")

	cfg, err := decode(k)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.finish(); err != nil {
		return Config{}, err
	}
	cfg.Warnings = warnings
	return cfg, nil
}

// toolEnv are TMBRIDGE_ variables of the project's tools, not settings.
var toolEnv = []string{"TMBRIDGE_TEMPORAL_CLI"}

// unknownEnv warns of TMBRIDGE_ variables that name no setting, as a YAML
// typo is an error: TMBRIDGE_POLL_INTERVALL would otherwise do nothing.
func unknownEnv(environ []string, envKeys map[string]string) []string {
	var known []string
	for name := range envKeys {
		if strings.HasPrefix(name, "TMBRIDGE_") {
			known = append(known, name)
		}
	}
	slices.Sort(known)
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "TMBRIDGE_") || envKeys[name] != "" || slices.Contains(toolEnv, name) {
			continue
		}
		msg := fmt.Sprintf("environment: %s names no setting and is ignored", name)
		if near := closest(name, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		out = append(out, msg)
	}
	return out
}

// closest returns the candidate nearest to s in edit distance, if near.
func closest(s string, candidates []string) string {
	best, bestDist := "", 4 // at most 3 edits away
	for _, c := range candidates {
		if d := levenshtein.ComputeDistance(s, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// decode unmarshals k strictly: an unknown key (a typo) is an error.
func decode(k *koanf.Koanf) (Config, error) {
	var cfg Config
	conf := func(out any) koanf.UnmarshalConf {
		return koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				secondsHook, mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(",")),
			WeaklyTypedInput: true, ErrorUnused: true, Squash: true, TagName: "koanf", Result: out,
		}}
	}
	types := k.Cut("types")
	defs := k.Cut("type_defaults")
	k.Delete("types")
	if err := k.UnmarshalWithConf("", &cfg, conf(&cfg)); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := defs.UnmarshalWithConf("", &cfg.TypeDefaults, conf(&cfg.TypeDefaults)); err != nil {
		return cfg, fmt.Errorf("config: type_defaults: %w", err)
	}
	cfg.Types = map[string]TypeConfig{}
	for _, name := range topKeys(types) {
		merged := koanf.New(delim)
		_ = merged.Merge(defs)
		_ = merged.Merge(types.Cut(name))
		var tc TypeConfig
		if err := merged.UnmarshalWithConf("", &tc, conf(&tc)); err != nil {
			return cfg, fmt.Errorf("config: types: %s: %w", name, err)
		}
		cfg.Types[name] = tc
	}
	return cfg, nil
}

func topKeys(k *koanf.Koanf) []string {
	var names []string
	for name := range k.Raw() {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// secondsHook reads a plain number as seconds where a duration is wanted,
// as the reference worker's POLL_INTERVAL=10 does.
func secondsHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	switch v := data.(type) {
	case int:
		return time.Duration(v) * time.Second, nil
	case int64:
		return time.Duration(v) * time.Second, nil
	case float64:
		return time.Duration(v * float64(time.Second)), nil
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			return time.Duration(f * float64(time.Second)), nil
		}
	}
	return data, nil
}

// finish reads the key file, fills derived defaults and validates.
func (c *Config) finish() error {
	c.TaskTypeIDs = compact(c.TaskTypeIDs)
	c.TaskTypes = compact(c.TaskTypes)
	if c.APIKeyFile != "" {
		key, err := readKeyFile(c.APIKeyFile)
		if err != nil {
			return fmt.Errorf("config: api_key_file: %w", err)
		}
		c.APIKey = key
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = c.Temporal.MaxConcurrentActivities
	}
	c.ClaimSortOrder = strings.ToUpper(c.ClaimSortOrder)
	return c.Validate()
}

// maxKeyFile bounds what is read of api_key_file: a key is short, so a
// bigger file is the wrong one (or /dev/zero).
const maxKeyFile = 64 << 10

func readKeyFile(path string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxKeyFile {
		return "", fmt.Errorf("%s is larger than %d KiB: not a key file", path, maxKeyFile>>10)
	}
	return Secret(strings.TrimSpace(string(b))), nil
}

func compact(s []string) []string {
	out := s[:0]
	for _, v := range s {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Validate reports every invalid setting, each naming its key.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, key, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
		}
	}
	add := func(err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %w", err))
		}
	}
	u, err := url.Parse(c.APIURL)
	check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "api_url", "want an http(s) URL, got %q", taskmanager.RedactURL(c.APIURL))
	add(valid.Range("api_timeout", c.APITimeout, 100*time.Millisecond, 10*time.Minute))
	check(strings.TrimSpace(c.WorkerID) != "", "worker_id", "must not be empty")
	add(valid.Range("poll_interval", c.PollInterval, 10*time.Millisecond, time.Hour))
	add(valid.Range("max_runs", c.MaxRuns, 0, math.MaxInt32))
	add(valid.Range("max_in_flight", c.MaxInFlight, 1, 100_000))
	add(valid.Range("claim_timeout", c.ClaimTimeout, time.Second, 7*valid.Day))
	check(slices.Contains([]string{"created_at", "priority", "id", "attempts"}, c.ClaimSortBy), "claim_sort_by", "want created_at, priority, id or attempts, got %q", c.ClaimSortBy)
	check(c.ClaimSortOrder == "ASC" || c.ClaimSortOrder == "DESC", "claim_sort_order", "want ASC or DESC, got %q", c.ClaimSortOrder)
	check(slices.Contains([]string{"auto", "text", "json"}, c.LogFormat), "log_format", "want auto, text or json, got %q", c.LogFormat)
	add(valid.Range("shutdown_grace", c.ShutdownGrace, 0, time.Hour))
	check(c.Temporal.TaskQueue != "", "temporal.task_queue", "must not be empty")
	add(valid.Range("temporal.max_concurrent_activities", c.Temporal.MaxConcurrentActivities, 1, 10_000))
	for _, id := range c.TaskTypeIDs {
		n, err := strconv.Atoi(id)
		check(err == nil && n > 0, "task_type_ids", "%q is not a positive integer", id)
	}
	if err := c.TypeDefaults.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: type_defaults: %w", err))
	}
	for _, name := range sortedKeys(c.Types) {
		if err := c.Types[name].validate(); err != nil {
			errs = append(errs, fmt.Errorf("config: types: %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (t TypeConfig) validate() error {
	errs := []error{t.TypeOptions.Validate()}
	routes := 0
	for _, set := range []bool{t.Exec != nil, t.HTTP != nil, len(t.Steps) > 0, t.Workflow != ""} {
		if set {
			routes++
		}
	}
	if routes > 1 {
		errs = append(errs, errors.New("set one of exec, http, steps and workflow"))
	}
	if t.Exec != nil {
		errs = append(errs, t.Exec.Validate())
	}
	if t.HTTP != nil {
		errs = append(errs, t.HTTP.Validate())
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
