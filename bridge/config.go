package bridge

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/agnivade/levenshtein"
	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/resolver"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/valid"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// Config is everything the bridge is told. Load fills it from defaults, a
// YAML file, environment variables and flags, in that order of precedence.
//
// Each setting's key, flag, env vars, default and meaning are declared
// once, in options() (per-type keys: typeOptions() in configdoc.go); Load,
// tmbridge --help and the README's Configuration tables come from there.
// The comments here say only what a field holds.
type Config struct {
	APIURL     string        `koanf:"api_url"`      // TaskManager API base URL
	APIKey     Secret        `koanf:"api_key"`      // sent as X-API-Key; never logged
	APIKeyFile string        `koanf:"api_key_file"` // file Load reads APIKey from
	APITimeout time.Duration `koanf:"api_timeout"`  // bound on each TaskManager call
	// WorkerID is the id tasks are claimed with; stable across restarts.
	WorkerID string `koanf:"worker_id"`
	// TaskTypeIDs and TaskTypes are the types to serve; with neither, every
	// type with a handler or a configured route.
	TaskTypeIDs []string `koanf:"task_type_ids"`
	TaskTypes   []string `koanf:"task_types"`
	// PollInterval is how often (±20% jitter) an idle bridge lists pending
	// tasks, one request for every type (with the listing failing, each
	// type claims once per interval); the sweep runs at most this often.
	PollInterval time.Duration `koanf:"poll_interval"`
	MaxRuns      int           `koanf:"max_runs"` // tasks to claim before exiting; 0: unlimited
	// MaxInFlight bounds claimed tasks unfinished at once (Load fills 0
	// with Temporal.MaxConcurrentActivities).
	MaxInFlight int `koanf:"max_in_flight"`
	// ClaimTimeout is TaskManager's claim timeout: the outcome of a claim
	// older than half of it is posted only after reading the task.
	ClaimTimeout   time.Duration `koanf:"claim_timeout"`
	ClaimSortBy    string        `koanf:"claim_sort_by"`    // order tasks are claimed in
	ClaimSortOrder string        `koanf:"claim_sort_order"` // ASC or DESC (Load upper-cases it)
	Debug          bool          `koanf:"debug"`            // debug logs, the Temporal SDK's too
	LogFormat      string        `koanf:"log_format"`       // auto, text or json
	// ShutdownGrace is how long a stop waits for running handlers before
	// handing them back to Temporal.
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
	MetricsAddr   string        `koanf:"metrics_addr"` // Prometheus metrics address; empty: off
	// ProgressRate bounds the progress calls to TaskManager of all the
	// bridge's handlers together, per second (each task's 100 aside); 0:
	// handlers make no progress calls.
	ProgressRate int `koanf:"progress_rate"`
	// Temporal is the Temporal side. Connection settings (TLS, API key,
	// profiles) come from Temporal's own env vars and config file.
	Temporal TemporalConfig `koanf:"temporal"`
	// TypeDefaults are the options every type starts from.
	TypeDefaults workflows.TypeOptions `koanf:"type_defaults"`
	// Types are per-type options and routes, by task type name. Load
	// merges each over TypeDefaults; in a Config built in Go, a listed
	// type's options are used as they are (TypeDefaults serve the types
	// not listed).
	Types map[string]TypeConfig `koanf:"types"`

	// Warnings are doubts Load had about settings it accepted (a
	// TMBRIDGE_ variable that names no setting); Main logs them.
	Warnings []string `koanf:"-"`
}

// TemporalConfig is the Temporal side of Config (keys temporal.*; see
// options()).
type TemporalConfig struct {
	Address   string `koanf:"address"`    // host:port; empty: Temporal's env or config file
	Namespace string `koanf:"namespace"`  // empty: Temporal's env or config file
	TaskQueue string `koanf:"task_queue"` // the bridge's own queue
	// WorkflowIDPrefix + task id is a task's workflow id.
	WorkflowIDPrefix        string `koanf:"workflow_id_prefix"`
	MaxConcurrentActivities int    `koanf:"max_concurrent_activities"` // handlers run at once
	WorkflowCacheSize       int    `koanf:"workflow_cache_size"`       // runs kept in memory between their workflow tasks
	// SearchAttributes sets TaskType and TaskID on each run where the
	// namespace has them; false sets none (each costs Temporal's
	// visibility work per run).
	SearchAttributes bool `koanf:"search_attributes"`
	// GRPCCompression is how requests to Temporal are compressed: gzip
	// (the SDK's default) or none.
	GRPCCompression string `koanf:"grpc_compression"`
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

// MarshalJSON encodes c as one object: exec and http beside the
// TypeOptions' keys. (Without it, TypeOptions' own JSON methods, which
// write durations as "2m0s", would be promoted and drop exec and http.)
func (c TypeConfig) MarshalJSON() ([]byte, error) {
	raw, err := json.Marshal(c.TypeOptions)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	for key, v := range map[string]any{"exec": c.Exec, "http": c.HTTP} {
		if !reflect.ValueOf(v).IsNil() {
			if obj[key], err = json.Marshal(v); err != nil {
				return nil, err
			}
		}
	}
	return json.Marshal(obj)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *TypeConfig) UnmarshalJSON(b []byte) error {
	var routes struct {
		Exec *activities.ExecConfig `json:"exec"`
		HTTP *activities.HTTPConfig `json:"http"`
	}
	if err := json.Unmarshal(b, &routes); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &c.TypeOptions); err != nil {
		return err
	}
	c.Exec, c.HTTP = routes.Exec, routes.HTTP
	return nil
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

// Format keeps the secret out of every fmt verb, %#v and %x included
// (fmt.Sprintf("%#v", cfg) shows it as "[redacted]").
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
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

// option declares one setting: the one place its key, flag, env vars,
// default and meaning are written. Load, --help and the README's table
// (configTable) all come from options().
type option struct {
	// key is the koanf key, nested with delim.
	key string
	// docKey is the key as documented when it differs (types.<name>).
	docKey string
	// cliOnly: not a config file key (config, the file itself).
	cliOnly     bool
	flag, short string
	env         []string
	// def is the default; its type is the flag's. nil: a section of the
	// config file (type_defaults, types), with neither default nor env var.
	def any
	// doc is the default as documentation shows it, when def alone would
	// mislead (a host name, a fallback to another setting).
	doc string
	// help says what the setting means; `code` is in backticks, which
	// --help drops.
	help string
	// emptyOK: an empty environment variable sets it empty; for any
	// other setting it is as if unset (`- TEMPORAL_ADDRESS=${X}` in a
	// compose file, X unset, keeps the config file's address).
	emptyOK bool
}

func options() []option {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return []option{
		{key: "config", cliOnly: true, flag: "config", short: "c", env: []string{"TMBRIDGE_CONFIG"}, def: "",
			help: "YAML config file"},
		{key: "api_url", flag: "api-url", env: []string{"TASKMANAGER_API_URL"}, def: "http://localhost:8000/api",
			help: "TaskManager API base URL (its `/api` is kept)"},
		{key: "api_key", env: []string{"TASKMANAGER_API_KEY"}, def: "",
			help: "TaskManager API key, sent as `X-API-Key`; from the env, the config file or `api_key_file`, never a flag; never logged"},
		{key: "api_key_file", flag: "api-key-file", env: []string{"TASKMANAGER_API_KEY_FILE"}, def: "",
			help: "file holding the TaskManager API key (not with `api_key`)"},
		{key: "api_timeout", flag: "api-timeout", env: []string{"TASKMANAGER_API_TIMEOUT"}, def: 30 * time.Second,
			help: "bound on each TaskManager call"},
		{key: "worker_id", flag: "worker-id", env: []string{"WORKER_ID"}, def: "tmbridge-" + host, doc: "`tmbridge-<hostname>`",
			help: "id tasks are claimed with; keep it stable across restarts"},
		{key: "task_type_ids", flag: "task-type-ids", env: []string{"TASK_TYPE_IDS"}, def: []string{},
			help: "comma-separated task type ids to serve"},
		{key: "task_types", flag: "task-types", env: []string{"TASK_TYPES"}, def: []string{}, doc: "every type with a handler or route",
			help: "comma-separated task type names to serve (resolved one by one)"},
		{key: "poll_interval", flag: "poll-interval", env: []string{"POLL_INTERVAL"}, def: 10 * time.Second,
			help: "how often (±20% jitter) an idle bridge looks for pending tasks of every type (one request)"},
		{key: "max_runs", flag: "max-runs", env: []string{"MAX_RUNS"}, def: 0,
			help: "stop claiming after this many tasks, wait for them, exit 0 (`0`: unlimited)"},
		{key: "max_in_flight", flag: "max-in-flight", env: []string{"MAX_IN_FLIGHT"}, def: 0, doc: "`temporal.max_concurrent_activities`",
			help: "most claimed tasks unfinished at once"},
		{key: "claim_timeout", flag: "claim-timeout", env: []string{"TASK_CLAIM_TIMEOUT"}, def: 300 * time.Second,
			help: "TaskManager's claim timeout (its `TASK_CLAIM_TIMEOUT`): the outcome of a claim older than half of it is posted only after reading the task, since the claim may have been handed out again (even to this worker id), and a run that starts later than that reads the task before its handler; ages compare the bridge's clock with Temporal's: keep them synced"},
		{key: "claim_sort_by", flag: "claim-sort-by", env: []string{"CLAIM_SORT_BY"}, def: "created_at",
			help: "claim order: `created_at`, `priority`, `id` or `attempts`"},
		{key: "claim_sort_order", flag: "claim-sort-order", env: []string{"CLAIM_SORT_ORDER"}, def: "ASC",
			help: "claim order: `ASC` or `DESC`"},
		{key: "debug", flag: "debug", env: []string{"DEBUG"}, def: false,
			help: "debug logs (also the Temporal SDK's)"},
		{key: "log_format", flag: "log-format", env: []string{"LOG_FORMAT"}, def: "auto",
			help: "`auto` (colour text on a terminal, JSON otherwise), `text` or `json`"},
		{key: "shutdown_grace", flag: "shutdown-grace", env: []string{"SHUTDOWN_GRACE"}, def: 30 * time.Second,
			help: "on stop, time running handlers get to finish before they are handed back to Temporal"},
		{key: "metrics_addr", flag: "metrics-addr", env: []string{"METRICS_ADDR"}, def: "", doc: "off",
			help: "serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. `127.0.0.1:9464`"},
		{key: "progress_rate", flag: "progress-rate", env: []string{"PROGRESS_RATE"}, def: 10,
			help: "at most this many handler progress calls to TaskManager per second, for all tasks together (each task posts at most every 2 s; an update over the budget is skipped, and the task's next one goes when there is budget; a handler's first 100 always goes, a later one is an update like any); `0`: handlers' progress goes to Temporal only, as heartbeat details (a multi-step task's steps done are still posted, one per step)"},
		{key: "temporal::address", flag: "temporal-address", env: []string{"TEMPORAL_ADDRESS"}, def: "", doc: "Temporal's env or config file, else `localhost:7233`",
			help: "Temporal frontend host:port"},
		{key: "temporal::namespace", flag: "temporal-namespace", env: []string{"TEMPORAL_NAMESPACE"}, def: "", doc: "Temporal's env or config file, else `default`",
			help: "Temporal namespace"},
		{key: "temporal::task_queue", flag: "task-queue", env: []string{"TEMPORAL_TASK_QUEUE"}, def: "tmbridge",
			help: "the bridge's Temporal task queue"},
		{key: "temporal::workflow_id_prefix", flag: "workflow-id-prefix", env: []string{"WORKFLOW_ID_PREFIX"}, def: "taskmanager-task-", emptyOK: true,
			help: "workflow id = prefix + task id"},
		{key: "temporal::max_concurrent_activities", flag: "max-concurrent-activities", env: []string{"MAX_CONCURRENT_ACTIVITIES"}, def: 100,
			help: "handlers this bridge runs at once"},
		{key: "temporal::workflow_cache_size", flag: "workflow-cache-size", env: []string{"TEMPORAL_WORKFLOW_CACHE_SIZE"}, def: 200,
			help: "runs the worker keeps in memory between their workflow tasks (the SDK's sticky cache, for the whole process); a run not kept is replayed from its history when it goes on: a few events for a task, so memory stays bounded with thousands in flight (set by Main; a program calling New sets it with worker.SetStickyWorkflowCacheSize)"},
		{key: "temporal::search_attributes", flag: "search-attributes", env: []string{"TEMPORAL_SEARCH_ATTRIBUTES"}, def: true,
			help: "set the `TaskType` and `TaskID` search attributes on each run where the namespace has them (`tmbridge setup`); `false` sets none: runs are then found by workflow id, and each start costs Temporal's visibility less (on the dev server, short tasks ran at 0.85–1.02 × plain Temporal's speed without them, 0.83–1.04 × with them: medians of seven runs)"},
		{key: "temporal::grpc_compression", flag: "grpc-compression", env: []string{"TEMPORAL_GRPC_COMPRESSION"}, def: "gzip",
			help: "compression of requests to Temporal: `gzip` (the SDK's default) or `none`; with Temporal on the same host or network, `none` spares both sides compressing small messages (set by Main, check and setup; a program calling New dials its own client)"},
		{key: "type_defaults",
			help: "options every type starts from (per-type options, below)"},
		{key: "types", docKey: "types.<name>",
			help: "per-type options, steps and routes, by task type name; merged over `type_defaults`"},
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
		help := plain(o.help)
		if o.doc != "" && reflect.ValueOf(o.def).IsZero() { // pflag shows no zero default
			help += "; default: " + plain(o.doc)
		}
		help += " (env " + strings.Join(o.env, ", ") + ")"
		switch d := o.def.(type) {
		case string:
			fs.StringP(o.flag, o.short, d, help)
		case int:
			v := decimalInt(d)
			fs.Var(&v, o.flag, help)
		case bool:
			fs.Bool(o.flag, d, help)
		case time.Duration:
			fs.String(o.flag, shortDuration(d), help)
		case []string:
			fs.StringSlice(o.flag, d, help)
		default:
			panic(fmt.Sprintf("option %s: no flag for a default of type %T", o.key, o.def))
		}
	}
	return fs
}

// Load reads the config: defaults < YAML file (--config / TMBRIDGE_CONFIG)
// < environment < flags. It validates the result and reports every thing
// wrong, each with its key. On --help it writes the usage to out and
// returns ErrHelp.
func Load(args, environ []string, out io.Writer) (Config, error) {
	return load(bridgeCommand, args, environ, out)
}

// DefaultConfig returns the config with every setting at its default (as
// Load gives with no flag, env var or file; worker_id is the host's
// name), for programs that build their Config in Go and set what they
// need: APIKey, APIURL, Temporal.TaskQueue, Types…
func DefaultConfig() Config {
	c, err := load(bridgeCommand, nil, nil, io.Discard)
	if err != nil {
		panic("bridge: the defaults do not load: " + err.Error()) // TestDefaultConfig
	}
	return c
}

// load is Load for cmd, whose --help it writes.
func load(cmd command, args, environ []string, out io.Writer) (Config, error) {
	opts := options()
	fs := FlagSet(cmd.name)
	fs.SetOutput(out)
	fs.Usage = func() {
		if cmd == bridgeCommand {
			fmt.Fprintf(out, "%s\n\nUsage:\n%s", cmd.about, bridgeUsage)
		} else {
			fmt.Fprintf(out, "%s\n\nUsage:\n  %s [flags]\n", cmd.about, cmd.name)
		}
		fmt.Fprintf(out, "\nFlags:\n%s\n", fs.FlagUsages())
		fmt.Fprint(out, "No flag (env or config file): TASKMANAGER_API_KEY (api_key); Temporal's TEMPORAL_* variables (TLS, API key, profile) are env only.\n"+
			"Every setting above is also TMBRIDGE_<KEY> (nested with __, e.g. TMBRIDGE_TEMPORAL__TASK_QUEUE); type_defaults and types only in the config file.\n"+
			"Durations: Go syntax (90s, 2m) or plain seconds (10).\n\n")
		if cmd == bridgeCommand {
			writeTypeOptionsHelp(out)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, flagError(err)
	}
	if fs.NArg() > 0 {
		// A mistyped subcommand would run the bridge: refused.
		msg := fmt.Sprintf("unexpected argument %q: %s takes flags only", fs.Arg(0), cmd.name)
		if near := closest(fs.Arg(0), []string{"check", "setup"}); cmd == bridgeCommand && near != "" {
			msg += fmt.Sprintf(" (did you mean %s %s?)", cmd.name, near)
		} else if strings.TrimLeft(fs.Arg(0), "-") == "version" {
			msg += " (did you mean tmbridge --version?)"
		}
		return Config{}, errors.New(msg)
	}

	k := koanf.New(delim)
	defaults := map[string]any{}
	envKeys := map[string]string{}
	flagKeys := map[string]string{}
	keepsEmpty := map[string]bool{}
	for _, o := range opts {
		if o.def == nil {
			continue // a section of the file: type_defaults, types
		}
		defaults[o.key] = o.def
		for _, e := range o.env {
			envKeys[e] = o.key
		}
		// Every option also as TMBRIDGE_<KEY>, e.g. TMBRIDGE_TEMPORAL__TASK_QUEUE;
		// other TMBRIDGE_ variables are not the bridge's config and are ignored.
		if o.key != "config" {
			envKeys["TMBRIDGE_"+strings.ToUpper(strings.ReplaceAll(o.key, delim, "__"))] = o.key
		}
		if o.emptyOK {
			keepsEmpty[o.key] = true
		}
		if o.flag != "" {
			flagKeys[o.flag] = o.key
		}
	}
	// A setting given both ways (TEMPORAL_TASK_QUEUE and
	// TMBRIDGE_TEMPORAL__TASK_QUEUE) takes the TMBRIDGE_ one, whatever
	// their order in the environment: those load last.
	ordered := slices.Clone(environ)
	tmbridgeLast := func(v string) int {
		if strings.HasPrefix(v, "TMBRIDGE_") {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(ordered, func(a, b string) int { return cmp.Compare(tmbridgeLast(a), tmbridgeLast(b)) })
	envProvider := env.Provider(delim, env.Opt{
		EnvironFunc: func() []string { return ordered },
		TransformFunc: func(name, value string) (string, any) {
			if value == "" && !keepsEmpty[envKeys[name]] {
				return "", nil // as if unset (WORKER_ID= in an env file)
			}
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
		fileK := koanf.New(delim)
		if err := fileK.Load(file.Provider(path), configFile{keepEmpty: keepsEmpty}); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
		if fileK.Exists("config") {
			return Config{}, fmt.Errorf("config file %s: config: a config file cannot name another one (the file is --config or TMBRIDGE_CONFIG)", path)
		}
		if err := k.Merge(fileK); err != nil {
			return Config{}, err
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

	cfg, derr := decode(k)
	if err := withoutEchoes(derr, cfg.finish()); err != nil {
		return Config{}, err
	}
	cfg.Warnings = unknownEnv(environ, envKeys, cfg.handlerEnv())
	return cfg, nil
}

// flagError is a flag parse error that shows no secret (pflag quotes the
// whole argument of an unknown shorthand: -kSECRET), and says where the
// API keys go when one was given as a flag.
func flagError(err error) error {
	if errors.Is(err, ErrHelp) {
		return err
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "unknown shorthand flag: "); ok {
		if i := strings.Index(rest, " in -"); i >= 0 {
			msg = "unknown shorthand flag: " + rest[:i]
		}
	}
	if rest, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		name, _, _ := strings.Cut(rest, "=") // ---api-key=SECRET
		msg = "bad flag syntax: " + name
	}
	flag := strings.ReplaceAll(msg, "_", "-") // --api_key as --api-key
	switch {
	case strings.Contains(flag, "unknown flag: --api-key") && !strings.Contains(flag, "--api-key-file"), strings.Contains(flag, "bad flag syntax: ---api-key"):
		msg += " (the API key is not a flag, which other users could read in ps: set TASKMANAGER_API_KEY, api_key in the config file, or --api-key-file)"
	case strings.Contains(flag, "unknown flag: --temporal-api-key"), strings.Contains(flag, "unknown flag: --temporal-tls"):
		msg += " (Temporal's API key and TLS are set with TEMPORAL_API_KEY and TEMPORAL_TLS_* variables, or a temporal.toml profile)"
	}
	return errors.New(msg)
}

// toolEnv are TMBRIDGE_ variables of the project's tools, not settings.
var toolEnv = []string{"TMBRIDGE_TEMPORAL_CLI", "TMBRIDGE_UPDATE_README", "TMBRIDGE_UPDATE_HISTORY", "TMBRIDGE_SIM_CHILD", "TMBRIDGE_SIM_OBSERVER"}

// unknownEnv warns of TMBRIDGE_ variables that name no setting, as a YAML
// typo is an error: TMBRIDGE_POLL_INTERVALL would otherwise do nothing.
// Variables the config hands to handlers (used) are not warned of.
func unknownEnv(environ []string, envKeys map[string]string, used []string) []string {
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
		if !strings.HasPrefix(name, "TMBRIDGE_") || envKeys[name] != "" || slices.Contains(toolEnv, name) || slices.Contains(used, name) {
			continue
		}
		msg := fmt.Sprintf("environment: %s names no setting and is ignored", name)
		if near := closest(name, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		} else if strings.HasPrefix(name, "TMBRIDGE_TYPES__") || strings.HasPrefix(name, "TMBRIDGE_TYPE_DEFAULTS__") {
			msg += " (types and type_defaults are set in the config file only)"
		}
		out = append(out, msg)
	}
	return out
}

// handlerEnv names the variables the config hands to handlers: http
// headers_from_env and the names exec env passes through.
func (c Config) handlerEnv() []string {
	var names []string
	for _, t := range c.Types {
		if t.HTTP != nil {
			for _, name := range t.HTTP.HeadersFromEnv {
				names = append(names, name)
			}
		}
		if t.Exec != nil {
			for _, e := range t.Exec.Env {
				name, _, _ := strings.Cut(e, "=")
				names = append(names, name)
			}
		}
	}
	return names
}

// closest returns the candidate nearest to s in edit distance, if near:
// at most 3 edits, and at most half of s (so a short key is not "near"
// everything).
func closest(s string, candidates []string) string {
	best, bestDist := "", min(3, len(s)/2)+1
	for _, c := range candidates {
		if d := levenshtein.ComputeDistance(strings.ToLower(s), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// keyError is one thing wrong with the config, at its full key path
// (types.example.echo.retry.maximum_attempts, types.x.steps[1].name).
type keyError struct{ path, msg string }

func (e keyError) Error() string {
	if e.path == "" {
		return "config: " + e.msg
	}
	return "config: " + e.path + ": " + e.msg
}

// withoutEchoes joins the decode errors and the validation errors, so that
// every mistake is reported at once, less the validation errors of keys
// that did not decode (their value is a zero stand-in, not the user's).
func withoutEchoes(decodeErr, validateErr error) error {
	var failed []string
	for _, e := range leafErrors(decodeErr) {
		if ke, ok := e.(keyError); ok {
			failed = append(failed, ke.path)
			if ke.path == "temporal.max_concurrent_activities" {
				failed = append(failed, "max_in_flight") // its default
			}
		}
	}
	errs := leafErrors(decodeErr)
	for _, e := range leafErrors(validateErr) {
		echo := false
		for _, path := range failed {
			if strings.HasPrefix(e.Error(), "config: "+path+":") || strings.HasPrefix(e.Error(), "config: "+path+".") {
				echo = true
			}
		}
		if !echo {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// decode unmarshals k strictly: every unknown key (a typo) and every
// value of the wrong type is an error. It reports all of them at once,
// each with its full path, the file's top level, type_defaults and every
// type alike.
func decode(k *koanf.Koanf) (Config, error) {
	var cfg Config
	raw := k.Raw()
	var typesRaw, defsRaw any
	for key, v := range raw { // keys are lower case (unknownKeys refuses others)
		switch key {
		case "types":
			typesRaw = v
			delete(raw, key)
		case "type_defaults":
			defsRaw = v
			delete(raw, key)
		}
	}

	errs := decodeAt("", raw, &cfg)
	var written []keyError
	checkTypeKeys("type_defaults", defsRaw, &written)
	checkTypeKeys("types", typesRaw, &written)
	for _, e := range written {
		errs = append(errs, e)
	}
	defErrs := decodeAt("type_defaults", defsRaw, &cfg.TypeDefaults)
	errs = append(errs, defErrs...)
	types, ok := asMap(typesRaw)
	if !ok && typesRaw != nil {
		errs = append(errs, keyError{"types", "want a map of task type names to their options, got " + describeValue(typesRaw)})
	}
	defs, _ := asMap(defsRaw)
	defs = maps.Clone(defs)
	for key := range defs { // exec and http are a type's own (an error in type_defaults)
		if key == "exec" || key == "http" {
			delete(defs, key)
		}
	}
	cfg.Types = map[string]TypeConfig{}
	for _, name := range sortedKeys(types) {
		path := "types." + name
		// A type's own keys are checked alone, so that what is wrong in
		// type_defaults is reported once, as type_defaults.<key>, and not
		// again for every type merged over it.
		ownErrs := decodeAt(path, types[name], new(TypeConfig))
		errs = append(errs, ownErrs...)
		var tc TypeConfig
		mergedErrs := decodeAt(path, mergeOver(defs, types[name]), &tc)
		if len(ownErrs) == 0 && len(defErrs) == 0 {
			errs = append(errs, mergedErrs...) // none, unless the merge itself went wrong
		}
		cfg.Types[name] = tc
	}
	return cfg, errors.Join(errs...)
}

// decodeAt decodes data into out (a pointer to a struct), reporting its
// unknown keys and wrongly typed values under path, sorted by key.
func decodeAt(path string, data, out any) []error {
	var errs []keyError
	unknownKeys(path, data, reflect.TypeOf(out).Elem(), &errs)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.ComposeDecodeHookFunc(durationHook, wholeNumberHook, boolTextHook, listHook),
		WeaklyTypedInput: true, Squash: true, TagName: "koanf", Result: out,
	})
	if err != nil {
		panic(err) // the config above is wrong
	}
	decodeErrors(path, dec.Decode(data), &errs)
	slices.SortStableFunc(errs, func(a, b keyError) int { return strings.Compare(a.path, b.path) })
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return list
}

// unknownKeys reports each key of data that names no field of t (by its
// koanf tag), with the nearest valid key at that path. A key in another
// case (API_URL) is refused too: mapstructure would match it, but beside
// the default of the lower-case key, which koanf keeps apart, the default
// would win, and the key be ignored without a word.
func unknownKeys(path string, data any, t reflect.Type, errs *[]keyError) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := asMap(data)
		if !ok {
			return // a value of the wrong type: mapstructure says so
		}
		fields := koanfFields(t)
		for _, key := range sortedKeys(m) {
			i := slices.IndexFunc(fields, func(f koanfField) bool { return f.key == key })
			if i < 0 {
				msg := unknownKeyMessage(key, t, fields)
				if j := slices.IndexFunc(fields, func(f koanfField) bool { return strings.EqualFold(f.key, key) }); j >= 0 {
					msg = fmt.Sprintf("unknown key: keys are written in lower case (%s)", fields[j].key)
				}
				*errs = append(*errs, keyError{joinPath(path, key), msg})
				continue
			}
			unknownKeys(joinPath(path, key), m[key], fields[i].typ, errs)
		}
	case reflect.Slice, reflect.Array:
		switch v := reflect.ValueOf(data); v.Kind() {
		case reflect.Slice, reflect.Array:
			for i := range v.Len() {
				unknownKeys(fmt.Sprintf("%s[%d]", path, i), v.Index(i).Interface(), t.Elem(), errs)
			}
		case reflect.Map:
			unknownKeys(path+"[0]", data, t.Elem(), errs) // decoded as a list of one
		}
	case reflect.Map:
		m, _ := asMap(data)
		for _, key := range sortedKeys(m) {
			unknownKeys(joinPath(path, key), m[key], t.Elem(), errs)
		}
	}
}

var (
	typeOptionsType = reflect.TypeFor[workflows.TypeOptions]()
	typeConfigType  = reflect.TypeFor[TypeConfig]()
)

func unknownKeyMessage(key string, t reflect.Type, fields []koanfField) string {
	if t == typeOptionsType && slices.ContainsFunc(koanfFields(typeConfigType), func(f koanfField) bool { return f.key == key }) {
		return fmt.Sprintf("unknown key: %s is set per type, under types.<name>, not in type_defaults", key)
	}
	if t == reflect.TypeFor[TemporalConfig]() && (key == "api_key" || strings.HasPrefix(key, "tls")) {
		return "unknown key: Temporal's API key and TLS are set with TEMPORAL_API_KEY and TEMPORAL_TLS_* variables, or a temporal.toml profile, not in this file"
	}
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	if near := closest(key, keys); near != "" {
		return fmt.Sprintf("unknown key (did you mean %s?)", near)
	}
	if len(keys) <= 12 {
		return "unknown key (valid here: " + strings.Join(keys, ", ") + ")"
	}
	return "unknown key"
}

// koanfField is a key of a config struct and the type of its value.
type koanfField struct {
	key string
	typ reflect.Type
}

// koanfFields returns the keys of struct type t as mapstructure decodes
// them: by koanf tag (else the field name), with squashed and embedded
// structs' keys in line; "-" fields are no key.
func koanfFields(t reflect.Type) []koanfField {
	var out []koanfField
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case !f.IsExported() || name == "-":
		case ft.Kind() == reflect.Struct && (f.Anonymous || slices.Contains(strings.Split(opts, ","), "squash")):
			out = append(out, koanfFields(ft)...)
		default:
			out = append(out, koanfField{cmp.Or(name, f.Name), f.Type})
		}
	}
	return out
}

// decodeErrors adds mapstructure's errors (a tree of joined
// *mapstructure.DecodeError, each named by its path below path) to errs.
func decodeErrors(path string, err error, errs *[]keyError) {
	if err == nil {
		return
	}
	var de *mapstructure.DecodeError
	switch e := err.(type) {
	case *mapstructure.DecodeError:
		inner := e.Unwrap()
		if _, ok := inner.(interface{ Unwrap() []error }); ok || errors.As(inner, &de) {
			decodeErrors(path, inner, errs) // nested names are full paths already
			return
		}
		at := joinPath(path, e.Name())
		*errs = append(*errs, keyError{at, decodeMessage(inner, secretPath(at))})
	case interface{ Unwrap() []error }:
		for _, sub := range e.Unwrap() {
			decodeErrors(path, sub, errs)
		}
	default:
		// Decode wraps several errors in "decoding failed due to …".
		if inner := errors.Unwrap(err); inner != nil {
			if _, ok := inner.(interface{ Unwrap() []error }); ok || errors.As(inner, &de) {
				decodeErrors(path, inner, errs)
				return
			}
		}
		*errs = append(*errs, keyError{path, err.Error()})
	}
}

// decodeMessage says what is wrong with a value in the config's words;
// the value of a secret key is described, never shown.
func decodeMessage(err error, secret bool) string {
	describe := describeValue
	if secret {
		describe = describeSecret
	}
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("want %s, got %s", describeType(pe.Expected.Type()), describe(pe.Value))
	case errors.As(err, &ue):
		return fmt.Sprintf("want %s, got %s", describeType(ue.Expected.Type()), describe(ue.Value))
	}
	msg := err.Error()
	for prefix, want := range map[string]string{
		"expected a map or struct, got ":              describeType(reflect.TypeFor[map[string]any]()),
		"source data must be an array or slice, got ": describeType(reflect.TypeFor[[]any]()),
	} {
		if kind, ok := strings.CutPrefix(msg, prefix); ok {
			return fmt.Sprintf("want %s, got %s", want, describeKind(strings.Trim(kind, `"`)))
		}
	}
	return msg
}

// describeKind names a reflect.Kind's String() as describeValue would.
func describeKind(kind string) string {
	switch {
	case kind == "map":
		return "a map"
	case kind == "slice" || kind == "array":
		return "a list"
	case kind == "bool":
		return "true or false"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	}
	return "a " + kind
}

const durationSyntax = "a duration such as 90s, 2m or 10 (seconds)"

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Duration]() {
		return durationSyntax
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a map of keys to values"
	}
	return t.String()
}

// secretPath reports whether the config key at path may hold a secret
// (an API key, a header's value, a program's environment): its value is
// never shown in an error, which goes to the logs.
func secretPath(path string) bool {
	for _, seg := range strings.FieldsFunc(strings.ToLower(path), func(r rune) bool { return r == '.' || r == '[' }) {
		if seg == "headers" || seg == "env" || strings.Contains(seg, "key") ||
			strings.Contains(seg, "secret") || strings.Contains(seg, "token") || strings.Contains(seg, "password") {
			return true
		}
	}
	return false
}

// describeSecret is describeValue for a secret key's value: its kind only.
func describeSecret(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("a string (%d characters)", len([]rune(s)))
	}
	if v == nil {
		return "nothing"
	}
	return describeKind(reflect.ValueOf(v).Kind().String())
}

// describeValue shows a scalar (shortened) and only the kind of a map or
// list, whose contents could be long or secret.
func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		if r := []rune(v); len(r) > 40 {
			v = string(r[:40]) + "…"
		}
		return strconv.Quote(v)
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(v)
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map:
		return "a map"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return fmt.Sprintf("a %T", v)
}

func joinPath(path, key string) string {
	switch {
	case path == "":
		return key
	case key == "":
		return path
	case strings.HasPrefix(key, "["):
		return path + key
	}
	return path + "." + key
}

// asMap returns data as a map with string keys, if it is a map.
func asMap(data any) (map[string]any, bool) {
	switch m := data.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

// mergeOver returns over merged into base, as koanf merges: maps key by
// key, any other value replaced. Neither is modified.
func mergeOver(base map[string]any, over any) any {
	o, ok := asMap(over)
	if !ok {
		if over == nil && base != nil {
			return base
		}
		return over
	}
	out := make(map[string]any, len(base)+len(o))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range o {
		if b, ok := asMap(out[k]); ok {
			if _, ok := asMap(v); ok {
				v = mergeOver(b, v)
			}
		}
		out[k] = v
	}
	return out
}

// durationHook reads a duration as Go syntax (90s, 2m) or a plain number
// of seconds, as the reference worker's POLL_INTERVAL=10 does.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	seconds := func(f float64) (any, error) {
		if math.IsNaN(f) || math.Abs(f) > float64(math.MaxInt64/int64(time.Second)) {
			return nil, fmt.Errorf("want %s, got %v seconds", durationSyntax, f)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	switch v := data.(type) {
	case int:
		return seconds(float64(v))
	case int64:
		return seconds(float64(v))
	case uint64:
		return seconds(float64(v))
	case float64:
		return seconds(v)
	case string:
		s := strings.TrimSpace(v)
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return seconds(f)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("want %s, got %s", durationSyntax, describeValue(v))
		}
		return d, nil
	}
	return data, nil
}

// finish reads the key file, fills derived defaults and validates.
func (c *Config) finish() error {
	c.TaskTypeIDs = compact(c.TaskTypeIDs)
	c.TaskTypes = compact(c.TaskTypes)
	if c.APIKeyFile != "" {
		if c.APIKey.Reveal() != "" {
			// Each may come from another layer (the file, the env): which
			// one wins would be a guess, and a key rotated through one of
			// them would be ignored without a word.
			return errors.New("config: api_key and api_key_file are both set (TASKMANAGER_API_KEY and TASKMANAGER_API_KEY_FILE, or the config file): set one")
		}
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

// readKeyFile reads the API key from path. Its errors do not show the
// path: the key itself may have been put there (--api-key-file=<key>).
func readKeyFile(path string) (Secret, error) {
	unread := func(err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot read the file it names: %w (its value is not shown, in case it is the key itself: the key goes in TASKMANAGER_API_KEY or api_key)", err)
	}
	if fi, err := os.Stat(path); err != nil {
		return "", unread(err)
	} else if !fi.Mode().IsRegular() {
		return "", errors.New("the file it names is not a regular file (a device or a pipe may never end)")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", unread(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return "", unread(err)
	}
	if len(b) > maxKeyFile {
		return "", fmt.Errorf("the file it names is larger than %d KiB: not a key file", maxKeyFile>>10)
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

// checkTemporalAddress refuses a Temporal address the dial cannot use: a
// URL (http://…), spaces around it, a port that is not 1–65535. A gRPC
// target with a resolver (dns:///host:port, dns:host:port, unix:…) is
// taken as it is, and a host without a port too (gRPC dials 443).
func checkTemporalAddress(key, addr string) error {
	if addr != strings.TrimSpace(addr) || strings.ContainsFunc(addr, unicode.IsControl) {
		return fmt.Errorf("%s: must not begin or end with spaces or hold control characters, got %q", key, addr)
	}
	if u, err := url.Parse(addr); err == nil && u.Scheme != "" {
		switch {
		case u.Scheme == "http" || u.Scheme == "https":
			return fmt.Errorf("%s: want host:port (\"temporal.example.com:7233\"), not a URL, got %q", key, taskmanager.RedactURL(addr))
		case resolver.Get(u.Scheme) != nil:
			return nil // a gRPC target
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil && strings.Contains(err.Error(), "missing port") {
		host, port, err = addr, "443", nil
	}
	n, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || host == "" || perr != nil || n == 0 {
		return fmt.Errorf("%s: want host:port with a port of 1–65535 (\"temporal.example.com:7233\"), got %q", key, taskmanager.RedactURL(addr))
	}
	return nil
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
	// TaskManager trims the worker id it stores: one with spaces around it
	// (an env file with CRLF line ends) would never match its own claims.
	check(c.WorkerID == strings.TrimSpace(c.WorkerID) && !strings.ContainsFunc(c.WorkerID, unicode.IsControl), "worker_id", "must not begin or end with spaces or hold control characters, got %q", c.WorkerID)
	// Sent as a header: a control character (an env file with CRLF line
	// ends) would fail every call. The key itself is never shown.
	check(!strings.ContainsFunc(string(c.APIKey), unicode.IsControl), "api_key", "must not hold control characters (a line end from an env file with CRLF line ends?)")
	if c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		if err == nil {
			_, err = net.LookupPort("tcp", port) // a number of 0–65535, or a service name
		}
		check(err == nil, "metrics_addr", "want host:port or :port with a port of 0–65535 (\":9464\"), got %q", c.MetricsAddr)
	}
	if c.Temporal.Address != "" {
		add(checkTemporalAddress("temporal.address", c.Temporal.Address))
	}
	add(valid.Range("poll_interval", c.PollInterval, 10*time.Millisecond, time.Hour))
	add(valid.Range("max_runs", c.MaxRuns, 0, math.MaxInt32))
	add(valid.Range("max_in_flight", c.MaxInFlight, 1, 100_000))
	add(valid.Range("claim_timeout", c.ClaimTimeout, time.Second, 7*valid.Day))
	check(slices.Contains([]string{"created_at", "priority", "id", "attempts"}, c.ClaimSortBy), "claim_sort_by", "want created_at, priority, id or attempts, got %q", c.ClaimSortBy)
	check(c.ClaimSortOrder == "ASC" || c.ClaimSortOrder == "DESC", "claim_sort_order", "want ASC or DESC, got %q", c.ClaimSortOrder)
	check(slices.Contains([]string{"auto", "text", "json"}, c.LogFormat), "log_format", "want auto, text or json, got %q", c.LogFormat)
	add(valid.Range("shutdown_grace", c.ShutdownGrace, 0, time.Hour))
	add(valid.Range("progress_rate", c.ProgressRate, 0, 10_000))
	check(c.Temporal.TaskQueue != "", "temporal.task_queue", "must not be empty")
	// As worker_id: spaces from an env file would name another queue.
	check(c.Temporal.TaskQueue == strings.TrimSpace(c.Temporal.TaskQueue), "temporal.task_queue", "must not begin or end with spaces, got %q", c.Temporal.TaskQueue)
	// It is quoted in visibility queries (recovery, the closer).
	check(quotable(c.Temporal.TaskQueue), "temporal.task_queue", "must not hold quotes, backslashes or control characters, got %q", c.Temporal.TaskQueue)
	add(valid.Range("temporal.max_concurrent_activities", c.Temporal.MaxConcurrentActivities, 1, 10_000))
	add(valid.Range("temporal.workflow_cache_size", c.Temporal.WorkflowCacheSize, 1, 100_000))
	check(c.Temporal.GRPCCompression == "gzip" || c.Temporal.GRPCCompression == "none", "temporal.grpc_compression", "want gzip or none, got %q", c.Temporal.GRPCCompression)
	for _, id := range c.TaskTypeIDs {
		n, err := strconv.Atoi(id)
		check(err == nil && n > 0 && strconv.Itoa(n) == id, "task_type_ids", "%q is not a positive integer as TaskManager writes it (1, 2, 3 …)", id)
	}
	check(len(c.TaskTypes) == 0 || len(c.TaskTypeIDs) == 0, "task_type_ids", "set task_types or task_type_ids, not both")
	// Each type holds type_defaults merged in: what is wrong there is
	// reported once, as type_defaults', not again for every type.
	inherited := map[string]bool{}
	for _, err := range leafErrors(c.TypeDefaults.Validate()) {
		inherited[err.Error()] = true
		errs = append(errs, fmt.Errorf("config: type_defaults.%w", err))
	}
	for _, name := range sortedKeys(c.Types) {
		for _, err := range leafErrors(c.Types[name].validate()) {
			if !inherited[err.Error()] {
				errs = append(errs, fmt.Errorf("config: types.%s.%w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// leafErrors flattens errors.Join's errors, so that each gets its own
// prefix; an error that says more than its parts is kept whole.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var msgs []string
	for _, e := range j.Unwrap() {
		msgs = append(msgs, e.Error())
	}
	if strings.Join(msgs, "\n") != err.Error() {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leafErrors(e)...)
	}
	return out
}

func (t TypeConfig) validate() error {
	errs := []error{t.TypeOptions.Validate()}
	var routes []string
	for key, set := range map[string]bool{"exec": t.Exec != nil, "http": t.HTTP != nil, "steps": len(t.Steps) > 0, "workflow": t.Workflow != ""} {
		if set {
			routes = append(routes, key)
		}
	}
	if slices.Sort(routes); len(routes) > 1 {
		errs = append(errs, fmt.Errorf("%s: set one of exec, http, steps and workflow, not %s", routes[len(routes)-1], strings.Join(routes, " and ")))
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
